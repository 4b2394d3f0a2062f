import Foundation
import JobRunnerControl
import TestSupport
import Testing

/// History that survives: crashes, restarts, reloads, catch-up, a read-only disk.
@Suite(.timeLimit(.minutes(3))) struct StateTests {
    static func micros(_ date: Date) -> Int64 { Int64(date.timeIntervalSince1970 * 1_000_000) }

    @Test func killNineThenRestartMarksRunsInterruptedAndKillsThem() async throws {
        let marker = "jrit\(UInt32.random(in: 0...UInt32.max))"
        let config = """
            jobs:
              long:
                shell: "exec sleep 300 # \(marker)"
                schedule: "* * * * * *"
            """
        let first = try DaemonHarness(config: config)
        let started = try await first.waitForLog("run started", "job=long")
        let pid = try #require(started.split(separator: " ").first { $0.hasPrefix("pid=") }.flatMap { Int32($0.dropFirst(4)) })
        let runID = try #require(started.split(separator: " ").first { $0.hasPrefix("run_id=") }.map { String($0.dropFirst(7)) })
        first.signal(SIGKILL)
        #expect(try await first.waitForExit() != 0)
        first.cleanUp(keepDirectory: true)
        // The run's process outlived the daemon.
        #expect(ProcessTable.entry(pid).map { !$0.isZombie } == true)
        let killedAt = Self.micros(Date())

        let second = try DaemonHarness(config: config, in: first.directory)
        defer { second.cleanUp() }
        try await second.waitForLog("runs were interrupted by the daemon's last stop", "runs=1")
        try await second.waitUntilReady()
        #expect(ProcessTable.entry(pid).map { !$0.isZombie } != true, "the interrupted run's process is still alive")
        let client = ControlClient(socketPath: second.socketPath)
        let detail = try await client.get("/v1/runs/\(runID)", as: RunDetail.self)
        #expect(detail.run.outcome == "interrupted")

        // No occurrence before the kill ran again: every occurrence appears once, and nothing the
        // second daemon started is scheduled before the kill.
        try await second.waitForLog("run started", "job=long")
        let rows = try await SQLiteShell.query(second.databasePath, "SELECT scheduled_at, queued_at FROM runs WHERE job = 'long'")
        let scheduled = rows.map { Int64($0[0])! }
        #expect(Set(scheduled).count == scheduled.count)
        let lateStarters = rows.filter { Int64($0[1])! > killedAt && Int64($0[0])! < killedAt - 1_000_000 }
        #expect(lateStarters.isEmpty, "re-run occurrences: \(lateStarters)")
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
                schedule: "* * * * *"
                catch_up: all
            """, in: first.directory)
        defer { second.cleanUp() }
        try await second.waitUntilReady()
        let rows = try await SQLiteShell.query(second.databasePath, "SELECT COUNT(*) FROM runs WHERE trigger = 'catch_up'")
        #expect(rows.first?.first == "0")
        let known = try await SQLiteShell.query(second.databasePath, "SELECT name FROM jobs")
        #expect(known.map { $0[0] } == ["fresh"])
    }

    @Test func reloadStormNeverLosesOrDoublesAnOccurrence() async throws {
        // Queue rather than skip: on a loaded machine a run may still be alive when the next
        // second comes, and every occurrence must run.
        let jobs = (1...50).map {
            "  steady\($0):\n    shell: \"true\"\n    schedule: \"* * * * * *\"\n    catch_up: all\n    overlap: queue\n    max_queue: 100\n"
        }.joined()
        func config(_ generation: Int) -> String {
            "daemon:\n  max_concurrent_runs: 64\njobs:\n" + jobs + "  edited:\n    shell: \"echo \(generation)\"\n"
        }
        let daemon = try DaemonHarness(config: config(0), logLevel: "warning")
        defer { daemon.cleanUp() }
        try await daemon.waitUntilReady()
        let stormStart = ContinuousClock.now
        var generation = 0
        while ContinuousClock.now - stormStart < .seconds(10) {
            generation += 1
            daemon.writeConfig(config(generation))
            daemon.signal(SIGHUP)
            try await Task.sleep(for: .milliseconds(50))  // the storm's own rhythm: 20 SIGHUPs a second
        }
        daemon.signal(SIGTERM)
        #expect(try await daemon.waitForExit() == 0)
        let rows = try await SQLiteShell.query(daemon.databasePath,
                                         "SELECT job, scheduled_at, outcome FROM runs WHERE job LIKE 'steady%' ORDER BY job, scheduled_at")
        let byJob = Dictionary(grouping: rows, by: { $0[0] })
        #expect(byJob.count == 50)
        for (job, runs) in byJob {
            let times = runs.map { Int64($0[1])! }
            #expect(Set(times).count == times.count, "\(job) ran an occurrence twice")
            #expect(zip(times, times.dropFirst()).allSatisfy { $1 - $0 == 1_000_000 }, "\(job) skipped an occurrence: \(times)")
            #expect(times.count >= 9, "\(job) ran only \(times.count) times")
            #expect(runs.allSatisfy { $0[2] == "succeeded" }, "\(job): \(runs.map { $0[2] })")
        }
        let generations = try await SQLiteShell.query(daemon.databasePath, "SELECT COUNT(*) FROM runs")
        #expect(Int(generations.first?.first ?? "0")! >= 450)
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
        let state = directory.file("state")
        try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true)
        #expect(mount("tmpfs", state, "tmpfs", 0, "size=4m") == 0)
        defer { umount2(state, Int32(MNT_DETACH)) }
        let daemon = try DaemonHarness(config: """
            daemon:
              history: { output_tail: 256KiB }
            jobs:
              tick:
                shell: "head -c 200000 /dev/zero | tr '\\\\0' x"
                schedule: "* * * * * *"
            """, in: directory, logLevel: "notice")
        defer { daemon.cleanUp() }
        try await daemon.waitForLog("run finished", "job=tick")
        let filler = state + "/filler"
        let fd = open(filler, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        let chunk = [UInt8](repeating: 0, count: 65_536)
        while chunk.withUnsafeBytes({ write(fd, $0.baseAddress, $0.count) }) > 0 {}
        close(fd)
        try await daemon.waitForLog("cannot write history, runs go on", "disk full")
        let status = try await ControlClient(socketPath: daemon.socketPath).get("/v1/status", as: StatusResponse.self)
        #expect(status.historyError == "disk full")
        _ = try await daemon.notify.waitFor("STATUS=history writes failing (disk full)")
        // Runs go on meanwhile.
        try await daemon.waitForLog("run finished", "job=tick", "outcome=succeeded")
        #expect(unlink(filler) == 0)
        try await daemon.waitForLog("history writes resumed")
        try await daemon.waitForLog("run finished", "job=tick")
        daemon.signal(SIGTERM)
        _ = try await daemon.waitForExit()
        let check = try await SQLiteShell.query(daemon.databasePath, "PRAGMA integrity_check")
        #expect(check.first?.first == "ok")
        let rows = try await SQLiteShell.query(daemon.databasePath, "SELECT scheduled_at FROM runs WHERE job = 'tick' ORDER BY scheduled_at")
        let times = rows.map { Int64($0[0])! }
        // Nothing was lost while the disk was full: every second is there once.
        #expect(zip(times, times.dropFirst()).allSatisfy { $1 - $0 == 1_000_000 }, "\(times)")
    }
}
