// MARK: - Parsing

extension CalendarEvent {
    /// The shorthands and the events they stand for.
    public static let shorthands: [String: String] = [
        "minutely": "*-*-* *:*:00",
        "hourly": "*-*-* *:00:00",
        "daily": "*-*-* 00:00:00",
        "monthly": "*-*-01 00:00:00",
        "weekly": "Mon *-*-* 00:00:00",
        "yearly": "*-01-01 00:00:00",
        "annually": "*-01-01 00:00:00",
        "quarterly": "*-01,04,07,10-01 00:00:00",
        "semiannually": "*-01,07-01 00:00:00",
        "semi-annually": "*-01,07-01 00:00:00",
        "biannually": "*-01,07-01 00:00:00",
        "bi-annually": "*-01,07-01 00:00:00",
    ]

    static let weekdayNames = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    /// 2199-12-31T23:59:59Z, the end of the years a calendar event may name (as systemd's), so
    /// an `@` timestamp's normal form is itself a calendar event.
    static let latestEpochSecond: Int64 = 7_258_118_399
    static let weekdayLongNames = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]

    /// Parses a calendar event; a trailing zone name is looked up in `zones`.
    @available(*, noasync, message: "may read the zone database; call from the thread pool")
    public init(parsing raw: String, zones: TimeZoneDatabase = .system) throws(CalendarError) {
        let text = raw.trimmingASCIISpaces()
        guard !text.isEmpty else { throw CalendarError(message: "empty calendar event") }
        var tokens = text.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)

        if tokens.count == 1, tokens[0].hasPrefix("@") {
            guard let seconds = Int64(tokens[0].dropFirst()), seconds >= 0 else {
                if tokens[0].dropFirst().allSatisfy(\.isASCIIDigitCharacter), tokens[0].count > 1 {
                    throw CalendarError(message: "'\(tokens[0])' is out of range (at most @\(Self.latestEpochSecond), the end of year 2199)")
                }
                throw CalendarError(message: "'\(tokens[0])' is not a timestamp (expected @ followed by seconds since the epoch)")
            }
            guard seconds <= Self.latestEpochSecond else {
                throw CalendarError(message: "'\(tokens[0])' is out of range (at most @\(Self.latestEpochSecond), the end of year 2199)")
            }
            self.init(text: text, instant: Timestamp(seconds: seconds))
            return
        }

        // A trailing zone: UTC or an IANA name (anything that is not a date, time or weekday).
        var zone: TimeZoneRules?
        var zoneName: String?
        if tokens.count > 1, let last = tokens.last, Self.looksLikeZone(last) {
            do {
                zone = try zones.zone(named: last)
                zoneName = last
            } catch {
                throw CalendarError(message: "unknown time zone '\(last)'")
            }
            tokens.removeLast()
        }

        if tokens.count == 1, let expansion = Self.shorthands[tokens[0].lowercased()] {
            tokens = expansion.split(separator: " ").map(String.init)
        }

        var weekdays: UInt8 = 0x7f
        var index = 0
        if index < tokens.count, let first = tokens[index].first, first.isLetter {
            weekdays = try Self.parseWeekdays(tokens[index])
            index += 1
        }
        var year = Field(components: nil)
        var month = Field(components: nil)
        var day = Field(components: nil)
        var endOfMonth = false
        var sawDate = false
        if index < tokens.count, !tokens[index].contains(":") {
            (year, month, day, endOfMonth) = try Self.parseDate(tokens[index])
            sawDate = true
            index += 1
        }
        var hour = Field(components: [Component(start: 0, stop: nil, step: 0)])
        var minute = Field(components: [Component(start: 0, stop: nil, step: 0)])
        var second = Field(components: [Component(start: 0, stop: nil, step: 0)])
        if index < tokens.count, tokens[index].contains(":") {
            (hour, minute, second) = try Self.parseTime(tokens[index])
            index += 1
        }
        guard index == tokens.count else {
            throw CalendarError(message: "unexpected '\(tokens[index])' (expected [weekdays] [date] [time] [time zone])")
        }
        if !sawDate && weekdays == 0x7f && index == 0 {
            throw CalendarError(message: "'\(text)' is not a calendar event")
        }
        self.init(text: text, weekdays: weekdays, year: year, month: month, day: day, endOfMonth: endOfMonth,
                  hour: hour, minute: minute, second: second, zone: zone, zoneName: zoneName)
        guard hasAnyMatch() else {
            throw CalendarError(message: "'\(text)' never elapses")
        }
    }

    static func looksLikeZone(_ token: String) -> Bool {
        if token == "UTC" || token == "Z" { return true }
        if token.contains(":") || token.contains("~") || token.contains("*") || token.contains("..") || token.contains(",") { return false }
        if token.first?.isNumber == true { return false }
        if weekdayNames.contains(token.lowercased()) || weekdayLongNames.contains(token.lowercased()) { return false }
        if shorthands[token.lowercased()] != nil { return false }
        return token.contains("/") || token.first?.isUppercase == true
    }

    /// Rejects dates that cannot exist (such as `*-02-30`) in any supported year.
    private func hasAnyMatch() -> Bool {
        var candidateYear = Self.minimumYear
        // Without a year restriction one leap cycle shows every month length; with one, walk
        // the allowed years.
        let lastYear = year.components == nil ? Self.minimumYear + 8 : Self.maximumYear
        while let yearValue = year.next(atOrAfter: candidateYear, maximum: lastYear) {
            for candidateMonth in 1...12 where month.matches(candidateMonth) && dayMask(year: yearValue, month: candidateMonth) != 0 {
                return true
            }
            candidateYear = yearValue + 1
        }
        return false
    }

    // MARK: Pieces

    static func parseWeekdays(_ token: String) throws(CalendarError) -> UInt8 {
        var bits: UInt8 = 0
        var items = token.split(separator: ",", omittingEmptySubsequences: false)
        if items.count > 1, items.last?.isEmpty == true { items.removeLast() }  // a trailing comma is allowed
        for item in items {
            var bounds = item.splitOnDots()
            if bounds.count == 1, item.contains("-") {
                bounds = item.split(separator: "-", omittingEmptySubsequences: false)  // Mon-Fri, the old spelling
            }
            guard bounds.count == 1 || bounds.count == 2, bounds.allSatisfy({ !$0.isEmpty }) else {
                throw CalendarError(message: "'\(item)' is not a weekday or weekday range (e.g. Mon, Mon..Fri)")
            }
            let start = try weekdayIndex(bounds[0])
            let end = bounds.count == 2 ? try weekdayIndex(bounds[1]) : start
            guard start <= end else {
                throw CalendarError(message: "weekday range '\(item)' runs backwards (write e.g. Mon..Fri, or Sat,Sun)")
            }
            for index in start...end { bits |= 1 << UInt8((index + 1) % 7) }  // Monday-first index → Sunday = bit 0
        }
        return bits
    }

    static func weekdayIndex(_ name: Substring) throws(CalendarError) -> Int {
        let lower = name.lowercased()
        if let index = weekdayNames.firstIndex(of: lower) ?? weekdayLongNames.firstIndex(of: lower) { return index }
        throw CalendarError(message: "'\(name)' is not a weekday (Mon, Tue, Wed, Thu, Fri, Sat, Sun)")
    }

    static func parseDate(_ token: String) throws(CalendarError) -> (Field, Field, Field, Bool) {
        let endOfMonth = token.contains("~")
        // Split on '-' (and one '~' before the day).
        var parts: [Substring] = []
        var current = Substring()
        for character in token {
            if character == "-" || character == "~" {
                parts.append(current)
                current = Substring()
            } else {
                current.append(character)
            }
        }
        parts.append(current)
        guard parts.count == 2 || parts.count == 3, token.filter({ $0 == "~" }).count <= 1 else {
            throw CalendarError(message: "'\(token)' is not a date (expected YYYY-MM-DD or MM-DD, with * and ranges)")
        }
        if endOfMonth, !token.hasSuffix("~" + parts.last!) {
            throw CalendarError(message: "'~' must come right before the day in '\(token)'")
        }
        let year: Field
        if parts.count == 3 {
            year = try parseField(parts[0], name: "year", range: minimumYear...maximumYear, twoDigitYear: true)
        } else {
            year = Field(components: nil)
        }
        let month = try parseField(parts[parts.count - 2], name: "month", range: 1...12)
        let day = try parseField(parts[parts.count - 1], name: "day", range: 1...(endOfMonth ? 28 : 31), endOfMonth: endOfMonth)
        if endOfMonth, day.components == nil {
            throw CalendarError(message: "'~' needs a day count after it (e.g. *-02~03 for the third-last day)")
        }
        return (year, month, day, endOfMonth)
    }

    static func parseTime(_ token: String) throws(CalendarError) -> (Field, Field, Field) {
        let parts = token.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2 || parts.count == 3 else {
            throw CalendarError(message: "'\(token)' is not a time (expected HH:MM or HH:MM:SS)")
        }
        let hour = try parseField(parts[0], name: "hour", range: 0...23)
        let minute = try parseField(parts[1], name: "minute", range: 0...59)
        let second: Field
        if parts.count == 3 {
            second = try parseField(parts[2], name: "second", range: 0...59_999_999, fractional: true)
        } else {
            second = Field(components: [Component(start: 0, stop: nil, step: 0)])
        }
        return (hour, minute, second)
    }

    static func parseField(_ text: Substring, name: String, range: ClosedRange<Int>, twoDigitYear: Bool = false,
                           fractional: Bool = false, endOfMonth: Bool = false) throws(CalendarError) -> Field {
        if text == "*" {
            // `*` in the seconds field means every whole second.
            return fractional ? Field(components: [Component(start: 0, stop: nil, step: 1_000_000)]) : Field(components: nil)
        }
        var components: [Component] = []
        for item in text.split(separator: ",", omittingEmptySubsequences: false) {
            var valuePart = item
            var step = 0
            if let slash = item.firstIndex(of: "/") {
                valuePart = item[..<slash]
                let stepText = item[item.index(after: slash)...]
                guard let parsed = number(stepText, fractional: fractional), parsed > 0 else {
                    throw CalendarError(message: "\(name): repetition '/\(stepText)' must be a positive number")
                }
                step = parsed
            }
            let bounds = valuePart.splitOnDots()
            guard bounds.count == 1 || bounds.count == 2 else {
                throw CalendarError(message: "\(name): '\(item)' is not a value, range a..b or repetition a/r")
            }
            var values: [Int] = []
            for bound in bounds {
                guard var value = number(bound, fractional: fractional) else {
                    throw CalendarError(message: "\(name): '\(bound)' is not a number")
                }
                if twoDigitYear, bound.count <= 2 { value += value < 70 ? 2000 : 1900 }
                guard range.contains(value) else {
                    let shown = fractional ? "0–59" : "\(range.lowerBound)–\(range.upperBound)"
                    throw CalendarError(message: "\(name): \(bound) is out of range \(shown)")
                }
                values.append(value)
            }
            let unit = fractional ? 1_000_000 : 1
            var component: Component
            if values.count == 2 {
                guard values[0] <= values[1] else {
                    throw CalendarError(message: "\(name): range '\(valuePart)' runs backwards")
                }
                component = Component(start: values[0], stop: values[1], step: step == 0 ? unit : step)
            } else {
                component = Component(start: values[0], stop: nil, step: step)
            }
            // systemd's rules: a repetition must repeat at least once within its range (or the
            // field), so `55/12` for minutes or `3..3` are rejected as systemd rejects them.
            let span = range.upperBound - range.lowerBound
            guard component.step <= span else {
                throw CalendarError(message: "\(name): repetition '/\(stepText(component.step, fractional))' is longer than the field")
            }
            if let stop = component.stop {
                if component.start + component.step > stop {
                    // systemd 252 reads such a range as its first value, except in the seconds
                    // field, where it rejects it.
                    guard !fractional else {
                        throw CalendarError(message: "\(name): '\(item)' covers less than one repetition")
                    }
                    component = Component(start: component.start, stop: nil, step: 0)
                } else {
                    // Normal form: the range ends on its last repetition.
                    component.stop = stop - (stop - component.start) % component.step
                }
            } else if component.step > 0 {
                let repeats = endOfMonth ? component.start - component.step >= range.lowerBound
                    : component.start + component.step <= range.upperBound
                guard repeats else {
                    throw CalendarError(message: "\(name): '\(item)' never repeats within \(fractional ? "0–59" : "\(range.lowerBound)–\(range.upperBound)")")
                }
            }
            components.append(component)
        }
        return Field(components: components)
    }

    static func stepText(_ step: Int, _ fractional: Bool) -> String {
        guard fractional else { return "\(step)" }
        return step % 1_000_000 == 0 ? "\(step / 1_000_000)" : "\(Double(step) / 1_000_000)"
    }

    /// Digits, or for seconds digits with an optional fraction, as microseconds.
    static func number(_ text: Substring, fractional: Bool) -> Int? {
        var scanner = TextScanner(text)
        guard let (whole, count) = scanner.digits(), count <= 9 else { return nil }
        if !fractional { return scanner.isAtEnd ? whole : nil }
        var micros = whole * 1_000_000
        if scanner.take(".") {
            guard let (fraction, digits) = scanner.digits() else { return nil }
            // systemd rounds to the microsecond.
            var scaled = fraction
            var places = digits
            while places > 7 {
                scaled /= 10
                places -= 1
            }
            if places == 7 {
                scaled = (scaled + 5) / 10
                places = 6
            }
            micros += scaleFraction(scaled, digits: places)
        }
        return scanner.isAtEnd ? micros : nil
    }
}

