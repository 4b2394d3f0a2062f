import JobRunnerSupervision
import JobRunnerHistory
import JobRunnerAPI
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import JobRunnerSchedule
import Logging
import Synchronization
import Systemd

/// How the daemon writes its log.
public enum LogFormat: String, Sendable, CaseIterable {
    /// One readable line per entry on stderr.
    case text
    /// One JSON object per entry on stderr.
    case json
    /// Native journal entries (`sd_journal_sendv`) with a field per metadata key.
    case journal

    /// `journal` when stderr is the journal (`JOURNAL_STREAM`), else `text`.
    public static var automatic: LogFormat {
        JournalLogHandler.stderrIsJournal ? .journal : .text
    }

    /// A handler for this format.
    public func makeHandler(label: String) -> any LogHandler {
        switch self {
        case .text: TextLogHandler(label: label)
        case .json: JSONLogHandler(label: label)
        case .journal: JournalLogHandler(identifier: "jobrunnerd")
        }
    }
}

/// Writes whole lines to stderr, one `write(2)` each, so concurrent entries never interleave.
final class StderrWriter: Sendable {
    static let shared = StderrWriter()
    private let lock = Mutex(())

    func write(_ line: String) {
        var line = line
        if !line.hasSuffix("\n") { line += "\n" }
        lock.withLock { _ in
            line.utf8CString.withUnsafeBufferPointer { buffer in
                var offset = 0
                let count = buffer.count - 1
                while offset < count {
                    let written = Foundation.write(2, buffer.baseAddress! + offset, count - offset)
                    if written <= 0 {
                        if written < 0 && errno == EINTR { continue }
                        return
                    }
                    offset += written
                }
            }
        }
    }
}

/// `2026-11-29T13:37:57.123Z info  run finished job=backup outcome=succeeded`
public struct TextLogHandler: LogHandler {
    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    private let label: String

    public init(label: String) {
        self.label = label
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var all = metadata
        if let provided = metadataProvider?.get() { all.merge(provided) { $1 } }
        if let extra = event.metadata { all.merge(extra) { $1 } }
        var line = Self.timestamp() + " " + event.level.rawValue.padding(toLength: 8, withPad: " ", startingAt: 0) + " " + event.message.description
        for key in all.keys.sorted() {
            line += " \(key)=\(Self.quoted("\(all[key]!)"))"
        }
        StderrWriter.shared.write(line)
    }

    static func quoted(_ value: String) -> String {
        if value.isEmpty || value.contains(where: { $0 == " " || $0 == "\"" || $0 == "=" }) {
            return "\"" + value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
        }
        return value
    }

    static func timestamp() -> String {
        let now = Date().timeIntervalSince1970
        let seconds = Int64(now.rounded(.down))
        let local = LocalDateTime(secondsSinceEpoch: seconds)
        let milliseconds = min(999, Int((now - Double(seconds)) * 1000))
        let fraction = milliseconds < 10 ? "00\(milliseconds)" : milliseconds < 100 ? "0\(milliseconds)" : "\(milliseconds)"
        return local.isoDate + "T" + local.isoTime(includeFraction: false) + "." + fraction + "Z"
    }
}

/// `{"time": "…", "level": "info", "message": "…", "job": "backup", …}`
public struct JSONLogHandler: LogHandler {
    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?

    public init(label: String) {}

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var fields: [String: String] = [:]
        var all = metadata
        if let provided = metadataProvider?.get() { all.merge(provided) { $1 } }
        if let extra = event.metadata { all.merge(extra) { $1 } }
        for (key, value) in all { fields[key] = "\(value)" }
        fields["time"] = TextLogHandler.timestamp()
        fields["level"] = event.level.rawValue
        fields["message"] = event.message.description
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        if let data = try? encoder.encode(fields) {
            StderrWriter.shared.write(String(decoding: data, as: UTF8.self))
        }
    }
}
