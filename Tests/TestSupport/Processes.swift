import Foundation

/// One process as /proc shows it.
public struct ProcessEntry: Sendable, CustomStringConvertible {
    public var pid: Int32
    public var parent: Int32
    public var group: Int32
    public var session: Int32
    /// The state letter (`R`, `S`, `Z` for a zombie, …).
    public var state: Character
    /// When it started, in clock ticks since boot (field 22 of `stat`): with the pid, it names
    /// one process even after the pid is reused.
    public var startTime: UInt64
    public var commandLine: String

    public var isZombie: Bool { state == "Z" }
    public var description: String { "\(pid) ppid=\(parent) pgid=\(group) sid=\(session) state=\(state) \(commandLine)" }
}

/// Reads the process table from /proc: what the kernel says, not what the daemon says.
///
/// Leftover checks find a run's processes by what they cannot shed by exec'ing or by leaving
/// their process group: the `JOBRUNNER_RUN_ID` (or another variable) in their initial
/// environment, their session, or the pids collected while the run was alive. A command line is
/// never used: after `exec`, a marker in a shell comment is gone.
public enum ProcessTable {
    public static func all() -> [ProcessEntry] {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        return names.compactMap(Int32.init).compactMap(entry)
    }

    public static func entry(_ pid: Int32) -> ProcessEntry? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return nil }
        let fields = stat[stat.index(close, offsetBy: 2)...].split(separator: " ")
        guard fields.count > 19, let state = fields[0].first, let parent = Int32(fields[1]), let group = Int32(fields[2]),
            let session = Int32(fields[3]), let startTime = UInt64(fields[19])
        else { return nil }
        let raw = (try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/cmdline"))) ?? Data()
        let commandLine = String(decoding: raw.map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self).trimmingCharacters(in: .whitespaces)
        return ProcessEntry(pid: pid, parent: parent, group: group, session: session, state: state, startTime: startTime,
                            commandLine: commandLine)
    }

    /// The environment a process started with (`/proc/PID/environ`), nil when it cannot be read.
    public static func environment(of pid: Int32) -> [String: String]? {
        guard let raw = try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/environ")) else { return nil }
        var result: [String: String] = [:]
        for entry in raw.split(separator: 0) {
            let text = String(decoding: entry, as: UTF8.self)
            guard let equals = text.firstIndex(of: "=") else { continue }
            result[String(text[..<equals])] = String(text[text.index(after: equals)...])
        }
        return result
    }

    /// Live processes (not zombies) other than this one whose environment has `name=value`.
    public static func carrying(_ name: String, _ value: String) -> [ProcessEntry] {
        carrying(name, in: [value])
    }

    /// Live processes whose environment has `name` set to one of `values`.
    public static func carrying(_ name: String, in values: Set<String>) -> [ProcessEntry] {
        let me = getpid()
        return all().filter { entry in
            guard entry.pid != me, !entry.isZombie, let value = environment(of: entry.pid)?[name] else { return false }
            return values.contains(value)
        }
    }

    /// Live processes of a run: those carrying its `JOBRUNNER_RUN_ID`.
    public static func ofRun(_ id: String) -> [ProcessEntry] {
        carrying("JOBRUNNER_RUN_ID", id)
    }

    /// Live processes of any of these runs.
    public static func ofRuns(_ ids: Set<String>) -> [ProcessEntry] {
        carrying("JOBRUNNER_RUN_ID", in: ids)
    }

    /// Live processes in session `id` (a run's session is its leader's pid).
    public static func inSession(_ id: Int32) -> [ProcessEntry] {
        all().filter { $0.session == id && !$0.isZombie }
    }

    /// Which of `collected` (taken while a run was alive) are still the same live processes.
    public static func stillAlive(_ collected: [ProcessEntry]) -> [ProcessEntry] {
        collected.compactMap { old in
            guard let now = entry(old.pid), now.startTime == old.startTime, !now.isZombie else { return nil }
            return now
        }
    }

    /// Everything a run left: its processes by run id, by session, and among `collected`.
    public static func leftovers(ofRun id: String, session: Int32? = nil, collected: [ProcessEntry] = []) -> [ProcessEntry] {
        var found: [Int32: ProcessEntry] = [:]
        for entry in ofRun(id) { found[entry.pid] = entry }
        if let session { for entry in inSession(session) { found[entry.pid] = entry } }
        for entry in stillAlive(collected) { found[entry.pid] = entry }
        return found.values.sorted { $0.pid < $1.pid }
    }

    /// Waits until `pid` has no live process (gone or a zombie), checking every 50 ms.
    public static func waitUntilGone(_ pid: Int32, within timeout: Duration) async throws {
        let deadline = ContinuousClock.now + timeout
        while let entry = entry(pid), !entry.isZombie {
            guard ContinuousClock.now < deadline else { throw TimeoutError("process \(entry) still alive after \(timeout)") }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// Waits until `find` returns nothing; throws with what is left after `timeout`.
    public static func waitUntilNone(_ what: String, within timeout: Duration, _ find: () -> [ProcessEntry]) async throws {
        let deadline = ContinuousClock.now + timeout
        while true {
            let left = find()
            if left.isEmpty { return }
            guard ContinuousClock.now < deadline else { throw TimeoutError("\(what) still alive after \(timeout): \(left)") }
            try await Task.sleep(for: .milliseconds(50))
        }
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

    /// The descriptors a process has open: number → what it points at (`readlink`).
    public static func descriptors(of pid: Int32) -> [Int32: String]? {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd") else { return nil }
        var result: [Int32: String] = [:]
        for name in names {
            guard let fd = Int32(name) else { continue }
            result[fd] = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\(name)")) ?? "?"
        }
        return result
    }

    /// What a `socket:[inode]` descriptor is, from `/proc/net/unix` (type, state, name, and the
    /// peer's inode when the kernel says), for a failure message; nil when it is not a unix socket.
    public static func unixSocket(_ link: String) -> String? {
        guard link.hasPrefix("socket:["), link.hasSuffix("]"),
              let table = try? String(contentsOfFile: "/proc/net/unix", encoding: .utf8)
        else { return nil }
        let inode = link.dropFirst("socket:[".count).dropLast()
        // Num RefCount Protocol Flags Type St Inode [Path]
        for line in table.split(separator: "\n").dropFirst() {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 7, fields[6] == inode else { continue }
            let type = ["0001": "stream", "0002": "dgram", "0005": "seqpacket"][String(fields[4])] ?? String(fields[4])
            let state = ["01": "unconnected", "02": "connecting", "03": "connected", "04": "disconnecting"][String(fields[5])] ?? String(fields[5])
            let flags = fields[3] == "00010000" ? " listening" : ""
            let name = fields.count > 7 ? " " + fields[7...].joined(separator: " ") : ""
            return "unix \(type) \(state)\(flags)\(name)"
        }
        return nil
    }

    /// A process's resident memory (`VmRSS`) in bytes.
    public static func residentBytes(of pid: Int32) -> Int? {
        statusField("VmRSS", of: pid)
    }

    /// A `kB` line of `/proc/PID/status` in bytes.
    public static func statusField(_ name: String, of pid: Int32) -> Int? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        for line in status.split(separator: "\n") where line.hasPrefix(name + ":") {
            return line.split(separator: " ").compactMap { Int($0) }.first.map { $0 * 1024 }
        }
        return nil
    }
}
