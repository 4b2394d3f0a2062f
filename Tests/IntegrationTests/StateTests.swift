import Foundation
import JobRunnerAPI
import TestSupport
import Testing

/// History that survives: crashes, restarts, reloads, catch-up, a read-only disk.
@Suite(.timeLimit(.minutes(3))) struct StateTests {
    static func micros(_ date: Date) -> Int64 { Int64(date.timeIntervalSince1970 * 1_000_000) }

    /// The history's rows of `jobs` as the ledger reconciles them.
    static func historyRows(_ database: String) async throws -> [(id: String, job: String, scheduledMicros: Int64, outcome: String)] {
        try await SQLiteShell.query(database, "SELECT id, job, scheduled_at, COALESCE(outcome, '') FROM runs").map {
            (id: $0[0], job: $0[1], scheduledMicros: Int64($0[2])!, outcome: $0[3])
        }
    }

    static func nowSecond() -> Int64 { Int64(Date().timeIntervalSince1970) }

    @Test func killNineThenRestartMarksRunsInterruptedAndKillsThem() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let ledger = Ledger(path: directory.file("ledger"))
        // `tick` writes a line per occurrence; `long` is a run in progress when the daemon dies.
        let config = """
            daemon:
              shutdown_grace: 1s
            jobs:
              tick:
                shell: "\(ledger.append)"
                schedule: "* * * * * *"
                overlap: allow
              long:
                shell: "exec sleep 300"
                schedule: "@reboot"
            """
        let first = try DaemonHarness(config: config)
        try await first.waitUntilReady()
        let window1 = Self.nowSecond() + 1
        let (runID, pid) = try await first.started("long")
        try await poll("three ticks", within: .seconds(20)) { ledger.lines().filter { $0.scheduledSecond >= window1 }.count >= 3 }
        let lastBeforeKill = ledger.lines().map(\.scheduledSecond).max() ?? window1
        first.signal(SIGKILL)
        #expect(try await first.waitForExit() != 0)
        first.cleanUp(keepDirectory: true)
        // The run's process outlived the daemon.
        #expect(ProcessTable.ofRun(runID).map(\.pid) == [pid])
        let orphans = DaemonHarness.runsStarted(by: first.pid)

        let second = try DaemonHarness(config: config, in: first.directory)
        defer { second.cleanUp() }
        let recovery = try await second.waitForLog("runs were interrupted by the daemon's last stop", "runs=")
        // Processes killed, not attempts: at most those of its runs alive when it died.
        let killed = DaemonHarness.field("killed_processes", in: recovery).flatMap(Int.init) ?? -1
        #expect(killed >= 1 && killed <= orphans.count, "\(recovery); alive before the restart: \(orphans)")
        try await second.waitUntilReady()
        let window2 = Self.nowSecond() + 1
        // What the kernel says: nothing of the interrupted run is left.
        #expect(ProcessTable.leftovers(ofRun: runID, session: pid).isEmpty, "the interrupted run's processes are still alive")
        let client = ControlClient(socketPath: second.socketPath)
        let detail = try await client.get("/v1/runs/\(runID)", as: RunDetail.self)
        #expect(detail.run.outcome == "interrupted")
        try await poll("three ticks after the restart", within: .seconds(20)) {
            ledger.lines().filter { $0.scheduledSecond >= window2 }.count >= 3
        }
        // The last second seen run before the stop ends the "none missing" window: under load a
        // fire may start a second late, and the stop ends firing.
        let lastSeen = ledger.lines().map(\.scheduledSecond).max() ?? window2
        second.signal(SIGTERM)
        #expect(try await second.waitForExit() == 0)
        let end = Self.nowSecond() - 1

        // Counted in the lines the job wrote: no occurrence ran twice, across the kill or
        // otherwise; while a daemon was up, none is missing.
        let all = ledger.audit(jobs: ["tick"], seconds: (window1 - 1)...end)
        #expect(all.doubledCount == 0, "\(all)")
        let up1 = ledger.audit(jobs: ["tick"], seconds: window1...max(window1, lastBeforeKill))
        #expect(up1.missingCount == 0, "before the kill: \(up1)")
        let up2 = ledger.audit(jobs: ["tick"], seconds: window2...max(window2, lastSeen))
        #expect(up2.missingCount == 0, "after the restart: \(up2)")
        // Every line has its row in the history, and every succeeded row its line.
        let problems = ledger.reconcile(with: try await Self.historyRows(second.databasePath), jobs: ["tick"])
        #expect(problems.isEmpty, "\(problems.prefix(5))")
    }

    func restartAfterDowntime(catchUp: String, extra: String = "") async throws -> [[String]] {
        let config = """
            jobs:
              minutely:
                shell: "true"
                schedule: "* * * * *"
                catch_up: \(catchUp)
            \(extra)
            """
        let first = try DaemonHarness(config: config)
        try await first.waitUntilReady()
        first.signal(SIGTERM)
        #expect(try await first.waitForExit() == 0)
        first.cleanUp(keepDirectory: true)
        // Pretend the daemon was down for the last ten minutes.
        let tenMinutesAgo = Self.micros(Date()) - 600_000_000
        _ = try await SQLiteShell.query(first.databasePath,
                                  "UPDATE jobs SET last_occurrence = \(tenMinutesAgo), first_seen = \(tenMinutesAgo - 86_400_000_000)")
        let second = try DaemonHarness(config: config, in: first.directory)
        defer { second.cleanUp() }
        try await second.waitUntilReady()
        if catchUp != "none" {
            try await second.waitForLog("run finished", "job=minutely")
        } else {
            try await second.waitForLog("not run (catch_up: none)", "job=minutely")
        }
        second.signal(SIGTERM)
        _ = try await second.waitForExit()
        return try await SQLiteShell.query(second.databasePath,
                                     "SELECT trigger, scheduled_at FROM runs WHERE job = 'minutely' ORDER BY scheduled_at")
    }

    @Test func catchUpNoneOnceAll() async throws {
        let now = Self.micros(Date())
        let latestMinute = now / 60_000_000 * 60_000_000

        let none = try await restartAfterDowntime(catchUp: "none")
        #expect(none.filter { $0[0] == "catch_up" }.isEmpty)

        let once = try await restartAfterDowntime(catchUp: "once").filter { $0[0] == "catch_up" }
        #expect(once.count == 1)
        // The latest missed occurrence (the current minute, or the next if it turned meanwhile).
        #expect([latestMinute, latestMinute + 60_000_000].contains(Int64(once.first?[1] ?? "")!))

        let all = try await restartAfterDowntime(catchUp: "all\n    catch_up_max: 3").filter { $0[0] == "catch_up" }
        #expect(all.count == 3)
        let times = all.map { Int64($0[1])! }
        #expect(times == times.sorted())
        #expect(zip(times, times.dropFirst()).allSatisfy { $1 - $0 == 60_000_000 })
    }

    @Test func aJobAddedWhileDownDoesNotCatchUp() async throws {
        let first = try DaemonHarness(config: "jobs: {}\n")
        try await first.waitUntilReady()
        first.signal(SIGTERM)
        _ = try await first.waitForExit()
        first.cleanUp(keepDirectory: true)
        let second = try DaemonHarness(config: """
            jobs:
              fresh:
                shell: "true"
                schedule: "* * * * * *"
                catch_up: all
            """, in: first.directory)
        defer { second.cleanUp() }
        try await second.waitUntilReady()
        // Catch-up fires are dispatched before the first scheduled one: once a scheduled run
        // has finished, any catch-up would be in the history.
        try await second.waitForLog("run finished", "job=fresh", "outcome=succeeded")
        second.signal(SIGTERM)
        #expect(try await second.waitForExit() == 0)
        let rows = try await SQLiteShell.query(second.databasePath, "SELECT trigger, COUNT(*) FROM runs GROUP BY trigger")
        #expect(rows.first { $0[0] == "catch_up" } == nil, "\(rows)")
        #expect(rows.first { $0[0] == "schedule" } != nil, "\(rows)")
        let known = try await SQLiteShell.query(second.databasePath, "SELECT name FROM jobs")
        #expect(known.map { $0[0] } == ["fresh"])
    }

    @Test func reloadStormNeverLosesOrDoublesAnOccurrence() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let ledger = Ledger(path: directory.file("ledger"))
        // Queue rather than skip: on a loaded machine a run may still be alive when the next
        // second comes, and every occurrence must run.
        let names = (1...50).map { "steady\($0)" }
        let jobs = names.map {
            "  \($0):\n    shell: \"\(ledger.append)\"\n    schedule: \"* * * * * *\"\n    catch_up: all\n    overlap: queue\n    max_queue: 100\n"
        }.joined()
        func config(_ generation: Int) -> String {
            "daemon:\n  max_concurrent_runs: 64\njobs:\n" + jobs + "  edited:\n    shell: \"echo \(generation)\"\n"
        }
        let daemon = try DaemonHarness(config: config(0), logLevel: "warning")
        defer { daemon.cleanUp() }
        try await daemon.waitUntilReady()
        let client = ControlClient(socketPath: daemon.socketPath)
        let from = Self.nowSecond() + 1
        let stormStart = ContinuousClock.now
        var generation = 0
        while ContinuousClock.now - stormStart < .seconds(10) {
            generation += 1
            daemon.writeConfig(config(generation))
            daemon.signal(SIGHUP)
            try await Task.sleep(for: .milliseconds(50))  // the storm's own rhythm: 20 SIGHUPs a second
        }
        // The premise: reloads were applied, and the last file written is the one in force.
        try await poll("the last edit applied", within: .seconds(20)) {
            try await client.get("/v1/jobs/edited", as: JobInfo.self).shell == "echo \(generation)"
        }
        let status = try await client.get("/v1/status", as: StatusResponse.self)
        #expect(status.config.lastReload?.result == "ok")
        // Several reloads were applied while the jobs ran (SIGHUPs during a reload coalesce).
        #expect(status.config.generation >= 3, "only \(status.config.generation) generations from \(generation) SIGHUPs")
        #expect(status.config.generation <= generation + 1)
        let to = Self.nowSecond() - 1
        daemon.signal(SIGTERM)
        #expect(try await daemon.waitForExit() == 0)
        // Counted in the lines the jobs wrote: every second of the storm once per job.
        let audit = ledger.audit(jobs: names, seconds: from...to)
        #expect(audit.isExact, "\(audit)")
        #expect(audit.counted == names.count * Int(to - from + 1))
        let problems = ledger.reconcile(with: try await Self.historyRows(daemon.databasePath), jobs: Set(names))
        #expect(problems.isEmpty, "\(problems.prefix(5))")
    }

    @Test func reloadRemovingRunningJobsFinishesOrCancelsThem() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let release = directory.file("release")
        let daemon = try DaemonHarness(config: """
            jobs:
              keeps:
                shell: "while [ ! -e \(release) ]; do sleep 0.05; done"
                schedule: "@reboot"
                on_remove: finish
              stops:
                shell: "sleep 300"
                schedule: "@reboot"
                on_remove: cancel
            """)
        defer { daemon.cleanUp() }
        try await daemon.sawLog("run started", "job=keeps")
        try await daemon.sawLog("run started", "job=stops")
        daemon.writeConfig("jobs: {}\n")
        daemon.signal(SIGHUP)
        try await daemon.waitForLog("run finished", "job=stops", "outcome=cancelled")
        let client = ControlClient(socketPath: daemon.socketPath)
        let running = try await client.get("/v1/runs?job=keeps", as: RunsResponse.self).runs
        #expect(running.first?.state == "running")
        #expect(FileManager.default.createFile(atPath: release, contents: nil))
        try await daemon.waitForLog("run finished", "job=keeps", "outcome=succeeded")
    }

    @Test func pauseSurvivesARestart() async throws {
        let config = """
            jobs:
              often:
                shell: "true"
                schedule: "* * * * * *"
            """
        let first = try DaemonHarness(config: config)
        try await first.waitUntilReady()
        let paused = try await ControlClient(socketPath: first.socketPath).request(.post, "/v1/jobs/often/pause")
        #expect(paused.status == 200)
        #expect(try paused.decode(JobInfo.self).state == "paused")
        first.signal(SIGTERM)
        _ = try await first.waitForExit()
        first.cleanUp(keepDirectory: true)
        let second = try DaemonHarness(config: config, in: first.directory)
        defer { second.cleanUp() }
        try await second.waitForLog("fire skipped: paused", "job=often")
        let job = try await ControlClient(socketPath: second.socketPath).get("/v1/jobs/often", as: JobInfo.self)
        #expect(job.state == "paused")
        let resumed = try await ControlClient(socketPath: second.socketPath).request(.post, "/v1/jobs/often/resume")
        #expect(try resumed.decode(JobInfo.self).state == "enabled")
        try await second.waitForLog("run finished", "job=often", "outcome=succeeded")
    }

    @Test(.enabled(if: getuid() == 0, "needs root to mount a small state directory"))
    func aFullStateDirectoryKeepsRunsGoingAndRecovers() async throws {
        let directory = TemporaryDirectory("jobrunnerd")
        defer { directory.remove() }
        let state = directory.file("state")
        let ledger = Ledger(path: directory.file("ledger"))
        let small = try SmallFileSystem(at: state, size: "4m")
        defer { small.unmount() }
        let daemon = try DaemonHarness(config: """
            daemon:
              history: { output_tail: 256KiB }
            jobs:
              tick:
                shell: "\(ledger.append); head -c 200000 /dev/zero | tr '\\\\0' x"
                schedule: "* * * * * *"
                overlap: allow
            """, in: directory, logLevel: "notice")
        defer { daemon.cleanUp(keepDirectory: true) }
        try await daemon.waitUntilReady()
        let from = Self.nowSecond() + 1
        try await daemon.waitForLog("run finished", "job=tick")
        let filler = small.fill()
        try await daemon.waitForLog("cannot write history, runs go on", "disk full")
        let fullSince = Self.nowSecond()
        let status = try await ControlClient(socketPath: daemon.socketPath).get("/v1/status", as: StatusResponse.self)
        #expect(status.historyError == "disk full")
        _ = try await daemon.notify.waitFor("STATUS=history writes failing (disk full)")
        // Runs go on meanwhile: counted in the lines they wrote, not in the history.
        try await poll("two runs while the disk is full", within: .seconds(20)) {
            ledger.lines().filter { $0.scheduledSecond > fullSince }.count >= 2
        }
        #expect(unlink(filler) == 0)
        try await daemon.waitForLog("history writes resumed")
        try await daemon.waitForLog("run finished", "job=tick")
        // The audit ends at a second whose run is seen to have started (a loaded machine can
        // start a fire later than the next second begins; what SIGTERM then stops is not lost).
        let to = Self.nowSecond()
        try await poll("the run of second \(to)", within: .seconds(20)) {
            ledger.lines().contains { $0.scheduledSecond >= to }
        }
        daemon.signal(SIGTERM)
        _ = try await daemon.waitForExit()
        let check = try await SQLiteShell.query(daemon.databasePath, "PRAGMA integrity_check")
        #expect(check.first?.first == "ok")
        // Every second ran once, and every run is in the history: nothing was lost while the
        // disk was full.
        let audit = ledger.audit(jobs: ["tick"], seconds: from...to)
        #expect(audit.isExact, "\(audit)")
        let problems = ledger.reconcile(with: try await Self.historyRows(daemon.databasePath), jobs: ["tick"])
        #expect(problems.isEmpty, "\(problems.prefix(5))")
    }

    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/strace"), "needs strace (make test installs it)"))
    func aFireIsOnDiskBeforeItsProcessStarts() async throws {
        // Seen in the daemon's system calls: the history's log is fsynced after the fire was
        // asked for and before the job's execve — a power cut then cannot make it run again.
        let daemon = try DaemonHarness(config: """
            jobs:
              durable:
                command: ["/bin/true", "durable-marker"]
            """, logLevel: "notice")
        defer { daemon.cleanUp() }
        try await daemon.waitUntilReady()
        let trace = daemon.directory.file("trace")
        let tracer = try ChildProcess("/usr/bin/strace", ["-f", "-qq", "-y", "-e", "trace=fsync,fdatasync,execve", "-o", trace,
                                                          "-p", "\(daemon.pid)"])
        defer { tracer.kill() }
        try await poll("strace attached", within: .seconds(10)) {
            (try? String(contentsOfFile: "/proc/\(daemon.pid)/status", encoding: .utf8))?
                .split(separator: "\n").first { $0.hasPrefix("TracerPid:") }?.split(separator: "\t").last != "0"
        }
        let run = try await ControlClient(socketPath: daemon.socketPath).request(.post, "/v1/jobs/durable/run?wait=true").decode(RunInfo.self)
        #expect(run.outcome == "succeeded")
        tracer.signal(SIGINT)
        _ = try await tracer.waitForExit(within: .seconds(10))
        let calls = try String(contentsOfFile: trace, encoding: .utf8).split(separator: "\n").map(String.init)
        let exec = try #require(calls.firstIndex { $0.contains("execve(\"/bin/true\", [\"/bin/true\", \"durable-marker\"]") },
                                "no execve of the job in \(calls.suffix(20))")
        let synced = calls[..<exec].contains { ($0.contains("fdatasync(") || $0.contains("fsync(")) && $0.contains("state.sqlite-wal") }
        #expect(synced, "no fsync of the history before the job's execve: \(calls[..<exec].suffix(10))")
    }
}
