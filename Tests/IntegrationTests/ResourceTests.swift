import Foundation
import JobRunnerAPI
import TestSupport
import Testing

/// No leak, counted where the kernel counts it: the daemon's descriptors in /proc/PID/fd and its
/// resident memory, across thousands of runs.
@Suite(.serialized, .timeLimit(.minutes(4))) struct ResourceTests {
    /// Runs `job` `count` times through the API, `parallel` at a time, each request waiting for
    /// its run to end; returns the outcomes seen.
    static func run(_ job: String, times count: Int, parallel: Int = 8, on daemon: DaemonHarness) async throws -> [String: Int] {
        let client = ControlClient(socketPath: daemon.socketPath)
        return try await withThrowingTaskGroup(of: [String: Int].self) { group in
            for worker in 0..<parallel {
                group.addTask {
                    var outcomes: [String: Int] = [:]
                    for _ in stride(from: worker, to: count, by: parallel) {
                        let run = try await client.request(.post, "/v1/jobs/\(job)/run?wait=true").decode(RunInfo.self)
                        outcomes[run.outcome ?? "none", default: 0] += 1
                    }
                    return outcomes
                }
            }
            var all: [String: Int] = [:]
            for try await outcomes in group { all.merge(outcomes, uniquingKeysWith: +) }
            return all
        }
    }

    /// The daemon's descriptor table once it is idle (no run alive, no request in flight) and
    /// steady. With `atMost`, waits up to 20 seconds more for the count to come down to it: a
    /// descriptor whose close is still on its way (a loaded machine can keep the daemon off the
    /// CPU for longer than the steady readings) comes back, a leaked one never does, and the
    /// last reading is what the caller's expectation then reports.
    static func idleDescriptors(_ daemon: DaemonHarness, atMost limit: Int? = nil) async throws -> [Int32: String] {
        let client = ControlClient(socketPath: daemon.socketPath)
        try await poll("the daemon idle", within: .seconds(30), every: .milliseconds(100)) {
            try await client.get("/v1/status", as: StatusResponse.self).running == 0
        }
        // Our status connection closes after its answer; let the daemon see it close.
        var seen: [[Int32: String]] = []
        let deadline = ContinuousClock.now + .seconds(limit == nil ? 10 : 30)
        while ContinuousClock.now < deadline {
            seen.append(ProcessTable.descriptors(of: daemon.pid) ?? [:])
            if seen.count >= 5, Set(seen.suffix(5)).count == 1, seen.last!.count <= limit ?? .max { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        return seen.last!
    }

    /// What differs between two descriptor tables, for a failure message.
    static func difference(_ before: [Int32: String], _ after: [Int32: String]) -> String {
        let gone = before.filter { after[$0.key] != $0.value }.sorted { $0.key < $1.key }.map { "-\($0.key) \($0.value)" }
        let new = after.filter { before[$0.key] != $0.value }.sorted { $0.key < $1.key }.map {
            "+\($0.key) \($0.value)" + (ProcessTable.unixSocket($0.value).map { " (\($0))" } ?? "")
        }
        return (gone + new).joined(separator: ", ")
    }

    @Test func descriptorsAndMemoryStayFlatOverTenThousandRuns() async throws {
        let daemon = try DaemonHarness(config: """
            daemon:
              max_concurrent_runs: 8
            jobs:
              quick:
                command: ["/bin/true"]
                overlap: allow
                max_instances: 16
            """, logLevel: "warning")
        defer { daemon.cleanUp() }
        try await daemon.waitUntilReady()
        // Warm up: the first thousand runs grow what is meant to grow (caches, the run
        // registry's ring of recent runs, the history's pages).
        let warm = try await Self.run("quick", times: 1_000, on: daemon)
        #expect(warm == ["succeeded": 1_000], "\(warm)")
        let descriptorsBefore = try await Self.idleDescriptors(daemon)
        let memoryBefore = try #require(daemon.residentBytes)
        let outcomes = try await Self.run("quick", times: 9_000, on: daemon)
        #expect(outcomes == ["succeeded": 9_000], "\(outcomes)")
        let descriptorsAfter = try await Self.idleDescriptors(daemon, atMost: descriptorsBefore.count)
        let memoryAfter = try #require(daemon.residentBytes)
        // Not more (a leak); fewer happens when something passing was open at the first count.
        #expect(descriptorsAfter.count <= descriptorsBefore.count,
                "descriptors \(descriptorsBefore.count) → \(descriptorsAfter.count) over 9,000 runs: \(Self.difference(descriptorsBefore, descriptorsAfter))")
        let growth = memoryAfter - memoryBefore
        #expect(growth < 16 << 20, "resident memory \(memoryBefore >> 20) → \(memoryAfter >> 20) MiB over 9,000 runs")
    }

    @Test func spawnFailuresLeaveTheDaemonsDescriptorsAsTheyWere() async throws {
        // Each way a start can fail: before anything is opened (no such program), and after the
        // pipes and the notify socket are made (in the child: exec, chdir, setrlimit).
        let daemon = try DaemonHarness(config: """
            daemon:
              max_concurrent_runs: 8
            jobs:
              missing: { command: ["no-such-program-here"], overlap: allow, max_instances: 16 }
              noexec: { command: ["/etc/hostname"], overlap: allow, max_instances: 16 }
              nodir: { command: ["/bin/true"], working_directory: /no/such/directory, overlap: allow, max_instances: 16 }
              nolimit: { command: ["/bin/true"], limits: { nofile: 2147483647 }, overlap: allow, max_instances: 16 }
            """, logLevel: "critical")
        defer { daemon.cleanUp() }
        try await daemon.waitUntilReady()
        for job in ["missing", "noexec", "nodir", "nolimit"] {
            #expect(try await Self.run(job, times: 20, on: daemon) == ["spawn_failed": 20], "\(job)")
        }
        let before = try await Self.idleDescriptors(daemon)
        for job in ["missing", "noexec", "nodir", "nolimit"] {
            let outcomes = try await Self.run(job, times: 1_000, on: daemon)
            #expect(outcomes == ["spawn_failed": 1_000], "\(job): \(outcomes)")
        }
        let after = try await Self.idleDescriptors(daemon, atMost: before.count)
        #expect(after.count <= before.count,
                "descriptors \(before.count) → \(after.count) after 4,000 failed starts: \(Self.difference(before, after))")
    }

    @Test func stalledFollowersCostABoundedAmountOfMemory() async throws {
        // A job printing as fast as the daemon reads (8 KB lines), ten clients following its
        // output that never read a byte: each follower keeps at most its budget.
        let daemon = try DaemonHarness(config: """
            jobs:
              loud:
                shell: "yes $(head -c 8000 /dev/zero | tr '\\\\0' x)"
                schedule: "@reboot"
                timeout: 30s
                kill_grace: 1s
            """, logLevel: "warning")
        defer { daemon.cleanUp() }
        try await daemon.waitUntilReady()
        let client = ControlClient(socketPath: daemon.socketPath)
        var run: RunInfo?
        try await poll("the loud run") {
            run = try await client.get("/v1/runs?job=loud", as: RunsResponse.self).runs.first { $0.state == "running" }
            return run != nil
        }
        let before = try #require(daemon.residentBytes)
        var stalled: [Int32] = []
        defer { for fd in stalled { close(fd) } }
        for _ in 0..<10 {
            let fd = try RawSocket.open(daemon.socketPath)
            let request = Array("GET /v1/runs/\(run!.id)/output?follow=true HTTP/1.1\r\nHost: x\r\n\r\n".utf8)
            #expect(request.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } == request.count)
            stalled.append(fd)
        }
        var peak = before
        let started = ContinuousClock.now
        while ContinuousClock.now - started < .seconds(28) {
            peak = max(peak, daemon.residentBytes ?? 0)
            try await Task.sleep(for: .milliseconds(200))
        }
        // The output went on flowing meanwhile (the job was not simply stopped by a full pipe).
        let detail = try await client.get("/v1/runs/\(run!.id)", as: RunDetail.self)
        #expect(detail.run.state == "running")
        #expect(peak - before <= 32 << 20, "resident memory \(before >> 20) → peak \(peak >> 20) MiB with 10 stalled followers")
        #expect(daemon.isRunning)
    }

    /// Each thread of a process: its name and nice value, from /proc/PID/task/TID/stat.
    static func threadNiceness(of pid: Int32) -> [(name: String, nice: Int)] {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
        return tasks.compactMap { tid in
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/task/\(tid)/stat", encoding: .utf8),
                  let open = stat.firstIndex(of: "("), let close = stat.lastIndex(of: ")") else { return nil }
            // After the name: state is field 3, nice is field 19.
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            guard fields.count > 16, let nice = Int(fields[16]) else { return nil }
            return (String(stat[stat.index(after: open)..<close]), nice)
        }
    }

    /// Each thread's voluntary context switches (its wakeups), by thread id.
    static func wakeups(of pid: Int32) -> [String: (name: String, switches: Int)] {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []
        var result: [String: (name: String, switches: Int)] = [:]
        for tid in tasks {
            guard let status = try? String(contentsOfFile: "/proc/\(pid)/task/\(tid)/status", encoding: .utf8) else { continue }
            var name = "", switches: Int?
            for line in status.split(separator: "\n") {
                if line.hasPrefix("Name:") { name = line.dropFirst(5).trimmingCharacters(in: .whitespaces) }
                if line.hasPrefix("voluntary_ctxt_switches:") { switches = Int(line.dropFirst(24).trimmingCharacters(in: .whitespaces)) }
            }
            if let switches { result[tid] = (name, switches) }
        }
        return result
    }

    /// Idle after work, nothing due: no thread of the daemon wakes. (libdispatch's global pool,
    /// once a task has run on it, wakes once a second for good; `Task.sleep` would start it.) A
    /// periodic wakeup shows in every window; what the runs set off ends within one.
    @Test func anIdleDaemonDoesNotWakeAfterItsRuns() async throws {
        let daemon = try DaemonHarness(config: """
            jobs:
              a: { command: ["/bin/true"], schedule: "0 0 1 1 *" }
            """, logLevel: "warning")
        defer { daemon.cleanUp() }
        try await daemon.waitUntilReady()
        // Runs (each request waits for its run: the run wait's poll), their ends (the status
        // line's rate limit, the process sweep), and a status query.
        #expect(try await Self.run("a", times: 6, parallel: 1, on: daemon) == ["succeeded": 6])
        _ = try await Self.idleDescriptors(daemon)
        var windows: [[String]] = []
        for _ in 0..<4 {
            let before = Self.wakeups(of: daemon.pid)
            try await Task.sleep(for: .seconds(3))
            let after = Self.wakeups(of: daemon.pid)
            let woke = after.compactMap { tid, now -> String? in
                guard let then = before[tid], now.switches > then.switches else { return nil }
                return "\(now.name) (\(tid)): \(now.switches - then.switches)"
            }
            windows.append(woke.sorted())
            if woke.isEmpty { break }
        }
        #expect(windows.last == [], "wakeups in each 3 s window: \(windows)")
    }

    /// A run's exit is heard by the reaper's `waitid`; the kernel's SIGCHLD to the daemon is dropped at once
    /// (the threads that start runs leave it unblocked, and its action is the default), so it
    /// wakes no thread. The main thread (parked by libdispatch with no signal blocked) woke for
    /// most of them.
    @Test func aRunsExitWakesNoThreadWithItsSignal() async throws {
        let daemon = try DaemonHarness(config: """
            jobs:
              a: { command: ["/bin/true"] }
            """, logLevel: "warning")
        defer { daemon.cleanUp() }
        try await daemon.waitUntilReady()
        let main = "\(daemon.pid)"
        let before = try #require(Self.wakeups(of: daemon.pid)[main])
        #expect(try await Self.run("a", times: 40, parallel: 1, on: daemon) == ["succeeded": 40])
        let after = try #require(Self.wakeups(of: daemon.pid)[main])
        let pending = try String(contentsOfFile: "/proc/\(daemon.pid)/status", encoding: .utf8)
            .split(separator: "\n").first { $0.hasPrefix("ShdPnd:") } ?? ""
        #expect(after.switches - before.switches < 4, "the main thread woke \(after.switches - before.switches) times for 40 runs")
        #expect(pending.hasSuffix("0000000000000000"), "a signal is left pending: \(pending)")
    }

    @Test func theBlockingPoolRunsBelowTheThreadsThatStartRuns() async throws {
        let daemon = try DaemonHarness(config: """
            daemon:
              blocking_threads: 3
            jobs:
              a: { command: ["/bin/true"] }
            """, logLevel: "warning")
        defer { daemon.cleanUp() }
        try await daemon.waitUntilReady()
        let threads = Self.threadNiceness(of: daemon.pid)
        let pool = threads.filter { $0.name.hasPrefix("TP-#") }
        let main = try #require(threads.first { $0.name == "jobrunnerd" }, "\(threads)")
        #expect(pool.count >= 3, "\(threads)")
        #expect(pool.allSatisfy { $0.nice == min(19, main.nice + 10) }, "\(threads)")
        // No other thread is lowered (libdispatch raises some of its own by their QoS): run
        // starts are not slowed.
        #expect(threads.filter { !$0.name.hasPrefix("TP-#") }.allSatisfy { $0.nice <= main.nice }, "\(threads)")
    }
}
