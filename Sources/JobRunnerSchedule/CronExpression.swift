/// A cron expression: 5 fields (minute hour day-of-month month day-of-week) or 6 with seconds
/// first, in the Vixie/Debian dialect plus the Quartz extensions operators expect.
///
/// Supported: numbers, `*`, `?`, ranges `a-b`, steps `*/n` `a-b/n` `a/n`, lists, month and
/// weekday names (case-insensitive), weekday 7 = Sunday, `L` and `LW` in day-of-month, `nW`
/// (nearest weekday), `dL` (last weekday `d` of the month) and `d#n` (n-th weekday `d`).
/// When both day fields are restricted, a day matches if either does (Vixie cron); when either
/// starts with `*` or `?`, both must match.
public struct CronExpression: Sendable, Hashable, CustomStringConvertible {
    /// The expression as written (whitespace collapsed).
    public let text: String
    /// Whether the expression has a seconds field.
    public let hasSeconds: Bool

    let seconds: UInt64
    let minutes: UInt64
    let hours: UInt32
    let months: UInt16
    let days: DayRule

    /// Debian cron treats jobs whose minute and hour fields are both fixed (neither starts with
    /// `*`) as wall-clock appointments across DST changes: once in a repeated hour, right after
    /// a skipped one. Everything else follows real elapsed time.
    let isFixedTime: Bool

    public var description: String { text }

    /// Parses a 5- or 6-field expression (not a macro; see ``CronSchedule``).
    public init(parsing text: String) throws(CronError) {
        let fields = text.split(whereSeparator: { $0 == " " || $0 == "\t" })
        guard fields.count == 5 || fields.count == 6 else {
            throw CronError(field: nil, message: "expected 5 fields (minute hour day-of-month month day-of-week) or 6 with seconds first, found \(fields.count)")
        }
        self.text = fields.joined(separator: " ")
        self.hasSeconds = fields.count == 6
        let offset = hasSeconds ? 0 : 1
        // Indexed by CronField's raw value; seconds default to :00.
        var parsed = [FieldValue](repeating: FieldValue(bits: 1, special: []), count: 6)
        for (index, field) in fields.enumerated() {
            let kind = CronField(rawValue: index + offset)!
            parsed[kind.rawValue] = try FieldValue(parsing: field, as: kind, position: index + 1)
        }
        self.seconds = parsed[CronField.second.rawValue].bits
        self.minutes = parsed[CronField.minute.rawValue].bits
        self.hours = UInt32(truncatingIfNeeded: parsed[CronField.hour.rawValue].bits)
        self.months = UInt16(truncatingIfNeeded: parsed[CronField.month.rawValue].bits)

        let domText = fields[fields.count - 3]
        let dowText = fields[fields.count - 1]
        let dom = parsed[CronField.dayOfMonth.rawValue]
        let dow = parsed[CronField.dayOfWeek.rawValue]
        let starts: (Substring) -> Bool = { $0.hasPrefix("*") || $0.hasPrefix("?") }
        self.days = DayRule(
            daysOfMonth: UInt32(truncatingIfNeeded: dom.bits),
            daySpecials: dom.special,
            weekdays: UInt8(truncatingIfNeeded: dow.bits),
            weekdaySpecials: dow.special,
            requireBoth: starts(domText) || starts(dowText)
        )
        let minuteText = fields[fields.count - 5]
        let hourText = fields[fields.count - 4]
        self.isFixedTime = !hasSeconds && !minuteText.hasPrefix("*") && !hourText.hasPrefix("*")

        try checkSatisfiable(domPosition: hasSeconds ? 4 : 3)
    }

    /// Rejects day/month combinations that can never happen, such as `0 0 30 2 *`.
    private func checkSatisfiable(domPosition: Int) throws(CronError) {
        guard days.requireBoth || days.weekdays == 0 && days.weekdaySpecials.isEmpty else { return }
        guard days.daySpecials.isEmpty else { return }
        let dayBits = days.daysOfMonth
        var earliest = 1
        while earliest < 31 && dayBits & (1 << UInt32(earliest)) == 0 { earliest += 1 }
        // Every month has 29 days (in a leap year): only later days need the months' lengths.
        guard earliest > 29 else { return }
        let allowedMonths = (1...12).filter { months & (1 << UInt16($0)) != 0 }
        let longest = allowedMonths.map { daysIn(month: $0, year: 2024) }.max() ?? 31
        if earliest > longest {
            let monthNames = allowedMonths.map { CronField.monthNames[$0 - 1] }
            throw CronError(
                field: domPosition,
                message: "field \(domPosition) (day of month): day \(earliest) never occurs in \(monthNames.joined(separator: ", "))"
            )
        }
    }
}

