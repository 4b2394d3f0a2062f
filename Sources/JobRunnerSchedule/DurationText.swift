/// Durations as written in configuration and on the command line: `500ms`, `30s`, `10m`,
/// `1h30m`, `2d`, `1w`; components may be separated by spaces and may have a fraction (`1.5h`).
public enum DurationText {
    /// Why a duration could not be read.
    public struct ParseError: Error, Equatable, Sendable, CustomStringConvertible {
        public var message: String
        public var description: String { message }
    }

    private static let units: [(names: [String], microseconds: Int64)] = [
        (["us", "µs", "usec"], 1),
        (["ms", "msec"], 1_000),
        (["s", "sec", "second", "seconds"], 1_000_000),
        (["m", "min", "minute", "minutes"], 60_000_000),
        (["h", "hr", "hour", "hours"], 3_600_000_000),
        (["d", "day", "days"], 86_400_000_000),
        (["w", "week", "weeks"], 604_800_000_000),
    ]

    /// The longest duration anything accepts: 100 years. Every duration read from outside (a
    /// configuration, a command line, a job's `EXTEND_TIMEOUT_USEC`) is at most this, so adding
    /// one to any instant or deadline, in microseconds or nanoseconds, cannot overflow.
    public static let maximum: Duration = .seconds(36_500 * 86_400)

    /// Parses a duration. A bare number is rejected: the unit must be explicit. Fractions keep
    /// microsecond precision (further digits are dropped); more than `maximum` is an error.
    public static func parse(_ text: String) throws(ParseError) -> Duration {
        let trimmed = text.trimmingASCIISpaces()
        guard !trimmed.isEmpty else {
            throw ParseError(message: "empty duration (write e.g. 30s, 10m, 1h30m)")
        }
        var scanner = TextScanner(trimmed)
        var total: Int64 = 0
        let outOfRange = ParseError(message: "'\(text)' is out of range (at most \(format(maximum)))")
        while !scanner.isAtEnd {
            while scanner.take(" ") {}
            let wholeStart = scanner.index
            while let byte = scanner.peek, byte >= 0x30, byte <= 0x39 { scanner.index += 1 }
            let wholeDigits = scanner.bytes[wholeStart..<scanner.index]
            guard !wholeDigits.isEmpty else {
                throw ParseError(message: "'\(text)' is not a duration: expected a number at '\(scanner.rest)'")
            }
            // More than 18 digits is beyond any duration accepted (and beyond Int64).
            guard wholeDigits.count <= 18 else { throw outOfRange }
            let whole = wholeDigits.reduce(Int64(0)) { $0 * 10 + Int64($1 - 0x30) }
            var fraction: Int64 = 0
            var scale: Int64 = 1
            if scanner.take(".") {
                let fractionStart = scanner.index
                while let byte = scanner.peek, byte >= 0x30, byte <= 0x39 {
                    // Twelve digits are finer than a microsecond of any unit; the rest is dropped.
                    if scanner.index - fractionStart < 12 {
                        fraction = fraction * 10 + Int64(byte - 0x30)
                        scale *= 10
                    }
                    scanner.index += 1
                }
                guard scanner.index > fractionStart else {
                    throw ParseError(message: "'\(text)' is not a duration: expected digits after '.'")
                }
            }
            while scanner.take(" ") {}
            let unitStart = scanner.index
            while let byte = scanner.peek, byte != UInt8(ascii: " "), !(byte >= 0x30 && byte <= 0x39) {
                scanner.index += 1
            }
            let unitName = String(decoding: scanner.bytes[unitStart..<scanner.index], as: UTF8.self)
            guard !unitName.isEmpty else {
                throw ParseError(message: "'\(text)' is not a duration: '\(whole)' needs a unit (e.g. \(whole)s or \(whole)m)")
            }
            guard let unit = units.first(where: { $0.names.contains(unitName) }) else {
                throw ParseError(message: "'\(text)' is not a duration: unknown unit '\(unitName)' (use ms, s, m, h, d or w)")
            }
            let (product, overflow) = whole.multipliedReportingOverflow(by: unit.microseconds)
            guard !overflow else { throw outOfRange }
            // fraction / scale < 1, so this is less than one unit: computed in full width.
            let part = scale.dividingFullWidth(fraction.multipliedFullWidth(by: unit.microseconds)).quotient
            let (sum, overflow2) = total.addingReportingOverflow(product)
            let (withPart, overflow3) = sum.addingReportingOverflow(part)
            guard !overflow2, !overflow3, withPart <= maximum.wholeMicroseconds else { throw outOfRange }
            total = withPart
            while scanner.take(" ") {}
        }
        return .microseconds(total)
    }

    /// Formats a duration compactly: `1h30m`, `45s`, `1.5s`, `250ms`, `0s`.
    public static func format(_ duration: Duration) -> String {
        var micros = duration.wholeMicroseconds
        if micros == 0 { return "0s" }
        var text = micros < 0 ? "-" : ""
        micros = abs(micros)
        if micros < 1_000_000 {
            if micros % 1_000 == 0 { return text + "\(micros / 1_000)ms" }
            return text + "\(micros)us"
        }
        let parts: [(Int64, String)] = [(86_400_000_000, "d"), (3_600_000_000, "h"), (60_000_000, "m")]
        for (size, unit) in parts where micros >= size {
            text += "\(micros / size)\(unit)"
            micros %= size
        }
        if micros > 0 {
            let seconds = micros / 1_000_000
            let fraction = micros % 1_000_000
            if fraction == 0 {
                text += "\(seconds)s"
            } else {
                var digits = String(fraction)
                digits = String(repeating: "0", count: 6 - digits.count) + digits
                while digits.hasSuffix("0") { digits.removeLast() }
                text += "\(seconds).\(digits)s"
            }
        }
        return text
    }
}

extension DurationText {
    /// A rounded duration for people: at most two units, e.g. `4m`, `1h10m`, `2d3h`, `45s`.
    public static func approximate(_ duration: Duration) -> String {
        let seconds = abs(duration.wholeMicroseconds) / 1_000_000
        if seconds < 60 { return "\(seconds)s" }
        let units: [(Int64, String)] = [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")]
        var remaining = seconds
        var parts: [String] = []
        for (size, unit) in units where remaining >= size || !parts.isEmpty {
            if parts.count == 2 { break }
            let value = remaining / size
            remaining %= size
            if value > 0 { parts.append("\(value)\(unit)") } else if !parts.isEmpty { break }
        }
        return parts.joined()
    }

    /// `in 4m` for a future instant, `3m ago` for a past one, relative to `now`.
    public static func relative(_ instant: Timestamp, now: Timestamp) -> String {
        let delta = now.duration(to: instant)
        if abs(delta.wholeMicroseconds) < 1_000_000 { return "now" }
        return delta > .zero ? "in \(approximate(delta))" : "\(approximate(delta)) ago"
    }
}

extension StringProtocol {
    /// The text without leading and trailing ASCII spaces and tabs.
    func trimmingASCIISpaces() -> String {
        var slice = Substring(self)
        while let first = slice.first, first == " " || first == "\t" { slice.removeFirst() }
        while let last = slice.last, last == " " || last == "\t" { slice.removeLast() }
        return String(slice)
    }
}