extension Substring {
    /// Splits on `..`.
    fileprivate func splitOnDots() -> [Substring] {
        var result: [Substring] = []
        var rest = self[...]
        while let range = rest.firstRange(of: "..") {
            result.append(rest[..<range.lowerBound])
            rest = rest[range.upperBound...]
        }
        result.append(rest)
        return result
    }
}

// MARK: - Normal form

extension CalendarEvent {
    static func format(weekdays: UInt8, year: Field, month: Field, day: Field, endOfMonth: Bool, hour: Field, minute: Field,
                       second: Field, zoneName: String?) -> String {
        var text = ""
        if weekdays != 0x7f {
            text += formatWeekdays(weekdays) + " "
        }
        text += formatField(year, width: 4) + "-" + formatField(month, width: 2) + (endOfMonth ? "~" : "-") + formatField(day, width: 2)
        text += " " + formatField(hour, width: 2) + ":" + formatField(minute, width: 2) + ":" + formatSeconds(second)
        if let zoneName { text += " " + zoneName }
        return text
    }

    static func formatWeekdays(_ bits: UInt8) -> String {
        let names = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
        let present = (0..<7).map { bits & (1 << UInt8(($0 + 1) % 7)) != 0 }
        var parts: [String] = []
        var index = 0
        while index < 7 {
            guard present[index] else {
                index += 1
                continue
            }
            var end = index
            while end + 1 < 7, present[end + 1] { end += 1 }
            if end - index >= 2 {
                parts.append(names[index] + ".." + names[end])
            } else {
                for position in index...end { parts.append(names[position]) }
            }
            index = end + 1
        }
        return parts.joined(separator: ",")
    }

