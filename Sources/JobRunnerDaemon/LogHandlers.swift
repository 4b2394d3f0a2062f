import JobRunnerSupervision
import JobRunnerHistory
import JobRunnerAPI
import Foundation
#if canImport(Glibc)
import Glibc
#endif
import JobRunnerCore
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
        var line = Self.timestamp() + " " + event.level.rawValue.padding(toLength: 8, withPad: " ", startingAt: 0) + " "
        // A line a job printed: `backup[3x8k2q9d] stdout: text` (a hook's: `backup[3x8k2q9d]
        // on_failure stdout: text`), its control characters escaped, so it never reads as the
        // daemon's and cannot move the cursor over what came before.
        if all["output"] != nil, let stream = all["stream"], let job = all["job"] {
            let run = all["run_id"].map { "[" + Self.shortRunID("\($0)") + "]" } ?? ""
            let hook = all["hook"].map { " \($0)" } ?? ""
            StderrWriter.shared.write(line + "\(job)\(run)\(hook) \(stream): " + Self.visible(event.message.description))
            return
        }
        line += Self.visible(event.message.description)
        for key in all.keys.sorted() {
            line += " \(key)=\(Self.quoted("\(all[key]!)"))"
        }
        StderrWriter.shared.write(line)
    }

    /// The part of a run id a person tells runs apart by: its last 8 characters (ids start
    /// with their time, so runs of one day share their first ones). `jobrunnerctl` accepts it.
    static func shortRunID(_ id: String) -> String {
        String(id.suffix(8))
    }

    /// A value as `key=value`: quoted when it holds a space, a quote, `=` or a control
    /// character, with control characters escaped (`\n`, `\x1b`) so one entry stays one line.
    static func quoted(_ value: String) -> String {
        guard value.isEmpty || value.unicodeScalars.contains(where: { $0 == " " || $0 == "\"" || $0 == "=" || isControl($0) }) else {
            return value
        }
        var text = "\""
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\\": text += "\\\\"
            case "\"": text += "\\\""
            default: text += escaped(scalar)
            }
        }
        return text + "\""
    }

    /// Text with its control characters and line separators escaped (tabs kept).
    static func visible(_ text: String) -> String {
        guard text.unicodeScalars.contains(where: { isControl($0) && $0 != "\t" }) else { return text }
        return text.unicodeScalars.map { $0 == "\t" ? "\t" : escaped($0) }.joined()
    }

    static func isControl(_ scalar: Unicode.Scalar) -> Bool {
        scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value) || scalar.value == 0x2028 || scalar.value == 0x2029
    }

    static func escaped(_ scalar: Unicode.Scalar) -> String {
        switch scalar {
        case "\n": "\\n"
        case "\r": "\\r"
        case "\t": "\\t"
        case _ where isControl(scalar): scalar.value < 0x100 ? "\\x" + hex(scalar.value, width: 2) : "\\u" + hex(scalar.value, width: 4)
        default: String(scalar)
        }
    }

    static func hex(_ value: UInt32, width: Int) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: max(0, width - digits.count)) + digits
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
        var all = metadata
        if let provided = metadataProvider?.get() { all.merge(provided) { $1 } }
        if let extra = event.metadata { all.merge(extra) { $1 } }
        var fields = all.mapValues(JSONValue.init)
        fields["time"] = .string(TextLogHandler.timestamp())
        fields["level"] = .string(event.level.rawValue)
        fields["message"] = .string(event.message.description)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        if let data = try? encoder.encode(fields) {
            StderrWriter.shared.write(String(decoding: data, as: UTF8.self))
        }
    }
}

/// A log value in JSON: numbers stay numbers (`"pid": 11119`), lists and maps nest.
enum JSONValue: Encodable {
    case string(String)
    case integer(Int64)
    case number(Double)
    case bool(Bool)
    case array([JSONValue])
    case object([String: JSONValue])

    init(_ value: Logger.MetadataValue) {
        switch value {
        case .string(let text): self = .string(text)
        case .stringConvertible(let convertible):
            switch convertible {
            case let number as any BinaryInteger: self = Int64(exactly: number).map(JSONValue.integer) ?? .string("\(number)")
            case let seconds as Seconds: self = .number(seconds.value)
            case let number as Double where number.isFinite: self = .number(number)
            case let flag as Bool: self = .bool(flag)
            default: self = .string(convertible.description)
            }
        case .array(let values): self = .array(values.map(JSONValue.init))
        case .dictionary(let values): self = .object(values.mapValues(JSONValue.init))
        }
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .string(let text): try container.encode(text)
        case .integer(let number): try container.encode(number)
        case .number(let number): try container.encode(number)
        case .bool(let flag): try container.encode(flag)
        case .array(let values): try container.encode(values)
        case .object(let values): try container.encode(values)
        }
    }
}
