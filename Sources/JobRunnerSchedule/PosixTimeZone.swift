/// A POSIX TZ rule (`std offset [dst [offset] [,start[/time],end[/time]]]`), the footer of a
/// TZif file that says how a zone behaves after its last listed transition. Supports the
/// RFC 8536 extensions: hours up to ±167 in rule times, and `<+0530>`-style quoted names.
struct PosixTimeZone: Sendable, Hashable {
    enum DateRule: Sendable, Hashable {
        /// `Jn`: day 1…365, February 29 never counted.
        case julianNoLeap(Int)
        /// `n`: day 0…365, February 29 counted.
        case zeroBasedDay(Int)
        /// `Mm.w.d`: day `d` (0 = Sunday) of week `w` (1…5, 5 = last) of month `m`.
        case monthWeekDay(month: Int, week: Int, weekday: Int)
    }

    struct DaylightRule: Sendable, Hashable {
        var name: String
        var offset: Int
        var start: DateRule
        var startTime: Int
        var end: DateRule
        var endTime: Int
    }

    var standardName: String
    /// Seconds east of UTC (the negation of the POSIX offset, which counts west).
    var standardOffset: Int
    var daylight: DaylightRule?

    init?(_ text: String) {
        var scanner = TextScanner(text)
        guard let stdName = PosixTimeZone.name(&scanner), let stdWest = PosixTimeZone.offset(&scanner, allowHours: 24) else {
            return nil
        }
        standardName = stdName
        standardOffset = -stdWest
        if scanner.isAtEnd {
            daylight = nil
            return
        }
        guard let dstName = PosixTimeZone.name(&scanner) else { return nil }
        var dstOffset = standardOffset + 3600
        if let peek = scanner.peek, peek != UInt8(ascii: ",") {
            guard let west = PosixTimeZone.offset(&scanner, allowHours: 24) else { return nil }
            dstOffset = -west
        }
        var start = DateRule.monthWeekDay(month: 3, week: 2, weekday: 0)
        var startTime = 7200
        var end = DateRule.monthWeekDay(month: 11, week: 1, weekday: 0)
        var endTime = 7200
        if scanner.take(",") {
            guard let s = PosixTimeZone.dateRule(&scanner) else { return nil }
            start = s
            if scanner.take("/") {
                guard let t = PosixTimeZone.offset(&scanner, allowHours: 167) else { return nil }
                startTime = t
            }
            guard scanner.take(","), let e = PosixTimeZone.dateRule(&scanner) else { return nil }
            end = e
            if scanner.take("/") {
                guard let t = PosixTimeZone.offset(&scanner, allowHours: 167) else { return nil }
                endTime = t
            }
        }
        guard scanner.isAtEnd else { return nil }
        daylight = DaylightRule(name: dstName, offset: dstOffset, start: start, startTime: startTime, end: end, endTime: endTime)
    }

    // MARK: - Evaluation

    func localTimeType(at seconds: Int64) -> TimeZoneRules.LocalTimeType {
        guard let daylight else {
            return .init(utcOffset: standardOffset, isDaylightTime: false, abbreviation: standardName)
        }
        if isDaylight(at: seconds, daylight) {
            return .init(utcOffset: daylight.offset, isDaylightTime: true, abbreviation: daylight.name)
        }
        return .init(utcOffset: standardOffset, isDaylightTime: false, abbreviation: standardName)
    }

    /// Daylight time starts and ends in UTC for a given year.
    private func bounds(year: Int, _ daylight: DaylightRule) -> (start: Int64, end: Int64) {
        let start = PosixTimeZone.day(of: daylight.start, year: year) * 86_400 + Int64(daylight.startTime) - Int64(standardOffset)
        let end = PosixTimeZone.day(of: daylight.end, year: year) * 86_400 + Int64(daylight.endTime) - Int64(daylight.offset)
        return (start, end)
    }