    static func formatField(_ field: Field, width: Int) -> String {
        guard let components = field.components else { return "*" }
        return components.map { component in
            var text = pad(component.start, width)
            if let stop = component.stop {
                text += ".." + pad(stop, width)
                if component.step > 1 { text += "/\(component.step)" }
            } else if component.step > 0 {
                text += "/\(component.step)"
            }
            return text
        }.joined(separator: ",")
    }

    static func formatSeconds(_ field: Field) -> String {
        guard let components = field.components else { return "*" }
        if components == [Component(start: 0, stop: nil, step: 1_000_000)] { return "*" }
        func seconds(_ micros: Int) -> String {
            let whole = pad(micros / 1_000_000, 2)
            let fraction = micros % 1_000_000
            return fraction == 0 ? whole : whole + "." + pad(fraction, 6)
        }
        func stepText(_ micros: Int) -> String {
            micros % 1_000_000 == 0 ? "\(micros / 1_000_000)" : "\(micros / 1_000_000)." + pad(micros % 1_000_000, 6)
        }
        return components.map { component in
            var text = seconds(component.start)
            if let stop = component.stop {
                text += ".." + seconds(stop)
                if component.step != 1_000_000 { text += "/" + stepText(component.step) }
            } else if component.step > 0 {
                text += "/" + stepText(component.step)
            }
            return text
        }.joined(separator: ",")
    }

    private static func pad(_ value: Int, _ width: Int) -> String {
        let digits = String(value)
        return digits.count >= width ? digits : String(repeating: "0", count: width - digits.count) + digits
    }
}

extension Character {
    fileprivate var isASCIIDigitCharacter: Bool { isASCII && isNumber }
}
