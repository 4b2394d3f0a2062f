import JobRunnerSchedule

/// Instants as `--since` and `--until` take them, like journalctl: RFC 3339
/// (`2026-12-01T03:00:00Z`), a local date or date and time (`2026-12-01`, `2026-12-01 03:00`),
/// `now`, `today`, `yesterday`, `tomorrow` (local midnight), or a duration ago (`1h`, `30m`,
/// `2d`, `1h30m ago`).
public enum TimeSpec {
    public struct ParseError: Error, Sendable, Equatable, CustomStringConvertible {
        public var message: String
        public var description: String { message }
    }

    public static func parse(_ text: String, now: Timestamp, zone: TimeZoneRules) throws(ParseError) -> Timestamp {
        let trimmed = text.trimmingCharacters(in: " \t")
        if let instant = Timestamp(rfc3339: trimmed) { return instant }
        let today = zone.localDateTime(at: now)
        let midnight = LocalDateTime(year: today.year, month: today.month, day: today.day)
        switch trimmed.lowercased() {
        case "now": return now
        case "today": return instant(midnight, zone: zone)
        case "yesterday": return instant(midnight, days: -1, zone: zone)
        case "tomorrow": return instant(midnight, days: 1, zone: zone)
        default: break
        }
        if let local = localDateTime(trimmed) { return instant(local, zone: zone) }
        var durationText = trimmed
        if durationText.lowercased().hasSuffix(" ago") { durationText = String(durationText.dropLast(4)) }
        if let duration = try? DurationText.parse(durationText) { return now.advanced(by: .zero - duration) }
        throw ParseError(message: "'\(text)' is not a time: give RFC 3339 (2026-12-01T03:00:00Z), a local date and time "
                         + "(2026-12-01 03:00), today, yesterday, or a duration ago (1h, 30m, 2d)")
    }

    /// `YYYY-MM-DD`, `YYYY-MM-DD HH:MM` or `YYYY-MM-DD HH:MM:SS` (a `T` may replace the space).
    static func localDateTime(_ text: String) -> LocalDateTime? {
        let parts = text.split(whereSeparator: { $0 == " " || $0 == "T" })
        guard (1...2).contains(parts.count) else { return nil }
        let pieces = parts[0].split(separator: "-", omittingEmptySubsequences: false)
        guard pieces.map(\.count) == [4, 2, 2], pieces.allSatisfy({ $0.allSatisfy(\.isASCII) && $0.allSatisfy(\.isNumber) }),
            let year = Int(pieces[0]), let month = Int(pieces[1]), let day = Int(pieces[2])
        else { return nil }
        var time = [0, 0, 0]
        if parts.count == 2 {
            let pieces = parts[1].split(separator: ":", omittingEmptySubsequences: false)
            guard (2...3).contains(pieces.count), pieces.allSatisfy({ $0.count == 2 && $0.allSatisfy(\.isASCII) && $0.allSatisfy(\.isNumber) })
            else { return nil }
            let fields = pieces.map { Int($0) }
            for (index, value) in fields.enumerated() { time[index] = value! }
        }
        let local = LocalDateTime(year: year, month: month, day: day, hour: time[0], minute: time[1], second: time[2])
        return local.isValid ? local : nil
    }

    static func instant(_ local: LocalDateTime, days: Int64 = 0, zone: TimeZoneRules) -> Timestamp {
        Timestamp(seconds: zone.firstInstant(localSeconds: local.secondsSinceEpoch + days * 86_400))
    }
}

extension String {
    fileprivate func trimmingCharacters(in set: String) -> String {
        var slice = Substring(self)
        while let first = slice.first, set.contains(first) { slice.removeFirst() }
        while let last = slice.last, set.contains(last) { slice.removeLast() }
        return String(slice)
    }
}
