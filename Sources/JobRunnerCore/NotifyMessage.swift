import JobRunnerSchedule

/// What a job may tell the daemon on its `NOTIFY_SOCKET`, in sd_notify(3) terms.
public enum NotifyMessage: Sendable, Equatable {
    case status(String)
    case extendTimeout(Duration)
    case ready

    /// The most bytes of one datagram read (sd_notify messages are short; more is cut off).
    public static let maximumDatagram = 4096

    /// Parses one datagram: newline-separated `KEY=value` assignments; anything else is ignored.
    public static func parse(_ datagram: some Collection<UInt8>) -> [NotifyMessage] {
        var messages: [NotifyMessage] = []
        for line in datagram.split(separator: UInt8(ascii: "\n")) {
            guard let equals = line.firstIndex(of: UInt8(ascii: "=")) else { continue }
            let key = line[line.startIndex..<equals]
            let value = String(decoding: line[line.index(after: equals)...], as: UTF8.self)
            switch String(decoding: key, as: UTF8.self) {
            case "STATUS":
                messages.append(.status(String(value.prefix(1024))))
            case "EXTEND_TIMEOUT_USEC":
                // Any number a job sends is at most the longest duration anything accepts, so the
                // deadline it moves cannot overflow.
                if let micros = UInt64(value) {
                    messages.append(.extendTimeout(.microseconds(Int64(min(micros, UInt64(DurationText.maximum.wholeMicroseconds))))))
                }
            case "READY":
                if value == "1" { messages.append(.ready) }
            default:
                continue
            }
        }
        return messages
    }
}