/// An error in a cron expression, pointing at the field (1-based, as written) when it can.
public struct CronError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The field number as written (1 = first field), nil for whole-expression errors.
    public var field: Int?
    public var message: String
    public var description: String { message }
}

// MARK: - Fields

enum CronField: Int, Sendable {
    case second = 0, minute, hour, dayOfMonth, month, dayOfWeek

    var name: String {
        switch self {
        case .second: "second"
        case .minute: "minute"
        case .hour: "hour"
        case .dayOfMonth: "day of month"
        case .month: "month"
        case .dayOfWeek: "day of week"
        }
    }

    var range: ClosedRange<Int> {
        switch self {
        case .second, .minute: 0...59
        case .hour: 0...23
        case .dayOfMonth: 1...31
        case .month: 1...12
        case .dayOfWeek: 0...7
        }
    }

    static let monthNames = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
    static let weekdayNames = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
}

/// Day-of-month and day-of-week extensions that are not plain sets of numbers.
enum DaySpecial: Sendable, Hashable {
    /// `L`: the last day of the month.
    case lastDay
    /// `LW`: the last weekday (Mon–Fri) of the month.
    case lastWeekday
    /// `nW`: the weekday nearest day n, within the same month.
    case nearestWeekday(Int)
    /// `dL`: the last weekday d (0 = Sunday) of the month.
    case lastOfWeekday(Int)
    /// `d#n`: the n-th weekday d of the month.
    case nthWeekday(Int, Int)
}

struct FieldValue {
    var bits: UInt64
    var special: Set<DaySpecial>

    init(bits: UInt64, special: Set<DaySpecial>) {
        self.bits = bits
        self.special = special
    }

    init(parsing text: Substring, as field: CronField, position: Int) throws(CronError) {
        bits = 0
        special = []
        guard !text.isEmpty else { throw CronError(field: position, message: "field \(position) (\(field.name)): empty") }
        // Digits and operators need no case folding (and no copy): most fields are only those.
        let folded = text.utf8.contains(where: { $0 >= 0x61 && $0 <= 0x7A }) ? Substring(text.uppercased()) : text
        for term in folded.split(separator: ",", omittingEmptySubsequences: false) {
            try parseTerm(term, field: field, position: position)
        }
        if field == .dayOfWeek, bits & (1 << 7) != 0 {
            bits = (bits | 1) & ~(1 << 7)
        }
    }

    private mutating func parseTerm(_ term: Substring, field: CronField, position: Int) throws(CronError) {
        func fail(_ message: String) -> CronError { CronError(field: position, message: "field \(position) (\(field.name)): \(message)") }
        // The common case: a plain number.
        if let number = Self.plainNumber(term) {
            guard field.range.contains(number) else {
                throw fail("\(term) is out of range \(field.range.lowerBound)–\(field.range.upperBound)")
            }
            bits |= 1 << UInt64(number)
            return
        }
        guard !term.isEmpty else { throw fail("empty list item") }

        // Day extensions first: they do not combine with ranges or steps.
        if field == .dayOfMonth {
            if term == "L" { special.insert(.lastDay); return }
            if term == "LW" { special.insert(.lastWeekday); return }
            if term.hasSuffix("W") {
                let day = try value(term.dropLast(), field: field, fail: fail)
                special.insert(.nearestWeekday(day))
                return
            }
        }
        if field == .dayOfWeek {
            if term.hasSuffix("L") {
                guard term.count > 1 else { throw fail("'L' needs a weekday before it (e.g. 5L for the last Friday)") }
                let weekday = try value(term.dropLast(), field: field, fail: fail) % 7
                special.insert(.lastOfWeekday(weekday))
                return
            }
            if let hash = term.firstIndex(of: "#") {
                let weekday = try value(term[..<hash], field: field, fail: fail) % 7
                let nthText = term[term.index(after: hash)...]
                guard let nth = Int(nthText), (1...5).contains(nth) else {
                    throw fail("'\(nthText)' after '#' must be 1–5")
                }
                special.insert(.nthWeekday(weekday, nth))
                return
            }
        }

        var rangePart = term
        var step = 1
        if let slash = term.firstIndex(of: "/") {
            rangePart = term[..<slash]
            let stepText = term[term.index(after: slash)...]
            guard let parsedStep = Int(stepText), parsedStep > 0 else {
                throw fail("step '\(stepText)' must be a positive number")
            }
            step = parsedStep
        }
        let low: Int
        let high: Int
        if rangePart == "*" || rangePart == "?" {
            guard rangePart == "*" || field == .dayOfMonth || field == .dayOfWeek else {
                throw fail("'?' is only allowed in the day fields")
            }
            low = field.range.lowerBound
            high = field.range.upperBound
        } else if let dash = rangePart.firstIndex(of: "-"), dash != rangePart.startIndex {
            low = try value(rangePart[..<dash], field: field, fail: fail)
            high = try value(rangePart[rangePart.index(after: dash)...], field: field, fail: fail)
            guard low <= high else {
                throw fail("range \(rangePart) runs backwards")
            }
        } else {
            low = try value(rangePart, field: field, fail: fail)
            // `a/n` means every n-th value from a to the end of the field's range.
            high = term.contains("/") ? field.range.upperBound : low
        }
        var current = low
        while current <= high {
            bits |= 1 << UInt64(current)
            current += step
        }
    }

