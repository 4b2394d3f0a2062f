import JobRunnerSchedule
import JobRunnerConfig
import JobRunnerCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Finds processes a run left behind outside its process group — a daemon that double-forked
/// and called setsid — and kills them.
///
/// Such a process is re-parented to the daemon (a child subreaper) when its parent exits, so it
/// is a child of the daemon that is not a run's leader. Its `JOBRUNNER_RUN_ID` (inherited, unless
/// the job scrubbed it) says which run it belongs to; it is killed once that run has ended.
public enum ProcessSweeper {
    /// Kills adopted processes whose run is in `endedRuns`; returns the pids killed. Reads /proc:
    /// blocking, for the thread pool.
    @available(*, noasync, message: "reads /proc; call from the thread pool")
    static func sweep(endedRuns: Set<String>, leaders: Set<Int32>) -> [(pid: Int32, run: String)] {
        var killed: [(pid: Int32, run: String)] = []
        var seen: Set<Int32> = []
        // Killing one escapee re-parents its own children to us: look again until none is left.
        // A killed process may still show as alive for a moment; it is killed again, but counted
        // (and logged) once.
        for _ in 0..<8 {
            let found = adoptedProcesses(excluding: leaders).compactMap { process -> (pid: Int32, group: Int32, run: String)? in
                guard let run = runID(of: process.pid), endedRuns.contains(run) else { return nil }
                return (process.pid, process.group, run)
            }
            if found.isEmpty { break }
            for process in found {
                if process.group == process.pid { kill(-process.pid, SIGKILL) }
                kill(process.pid, SIGKILL)
                if seen.insert(process.pid).inserted { killed.append((process.pid, process.run)) }
            }
        }
        return killed
    }

    /// Kills every process, anywhere, whose `JOBRUNNER_RUN_ID` is one of `runs` (after a crash
    /// the runs' processes were re-parented elsewhere). Returns how many were killed.
    @available(*, noasync, message: "reads /proc; call from the thread pool")
    public static func killLeftovers(ofRuns runs: Set<String>) -> Int {
        guard !runs.isEmpty else { return 0 }
        let me = getpid()
        var killed: Set<Int32> = []
        for _ in 0..<8 {
            var found = false
            for pid in allPIDs() where pid != me {
                guard let run = runID(of: pid), runs.contains(run), !isZombie(pid) else { continue }
                kill(pid, SIGKILL)
                killed.insert(pid)
                found = true
            }
            if !found { break }
        }
        // Processes, not attempts: one still dying when looked at again is counted once.
        return killed.count
    }

    static func isZombie(_ pid: Int32) -> Bool {
        guard let stat = readSmallFile("/proc/\(pid)/stat"), let close = stat.lastIndex(of: UInt8(ascii: ")")), close + 2 < stat.count else {
            return true
        }
        return stat[close + 2] == UInt8(ascii: "Z")
    }

    static func allPIDs() -> [Int32] {
        guard let directory = opendir("/proc") else { return [] }
        defer { closedir(directory) }
        var result: [Int32] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { buffer in
                String(decoding: buffer.prefix { $0 != 0 }, as: UTF8.self)
            }
            if let pid = Int32(name) { result.append(pid) }
        }
        return result
    }

    /// Children of this process that are alive and are not run leaders. Reads the kernel's list
    /// of each thread's children (`/proc/self/task/*/children`), a few small files, rather than
    /// every process on the machine; without that file, scans /proc.
    static func adoptedProcesses(excluding leaders: Set<Int32>) -> [(pid: Int32, group: Int32)] {
        let me = getpid()
        let candidates = childPIDs() ?? allPIDs()
        var result: [(Int32, Int32)] = []
        for pid in candidates {
            guard !leaders.contains(pid), pid != me,
                let stat = readSmallFile("/proc/\(pid)/stat"), let close = stat.lastIndex(of: UInt8(ascii: ")"))
            else { continue }
            let fields = stat[(close + 2)...].split(separator: UInt8(ascii: " "))
            guard fields.count > 3, let state = fields[0].first, state != UInt8(ascii: "Z"),
                let parent = Int32(String(decoding: fields[1], as: UTF8.self)), parent == me,
                let group = Int32(String(decoding: fields[2], as: UTF8.self))
            else { continue }
            result.append((pid, group))
        }
        return result
    }

    /// This process's children, from every thread's `children` file; nil when the kernel does
    /// not provide them (CONFIG_PROC_CHILDREN).
    static func childPIDs() -> [Int32]? {
        guard let directory = opendir("/proc/self/task") else { return nil }
        defer { closedir(directory) }
        var result: [Int32] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { buffer in
                String(decoding: buffer.prefix { $0 != 0 }, as: UTF8.self)
            }
            guard Int32(name) != nil else { continue }
            guard let text = readSmallFile("/proc/self/task/\(name)/children", limit: 1 << 20) else {
                if errno == ENOENT, access("/proc/self/task/\(name)", F_OK) == 0 { return nil }
                continue
            }
            for field in text.split(separator: UInt8(ascii: " ")) {
                if let pid = Int32(String(decoding: field, as: UTF8.self).trimmingNewline()) { result.append(pid) }
            }
        }
        return result
    }

    /// The `JOBRUNNER_RUN_ID` in a process's environment.
    static func runID(of pid: Int32) -> String? {
        guard let environ = readSmallFile("/proc/\(pid)/environ", limit: 1 << 20) else { return nil }
        let prefix = Array("JOBRUNNER_RUN_ID=".utf8)
        for entry in environ.split(separator: 0) where entry.starts(with: prefix) {
            return String(decoding: entry.dropFirst(prefix.count), as: UTF8.self)
        }
        return nil
    }

    static func readSmallFile(_ path: String, limit: Int = 4096) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var result: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while result.count < limit {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            if count <= 0 { break }
            result.append(contentsOf: chunk[0..<count])
        }
        return result
    }
}

extension String {
    fileprivate func trimmingNewline() -> String {
        hasSuffix("\n") ? String(dropLast()) : self
    }
}
