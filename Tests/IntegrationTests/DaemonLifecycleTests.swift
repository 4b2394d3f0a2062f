import Foundation
import JobRunnerAPI
import TestSupport
import Testing

/// The built `jobrunnerd`, started for real: notify protocol, signals, control socket.
@Suite(.timeLimit(.minutes(2))) struct DaemonLifecycleTests {
    static let twoJobs = """
        daemon:
          shutdown_grace: 5s
        jobs:
          hourly:
            command: ["/bin/true"]
            schedule: "0 * * * *"
          manual:
            shell: "echo hi"
        """

    @Test func notifyProtocolFromReadyToStopping() async throws {
        let daemon = try DaemonHarness(config: Self.twoJobs)
        defer { daemon.cleanUp() }
        let ready = try await daemon.notify.waitFor("READY=1")
        #expect(ready.contains("STATUS=2 jobs, 0 running, next: hourly at "))

        daemon.signal(SIGHUP)
        let reloading = try await daemon.notify.waitFor("RELOADING=1")
        let monotonic = reloading.split(separator: "\n").first { $0.hasPrefix("MONOTONIC_USEC=") }
        #expect(monotonic != nil)
        #expect(Int(monotonic?.dropFirst("MONOTONIC_USEC=".count) ?? "") ?? 0 > 0)
        let readyAgain = try await daemon.notify.waitFor("READY=1")
        #expect(readyAgain.contains("STATUS=2 jobs"))

        daemon.signal(SIGTERM)
        _ = try await daemon.notify.waitFor("STOPPING=1")
        #expect(try await daemon.waitForExit() == 0)
        #expect(!FileManager.default.fileExists(atPath: daemon.socketPath))
    }

    @Test func statusAndJobsOverTheRealSocket() async throws {
        let daemon = try DaemonHarness(config: Self.twoJobs)
        defer { daemon.cleanUp() }
        try await daemon.waitUntilReady()
        let client = ControlClient(socketPath: daemon.socketPath)

        let status = try await client.get("/v1/status", as: StatusResponse.self)
        #expect(status.pid == daemon.pid)
        #expect(status.state == "running")
        #expect(status.jobs == 2)
        #expect(status.config.path == daemon.configPath)
        #expect(status.config.generation == 1)
        #expect(status.nextFire?.job == "hourly")
        #expect(status.nextFire?.at.hasSuffix(":00:00Z") == true)

        let jobs = try await client.get("/v1/jobs", as: JobsResponse.self).jobs
        #expect(jobs.map(\.name) == ["hourly", "manual"])
        #expect(jobs[0].command == ["/bin/true"])
        #expect(jobs[0].schedule == "0 * * * *")
        #expect(jobs[1].shell == "echo hi")
        #expect(jobs[1].schedule == nil)
        #expect(jobs[1].nextFire == nil)

        let missing = try await client.request(.get, "/v1/jobs/nope")
        #expect(missing.status == 404)
        #expect(throws: ControlClientError.self) { try missing.decode(JobInfo.self) }

        // The socket is 0660.
        let attributes = try FileManager.default.attributesOfItem(atPath: daemon.socketPath)
        #expect((attributes[.posixPermissions] as? Int) == 0o660)
    }

    @Test func reloadAddsAJobAndABrokenFileKeepsTheOldOnes() async throws {
        let daemon = try DaemonHarness(config: Self.twoJobs)
        defer { daemon.cleanUp() }
        try await daemon.waitUntilReady()
        let client = ControlClient(socketPath: daemon.socketPath)

        daemon.writeConfig(Self.twoJobs + """

              added:
                command: ["/bin/true"]
                every: 1h
            """)
        daemon.signal(SIGHUP)
        _ = try await daemon.notify.waitFor("RELOADING=1")
        _ = try await daemon.notify.waitFor("READY=1")
        var jobs = try await client.get("/v1/jobs", as: JobsResponse.self).jobs
        #expect(jobs.map(\.name) == ["hourly", "manual", "added"])
        var status = try await client.get("/v1/status", as: StatusResponse.self)
        #expect(status.config.generation == 2)
        #expect(status.config.lastReload?.result == "ok")
        #expect(status.config.lastReload?.added == ["added"])

        daemon.writeConfig("jobs:\n  broken:\n    command: [\"/bin/true\"]\n    timeout: forever\n")
        daemon.signal(SIGHUP)
        _ = try await daemon.notify.waitFor("RELOADING=1")
        let ready = try await daemon.notify.waitFor("READY=1")
        #expect(ready.contains("STATUS=reload failed: "))
        #expect(ready.contains("jobrunner.yaml:4:14: job 'broken': timeout"))
        jobs = try await client.get("/v1/jobs", as: JobsResponse.self).jobs
        #expect(jobs.map(\.name) == ["hourly", "manual", "added"])
        status = try await client.get("/v1/status", as: StatusResponse.self)
        #expect(status.config.generation == 2)
        #expect(status.config.lastReload?.result == "failed")
        #expect(status.config.lastReload?.errors.first?.contains(":4:14:") == true)
        try await daemon.waitForLog("reload failed, keeping previous configuration")
        #expect(daemon.isRunning)
    }

    @Test func timedOutRunLeavesNoProcessBehind() async throws {
        let daemon = try DaemonHarness(config: """
            jobs:
              stubborn:
                shell: "sh -c 'trap \\"\\" TERM; exec sleep 300' & exec sleep 301"
                schedule: "@reboot"
                timeout: 3s
                kill_grace: 1s
            """)
        defer { daemon.cleanUp() }
        let (runID, leader) = try await daemon.started("stubborn")
        // Both processes, collected while the run is alive (the second may still be forking).
        try await poll("two processes carry the run's id") { ProcessTable.ofRun(runID).count == 2 }
        let collected = ProcessTable.ofRun(runID)
        try await daemon.waitForLog("run finished", "job=stubborn", "outcome=timed_out")
        let left = ProcessTable.leftovers(ofRun: runID, session: leader, collected: collected)
        #expect(left.isEmpty, "left behind: \(left)")
        let zombies = ProcessTable.descendants(of: daemon.pid).filter(\.isZombie)
        #expect(zombies.isEmpty, "zombies: \(zombies)")
    }

    @Test func sigtermDuringALongRunEndsItWithinGraceAndExitsZero() async throws {
        let daemon = try DaemonHarness(config: """
            daemon:
              shutdown_grace: 1s
            jobs:
              long:
                shell: "trap '' TERM; sleep 300"
                schedule: "@reboot"
                kill_grace: 1s
            """)
        defer { daemon.cleanUp() }
        let (runID, leader) = try await daemon.started("long")
        try await poll("the shell and its sleep carry the run's id") { ProcessTable.ofRun(runID).count == 2 }
        let collected = ProcessTable.ofRun(runID)
        let stopAt = ContinuousClock.now
        daemon.signal(SIGTERM)
        _ = try await daemon.notify.waitFor("STOPPING=1")
        #expect(try await daemon.waitForExit() == 0)
        // shutdown_grace (1s) + kill_grace (1s) + slack for a machine busy with the other
        // suites; the job itself ignores SIGTERM and would sleep for 300s.
        #expect(ContinuousClock.now - stopAt < .seconds(15))
        try await daemon.waitForLog("run finished", "job=long", "outcome=cancelled")
        let left = ProcessTable.leftovers(ofRun: runID, session: leader, collected: collected)
        #expect(left.isEmpty, "left behind: \(left)")
    }

    @Test func aSecondDaemonDoesNotHijackTheSocket() async throws {
        let daemon = try DaemonHarness(config: Self.twoJobs)
        defer { daemon.cleanUp() }
        try await daemon.waitUntilReady()
        let otherState = daemon.directory.file("other-state")
        let second = try await ChildProcess.run(
            productsDirectory + "/jobrunnerd",
            ["--config", daemon.configPath, "--state-directory", otherState, "--socket", daemon.socketPath], within: .seconds(20))
        #expect(second.status == 1)
        #expect(second.output.contains("another daemon is listening on \(daemon.socketPath)"))
        // The first daemon still answers.
        let status = try await ControlClient(socketPath: daemon.socketPath).get("/v1/status", as: StatusResponse.self)
        #expect(status.pid == daemon.pid)
    }

    @Test func aStateDirectoryInUseByAnotherDaemonIsRefused() async throws {
        let daemon = try DaemonHarness(config: Self.twoJobs)
        defer { daemon.cleanUp() }
        try await daemon.waitUntilReady()
        let second = try await ChildProcess.run(
            productsDirectory + "/jobrunnerd",
            ["--config", daemon.configPath, "--state-directory", daemon.stateDirectory,
             "--socket", daemon.directory.file("second.sock"), "--runtime-directory", daemon.directory.file("run2"),
             "--log-format", "text"], within: .seconds(20))
        #expect(second.status == 1)
        #expect(second.output.contains("another jobrunnerd is using the state directory \(daemon.stateDirectory)"), "\(second.output)")
        // It bound nothing and left the first alone.
        #expect(!FileManager.default.fileExists(atPath: daemon.directory.file("second.sock")))
        let status = try await ControlClient(socketPath: daemon.socketPath).get("/v1/status", as: StatusResponse.self)
        #expect(status.pid == daemon.pid)
    }

    @Test func sigtermRecordsWaitingFiresAsCancelledAndRunsNone() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let ledger = Ledger(path: directory.file("ledger"))
        let daemon = try DaemonHarness(config: """
            daemon:
              max_concurrent_runs: 1
              shutdown_grace: 1s
            jobs:
              long:
                shell: "exec sleep 300"
                schedule: "@reboot"
                kill_grace: 1s
              queued:
                shell: "\(ledger.append)"
                overlap: allow
                max_instances: 10
            """)
        defer { daemon.cleanUp() }
        _ = try await daemon.started("long")
        let client = ControlClient(socketPath: daemon.socketPath)
        var waiting: [String] = []
        for _ in 0..<3 {
            let run = try await client.request(.post, "/v1/jobs/queued/run").decode(RunInfo.self)
            #expect(run.state == "waiting")
            waiting.append(run.id)
        }
        daemon.signal(SIGTERM)
        #expect(try await daemon.waitForExit() == 0)
        let rows = try await SQLiteShell.query(daemon.databasePath, "SELECT id, outcome, started_at FROM runs WHERE job = 'queued'")
        #expect(Set(rows.map { $0[0] }) == Set(waiting))
        #expect(rows.allSatisfy { $0[1] == "cancelled" && $0[2].isEmpty }, "\(rows)")
        #expect(ledger.lines().isEmpty, "a waiting fire ran during shutdown: \(ledger.lines())")
    }
}