    /// A term of one to four ASCII digits, as a number.
    static func plainNumber(_ term: Substring) -> Int? {
        var value = 0
        var count = 0
        for byte in term.utf8 {
            guard byte >= 0x30 && byte <= 0x39, count < 4 else { return nil }
            value = value * 10 + Int(byte - 0x30)
            count += 1
        }
        return count > 0 ? value : nil
    }

    private func value(_ text: Substring, field: CronField, fail: (String) -> CronError) throws(CronError) -> Int {
        if field == .month, let index = CronField.monthNames.firstIndex(where: { $0 == text }) { return index + 1 }
        if field == .dayOfWeek, let index = CronField.weekdayNames.firstIndex(where: { $0 == text }) { return index }
        guard !text.isEmpty, text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else {
            let hint: String
            switch field {
            case .month: hint = " (use 1–12 or JAN–DEC)"
            case .dayOfWeek: hint = " (use 0–7 or SUN–SAT)"
            default: hint = ""
            }
            throw fail("'\(text)' is not a number\(hint)")
        }
        guard let number = Int(text), field.range.contains(number) else {
            throw fail("\(text) is out of range \(field.range.lowerBound)–\(field.range.upperBound)")
        }
        return number
    }
}

/// Which days of a month an expression allows.
struct DayRule: Sendable, Hashable {
    var daysOfMonth: UInt32
    var daySpecials: Set<DaySpecial>
    var weekdays: UInt8
    var weekdaySpecials: Set<DaySpecial>
    var requireBoth: Bool

    /// Bit d set (1…31) for each matching day of the given month.
    func mask(year: Int, month: Int) -> UInt32 {
        let length = daysIn(month: month, year: year)
        let firstWeekday = weekdayOf(days: JobRunnerSchedule.days(fromCivil: year, month, 1))
        let valid: UInt32 = (UInt32(1) << UInt32(length + 1)) &- 2

        var dom = daysOfMonth & valid
        for special in daySpecials {
            switch special {
            case .lastDay:
                dom |= 1 << UInt32(length)
            case .lastWeekday:
                var day = length
                while isWeekend(day) { day -= 1 }
                dom |= 1 << UInt32(day)
            case .nearestWeekday(let target) where target <= length:
                dom |= 1 << UInt32(nearestWeekday(to: target, length: length))
            default:
                break
            }
        }

        var dow: UInt32 = 0
        for day in 1...length where weekdays & (1 << UInt8((firstWeekday + day - 1) % 7)) != 0 {
            dow |= 1 << UInt32(day)
        }
        for special in weekdaySpecials {
            switch special {
            case .lastOfWeekday(let weekday):
                var day = 1 + (weekday - firstWeekday + 7) % 7
                while day + 7 <= length { day += 7 }
                dow |= 1 << UInt32(day)
            case .nthWeekday(let weekday, let nth):
                let day = 1 + (weekday - firstWeekday + 7) % 7 + (nth - 1) * 7
                if day <= length { dow |= 1 << UInt32(day) }
            default:
                break
            }
        }
        let domRestricted = daysOfMonth != 0 || !daySpecials.isEmpty
        let dowRestricted = weekdays != 0 || !weekdaySpecials.isEmpty
        if requireBoth {
            return (domRestricted ? dom : valid) & (dowRestricted ? dow : valid)
        }
        return dom | dow

        func isWeekend(_ day: Int) -> Bool {
            let weekday = (firstWeekday + day - 1) % 7
            return weekday == 0 || weekday == 6
        }

        func nearestWeekday(to target: Int, length: Int) -> Int {
            let weekday = (firstWeekday + target - 1) % 7
            switch weekday {
            case 6: return target == 1 ? 3 : target - 1          // Saturday: Friday, or Monday the 3rd
            case 0: return target == length ? target - 2 : target + 1  // Sunday: Monday, or Friday before
            default: return target
            }
        }
    }
}
