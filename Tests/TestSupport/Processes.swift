import Foundation

/// One process as /proc shows it.
public struct ProcessEntry: Sendable, CustomStringConvertible {
    public var pid: Int32
    public var parent: Int32
    public var group: Int32
    public var session: Int32
    /// The state letter (`R`, `S`, `Z` for a zombie, …).
    public var state: Character
    public var commandLine: String

    public var isZombie: Bool { state == "Z" }
    public var description: String { "\(pid) ppid=\(parent) pgid=\(group) state=\(state) \(commandLine)" }
}

/// Reads the process table from /proc.
public enum ProcessTable {
    /// Waits until `pid` has no live process (gone or a zombie), checking every 50 ms.
    public static func waitUntilGone(_ pid: Int32, within timeout: Duration) async throws {
        let deadline = ContinuousClock.now + timeout
        while let entry = entry(pid), !entry.isZombie {
            guard ContinuousClock.now < deadline else { throw TimeoutError("process \(entry) still alive after \(timeout)") }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    public static func all() -> [ProcessEntry] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        return names.compactMap(Int32.init).compactMap(entry)
    }

    public static func entry(_ pid: Int32) -> ProcessEntry? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return nil }
        let fields = stat[stat.index(close, offsetBy: 2)...].split(separator: " ")
        guard fields.count > 4, let state = fields[0].first, let parent = Int32(fields[1]), let group = Int32(fields[2]),
            let session = Int32(fields[3])
        else { return nil }
        let raw = (try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/cmdline"))) ?? Data()
        let commandLine = String(decoding: raw.map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self).trimmingCharacters(in: .whitespaces)
        return ProcessEntry(pid: pid, parent: parent, group: group, session: session, state: state, commandLine: commandLine)
    }

    /// Processes whose command line contains `marker` (a unique string a test puts in its jobs).
    public static func matching(_ marker: String) -> [ProcessEntry] {
        all().filter { $0.commandLine.contains(marker) && $0.pid != getpid() }
    }

    /// The descendants of `pid` (children, grandchildren, …).
    public static func descendants(of pid: Int32) -> [ProcessEntry] {
        let table = all()
        var result: [ProcessEntry] = []
        var frontier = [pid]
        while let current = frontier.popLast() {
            for entry in table where entry.parent == current {
                result.append(entry)
                frontier.append(entry.pid)
            }
        }
        return result
    }
}