    private func isDaylight(at seconds: Int64, _ daylight: DaylightRule) -> Bool {
        // The latest rule event at or before the instant decides; this reads the same for both
        // hemispheres. When an end and the next start coincide (permanent daylight time written
        // as `J1/0,J365/25`), the start wins.
        let year = LocalDateTime(secondsSinceEpoch: seconds + Int64(standardOffset)).year
        var latest: (at: Int64, daylight: Bool)?
        for candidate in (year - 1)...(year + 1) {
            let (start, end) = bounds(year: candidate, daylight)
            for event in [(at: end, daylight: false), (at: start, daylight: true)] where event.at <= seconds {
                if let current = latest, current.at > event.at || (current.at == event.at && current.daylight) {
                    continue
                }
                latest = event
            }
        }
        return latest?.daylight ?? false
    }

    /// The first offset change strictly after an instant.
    func nextTransition(after seconds: Int64) -> TimeZoneRules.Transition? {
        guard let daylight else { return nil }
        let year = LocalDateTime(secondsSinceEpoch: seconds).year
        var instants: [Int64] = []
        for candidate in (year - 1)...(year + 2) {
            let (start, end) = bounds(year: candidate, daylight)
            instants.append(start)
            instants.append(end)
        }
        for instant in instants.sorted() where instant > seconds {
            let before = localTimeType(at: instant - 1).utcOffset
            let after = localTimeType(at: instant).utcOffset
            if before != after {
                return .init(at: instant, offsetBefore: before, offsetAfter: after)
            }
        }
        return nil
    }

    /// Days since the epoch of the local date a rule names in a year.
    static func day(of rule: DateRule, year: Int) -> Int64 {
        let jan1 = days(fromCivil: year, 1, 1)
        switch rule {
        case .julianNoLeap(let n):
            // Day n of a 365-day year: after February, leap years add one.
            let offset = (isLeapYear(year) && n >= 60) ? n : n - 1
            return jan1 + Int64(offset)
        case .zeroBasedDay(let n):
            return jan1 + Int64(n)
        case .monthWeekDay(let month, let week, let weekday):
            let first = days(fromCivil: year, month, 1)
            let firstWeekday = weekdayOf(days: first)
            var day = Int64((weekday - firstWeekday + 7) % 7) + Int64((week - 1) * 7)
            let length = Int64(daysIn(month: month, year: year))
            while day >= length { day -= 7 }
            return first + day
        }
    }

    // MARK: - Parsing

    private static func name(_ scanner: inout TextScanner) -> String? {
        if scanner.take("<") {
            let start = scanner.index
            while let byte = scanner.peek, byte != UInt8(ascii: ">") { scanner.index += 1 }
            let name = String(decoding: scanner.bytes[start..<scanner.index], as: UTF8.self)
            guard scanner.take(">"), !name.isEmpty else { return nil }
            return name
        }
        let name = scanner.letters()
        return name.count >= 3 ? name : nil
    }

    /// `[+-]hh[:mm[:ss]]` in seconds (sign as written).
    private static func offset(_ scanner: inout TextScanner, allowHours: Int) -> Int? {
        var sign = 1
        if scanner.take("-") { sign = -1 } else { _ = scanner.take("+") }
        guard let (hours, count) = scanner.digits(), count <= 3, hours <= allowHours else { return nil }
        var total = hours * 3600
        if scanner.take(":") {
            guard let minutes = scanner.fixedDigits(2), minutes < 60 else { return nil }
            total += minutes * 60
            if scanner.take(":") {
                guard let seconds = scanner.fixedDigits(2), seconds < 60 else { return nil }
                total += seconds
            }
        }
        return sign * total
    }

    private static func dateRule(_ scanner: inout TextScanner) -> DateRule? {
        if scanner.take("J") {
            guard let (n, _) = scanner.digits(), (1...365).contains(n) else { return nil }
            return .julianNoLeap(n)
        }
        if scanner.take("M") {
            guard let (m, _) = scanner.digits(), (1...12).contains(m), scanner.take("."),
                let (w, _) = scanner.digits(), (1...5).contains(w), scanner.take("."),
                let (d, _) = scanner.digits(), (0...6).contains(d)
            else { return nil }
            return .monthWeekDay(month: m, week: w, weekday: d)
        }
        guard let (n, _) = scanner.digits(), (0...365).contains(n) else { return nil }
        return .zeroBasedDay(n)
    }
}
