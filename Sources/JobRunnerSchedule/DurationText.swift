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

    /// Parses a duration. A bare number is rejected: the unit must be explicit.
    public static func parse(_ text: String) throws(ParseError) -> Duration {
        let trimmed = text.trimmingASCIISpaces()
        guard !trimmed.isEmpty else {
            throw ParseError(message: "empty duration (write e.g. 30s, 10m, 1h30m)")
        }
        var scanner = TextScanner(trimmed)
        var total: Int64 = 0
        while !scanner.isAtEnd {
            while scanner.take(" ") {}
            guard let (whole, _) = scanner.digits() else {
                throw ParseError(message: "'\(text)' is not a duration: expected a number at '\(scanner.rest)'")
            }
            var fractionMicros: Int64 = 0
            var fractionDigits = 0
            var fractionValue = 0
            if scanner.take(".") {
                guard let (value, count) = scanner.digits() else {
                    throw ParseError(message: "'\(text)' is not a duration: expected digits after '.'")
                }
                fractionValue = value
                fractionDigits = count
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
            let (product, overflow) = Int64(whole).multipliedReportingOverflow(by: unit.microseconds)
            guard !overflow else {
                throw ParseError(message: "'\(text)' is too long a duration")
            }
            if fractionDigits > 0 {
                var scale: Int64 = 1
                for _ in 0..<min(fractionDigits, 12) { scale *= 10 }
                fractionMicros = Int64(fractionValue) * unit.microseconds / scale
            }
            let (sum, overflow2) = total.addingReportingOverflow(product + fractionMicros)
            guard !overflow2 else {
                throw ParseError(message: "'\(text)' is too long a duration")
            }
            total = sum
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
