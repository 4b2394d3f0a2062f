/// A wall-clock date and time with no zone attached (proleptic Gregorian calendar).
///
/// The conversions use Howard Hinnant's days-from-civil algorithm, exact for every year an
/// `Int` can hold, so no calendar library (and no locale) is involved in schedule maths.
public struct LocalDateTime: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var year: Int
    public var month: Int
    public var day: Int
    public var hour: Int
    public var minute: Int
    public var second: Int
    public var microsecond: Int

    /// Creates a local date-time from its fields (not validated; see ``isValid``).
    public init(year: Int, month: Int, day: Int, hour: Int = 0, minute: Int = 0, second: Int = 0, microsecond: Int = 0) {
        self.year = year
        self.month = month
        self.day = day
        self.hour = hour
        self.minute = minute
        self.second = second
        self.microsecond = microsecond
    }

    /// The wall-clock fields of a count of seconds since 1970-01-01T00:00:00 (in whatever zone
    /// the count was offset to).
    public init(secondsSinceEpoch: Int64, microsecond: Int = 0) {
        let days = secondsSinceEpoch.floorDiv(86_400)
        let secondOfDay = Int(secondsSinceEpoch.floorMod(86_400))
        let (y, m, d) = civil(fromDays: days)
        self.init(year: y, month: m, day: d, hour: secondOfDay / 3600, minute: (secondOfDay % 3600) / 60,
                  second: secondOfDay % 60, microsecond: microsecond)
    }

    /// Seconds since 1970-01-01T00:00:00 of these wall-clock fields, as if they were UTC.
    public var secondsSinceEpoch: Int64 {
        daysSinceEpoch * 86_400 + Int64(hour * 3600 + minute * 60 + second)
    }

    /// Days since 1970-01-01 of this date.
    public var daysSinceEpoch: Int64 {
        days(fromCivil: year, month, day)
    }

    /// Day of the week: 0 = Sunday … 6 = Saturday.
    public var weekday: Int {
        weekdayOf(days: daysSinceEpoch)
    }

    /// Whether every field is within its calendar range (Feb 29 only in leap years).
    public var isValid: Bool {
        (1...12).contains(month) && day >= 1 && day <= daysIn(month: month, year: year)
            && (0..<24).contains(hour) && (0..<60).contains(minute) && (0..<60).contains(second)
            && (0..<1_000_000).contains(microsecond)
    }

    public static func < (lhs: LocalDateTime, rhs: LocalDateTime) -> Bool {
        (lhs.secondsSinceEpoch, lhs.microsecond) < (rhs.secondsSinceEpoch, rhs.microsecond)
    }

    /// `YYYY-MM-DD`.
    public var isoDate: String {
        let y = year < 0 ? "-" + pad(-year, 4) : pad(year, 4)
        return y + "-" + twoDigits(month) + "-" + twoDigits(day)
    }

    /// `HH:MM:SS`, plus `.ffffff` (trailing zeros trimmed) when asked and non-zero.
    public func isoTime(includeFraction: Bool) -> String {
        var text = twoDigits(hour) + ":" + twoDigits(minute) + ":" + twoDigits(second)
        if includeFraction && microsecond != 0 {
            var fraction = pad(microsecond, 6)
            while fraction.hasSuffix("0") { fraction.removeLast() }
            text += "." + fraction
        }
        return text
    }

    public var description: String {
        isoDate + " " + isoTime(includeFraction: true)
    }

    /// The same wall time on the first day of the following month.
    func startOfNextMonth() -> LocalDateTime {
        month == 12 ? LocalDateTime(year: year + 1, month: 1, day: 1) : LocalDateTime(year: year, month: month + 1, day: 1)
    }

    /// Midnight of the following day.
    func startOfNextDay() -> LocalDateTime {
        if day < daysIn(month: month, year: year) {
            return LocalDateTime(year: year, month: month, day: day + 1)
        }
        return startOfNextMonth()
    }
}

// MARK: - Calendar arithmetic

/// Whether `year` is a leap year in the proleptic Gregorian calendar.
public func isLeapYear(_ year: Int) -> Bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

/// Number of days in a month (1–12) of a year.
public func daysIn(month: Int, year: Int) -> Int {
    switch month {
    case 2: return isLeapYear(year) ? 29 : 28
    case 4, 6, 9, 11: return 30
    default: return 31
    }
}

/// Days since 1970-01-01 for a proleptic Gregorian date.
func days(fromCivil year: Int, _ month: Int, _ day: Int) -> Int64 {
    let y = Int64(month <= 2 ? year - 1 : year)
    let era = (y >= 0 ? y : y - 399) / 400
    let yoe = y - era * 400
    let m = Int64(month)
    let doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + Int64(day) - 1
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
    return era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date of a count of days since 1970-01-01.
func civil(fromDays days: Int64) -> (year: Int, month: Int, day: Int) {
    let z = days + 719_468
    let era = (z >= 0 ? z : z - 146_096) / 146_097
    let doe = z - era * 146_097
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
    let mp = (5 * doy + 2) / 153
    let d = doy - (153 * mp + 2) / 5 + 1
    let m = mp < 10 ? mp + 3 : mp - 9
    let y = yoe + era * 400 + (m <= 2 ? 1 : 0)
    return (Int(y), Int(m), Int(d))
}

/// Day of the week of a count of days since 1970-01-01 (a Thursday): 0 = Sunday.
func weekdayOf(days: Int64) -> Int {
    Int((days + 4).floorMod(7))
}

private func pad(_ value: Int, _ width: Int) -> String {
    let digits = String(value)
    return digits.count >= width ? digits : String(repeating: "0", count: width - digits.count) + digits
}
