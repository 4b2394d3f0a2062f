/// A point in time: microseconds since the Unix epoch, UTC, independent of any time zone.
///
/// Microseconds match the resolution of systemd calendar events and keep every date from
/// year 1 to far beyond 9999 in range, which nanoseconds in an `Int64` would not.
public struct Timestamp: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// Microseconds since 1970-01-01T00:00:00Z.
    public var microseconds: Int64

    /// Creates a timestamp from microseconds since the epoch.
    public init(microseconds: Int64) {
        self.microseconds = microseconds
    }

    /// Creates a timestamp from whole seconds since the epoch (clamped to what microseconds in an
    /// `Int64` can hold, about ±292,000 years).
    public init(seconds: Int64) {
        let (product, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000)
        self.microseconds = overflow ? (seconds < 0 ? .min : .max) : product
    }

    /// Whole seconds since the epoch, rounded towards negative infinity.
    public var seconds: Int64 {
        microseconds.floorDiv(1_000_000)
    }

    /// The sub-second part in microseconds, always in `0..<1_000_000`.
    public var subsecondMicroseconds: Int64 {
        microseconds.floorMod(1_000_000)
    }

    /// Seconds since the epoch as a floating-point value (for JSON and metrics).
    public var secondsSinceEpoch: Double {
        Double(microseconds) / 1_000_000
    }

    public static func < (lhs: Timestamp, rhs: Timestamp) -> Bool {
        lhs.microseconds < rhs.microseconds
    }

    /// This instant moved by a duration (sub-microsecond parts are dropped). Saturates at the
    /// ends of the range rather than trapping: an instant read from outside (a database row, a
    /// request) can be anything.
    public func advanced(by duration: Duration) -> Timestamp {
        let (sum, overflow) = microseconds.addingReportingOverflow(duration.wholeMicroseconds)
        return Timestamp(microseconds: overflow ? (duration < .zero ? .min : .max) : sum)
    }

    /// The duration from this instant to `other` (negative when `other` is earlier).
    public func duration(to other: Timestamp) -> Duration {
        let (difference, overflow) = other.microseconds.subtractingReportingOverflow(microseconds)
        return .microseconds(overflow ? (other.microseconds < microseconds ? Int64.min : Int64.max) : difference)
    }

    /// RFC 3339 in UTC, with fractional seconds only when there are any.
    public var description: String {
        rfc3339(offsetSeconds: 0)
    }

    /// RFC 3339 with the given UTC offset, e.g. `2026-03-29T03:00:00+02:00`.
    public func rfc3339(offsetSeconds: Int) -> String {
        let local = LocalDateTime(secondsSinceEpoch: seconds + Int64(offsetSeconds), microsecond: Int(subsecondMicroseconds))
        var text = local.isoDate + "T" + local.isoTime(includeFraction: true)
        if offsetSeconds == 0 {
            text += "Z"
        } else {
            let sign = offsetSeconds < 0 ? "-" : "+"
            let magnitude = abs(offsetSeconds)
            text += sign + twoDigits(magnitude / 3600) + ":" + twoDigits((magnitude % 3600) / 60)
            if magnitude % 60 != 0 {
                text += ":" + twoDigits(magnitude % 60)
            }
        }
        return text
    }

    /// Parses RFC 3339 (`2026-03-29T01:30:00Z`, `…+02:00`, fractional seconds allowed; a space may
    /// replace the `T`). Returns nil when the text is not a valid RFC 3339 timestamp.
    public init?(rfc3339 text: String) {
        var scanner = TextScanner(text)
        guard let year = scanner.fixedDigits(4), scanner.take("-"),
            let month = scanner.fixedDigits(2), scanner.take("-"),
            let day = scanner.fixedDigits(2), scanner.take("T") || scanner.take("t") || scanner.take(" "),
            let hour = scanner.fixedDigits(2), scanner.take(":"),
            let minute = scanner.fixedDigits(2), scanner.take(":"),
            let second = scanner.fixedDigits(2)
        else { return nil }
        var micros = 0
        if scanner.take(".") {
            guard let (fraction, digits) = scanner.digits(), digits > 0 else { return nil }
            micros = scaleFraction(fraction, digits: digits)
        }
        let offset: Int
        if scanner.take("Z") || scanner.take("z") {
            offset = 0
        } else {
            let negative: Bool
            if scanner.take("+") {
                negative = false
            } else if scanner.take("-") {
                negative = true
            } else {
                return nil
            }
            guard let oh = scanner.fixedDigits(2), scanner.take(":"), let om = scanner.fixedDigits(2) else { return nil }
            offset = (negative ? -1 : 1) * (oh * 3600 + om * 60)
        }
        guard scanner.isAtEnd else { return nil }
        let local = LocalDateTime(year: year, month: month, day: day, hour: hour, minute: minute, second: second, microsecond: micros)
        guard local.isValid else { return nil }
        self.init(microseconds: (local.secondsSinceEpoch - Int64(offset)) * 1_000_000 + Int64(micros))
    }
}

extension Duration {
    /// The duration in whole microseconds, truncated towards zero; clamped to `Int64`'s range.
    public var wholeMicroseconds: Int64 {
        let (seconds, attoseconds) = components
        let (micros, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000)
        guard !overflow else { return seconds < 0 ? .min : .max }
        let (total, overflow2) = micros.addingReportingOverflow(attoseconds / 1_000_000_000_000)
        return overflow2 ? (seconds < 0 ? .min : .max) : total
    }

    /// The duration in seconds as a floating-point value.
    public var secondsValue: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) / 1e18
    }
}

// MARK: - Integer helpers

extension Int64 {
    /// Division rounding towards negative infinity.
    @inlinable func floorDiv(_ divisor: Int64) -> Int64 {
        let q = self / divisor
        return (self % divisor != 0 && (self < 0) != (divisor < 0)) ? q - 1 : q
    }

    /// Remainder with the sign of the divisor.
    @inlinable func floorMod(_ divisor: Int64) -> Int64 {
        let r = self % divisor
        return (r != 0 && (r < 0) != (divisor < 0)) ? r + divisor : r
    }
}

func twoDigits(_ value: Int) -> String {
    value < 10 ? "0\(value)" : "\(value)"
}

/// Turns the digits after a decimal point into microseconds (`5` with 1 digit → 500000).
func scaleFraction(_ value: Int, digits: Int) -> Int {
    var value = value
    var digits = digits
    while digits > 6 {
        value /= 10
        digits -= 1
    }
    while digits < 6 {
        value *= 10
        digits += 1
    }
    return value
}
