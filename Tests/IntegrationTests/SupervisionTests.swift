import Foundation
import JobRunnerAPI
import TestSupport
import Testing

/// Run supervision through the real daemon: escaped processes, cancel over the API, output
/// limits, notify status, hooks.
@Suite(.timeLimit(.minutes(2))) struct SupervisionTests {
    @Test func aDoubleForkedDaemonIsFoundAndKilledAfterItsRun() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let escaped = directory.file("escaped")
        // The grandchild leaves the process group and the session (setsid), ignores SIGTERM,
        // writes its pid, and is re-parented to the daemon when the leader exits.
        let daemon = try DaemonHarness(config: """
            jobs:
              escape:
                shell: "setsid sh -c 'trap \\"\\" TERM HUP; echo $$ > \(escaped).new; mv \(escaped).new \(escaped); exec sleep 300' > /dev/null 2>&1 < /dev/null & while [ ! -e \(escaped) ]; do sleep 0.01; done"
                schedule: "@reboot"
            """)
        defer { daemon.cleanUp() }
        let (runID, leader) = try await daemon.started("escape")
        let finished = try await daemon.waitForLog("run finished", "job=escape", "outcome=succeeded")
        #expect(DaemonHarness.field("run_id", in: finished) == runID)
        let escapee = try #require(Int32(try String(contentsOfFile: escaped, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)))
        #expect(escapee != leader)
        let sweep = try await daemon.waitForLog("killed processes the run left outside its process group", "job=escape")
        // Each process once, though the sweep may see one again while it dies.
        #expect(DaemonHarness.field("pids", in: sweep) == "\(escapee)", "\(sweep)")
        // What the kernel says: nothing carries the run's id, the escapee's pid is gone, and
        // nothing is left in the leader's session.
        try await ProcessTable.waitUntilNone("the run's processes", within: .seconds(5)) {
            ProcessTable.leftovers(ofRun: runID, session: leader)
        }
        #expect(ProcessTable.entry(escapee).map { !$0.isZombie } != true, "escapee \(escapee) still alive")
        // No zombie is left among the daemon's children either (killed ones are reaped).
        let zombies = ProcessTable.all().filter { $0.parent == daemon.pid && $0.isZombie }
        #expect(zombies.isEmpty, "zombies: \(zombies)")
    }

    @Test func cancelOverTheAPI() async throws {
        let daemon = try DaemonHarness(config: """
            jobs:
              long:
                shell: "exec sleep 300"
                schedule: "@reboot"
                kill_grace: 2s
            """)
        defer { daemon.cleanUp() }
        let (runID, pid) = try await daemon.started("long")
        let alive = ProcessTable.ofRun(runID)
        #expect(alive.map(\.pid) == [pid], "the run's one process, found by its id: \(alive)")
        let client = ControlClient(socketPath: daemon.socketPath)
        let response = try await client.request(.post, "/v1/runs/\(runID)/cancel")
        #expect(response.status == 202)
        let cancel = try response.decode(CancelResponse.self)
        #expect(cancel.result == "stopping")
        try await daemon.waitForLog("run finished", "job=long", "outcome=cancelled")
        #expect(ProcessTable.leftovers(ofRun: runID, session: pid, collected: alive).isEmpty)
        let again = try await client.request(.post, "/v1/runs/\(runID)/cancel")
        #expect(again.status == 409)
        let unknown = try await client.request(.post, "/v1/runs/nope/cancel")
        #expect(unknown.status == 404)
        let detail = try await client.get("/v1/runs/\(runID)", as: RunDetail.self)
        #expect(detail.run.outcome == "cancelled")
    }

    @Test func largeOutputKeepsMemoryBoundedAndTheTailIsTheRealEnd() async throws {
        // 128 MiB in 100-byte lines; the last line says where it ended. The 1 GiB case is in
        // the torture suite.
        let daemon = try DaemonHarness(config: """
            jobs:
              loud:
                shell: "yes 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx' | head -c 134217728; echo; echo the very end"
                schedule: "@reboot"
            """, logLevel: "notice")
        defer { daemon.cleanUp() }
        try await daemon.waitUntilReady()
        let client = ControlClient(socketPath: daemon.socketPath)
        try await daemon.waitForLog("run finished", "job=loud", within: .seconds(90))
        let runs = try await client.get("/v1/runs?job=loud", as: RunsResponse.self).runs
        let run = try #require(runs.first)
        #expect(run.outcome == "succeeded")
        let detail = try await client.get("/v1/runs/\(run.id)", as: RunDetail.self)
        #expect(detail.output.last?.text == "the very end")
        let kept = detail.output.reduce(0) { $0 + $1.text.utf8.count + 1 }
        #expect(kept <= 64 * 1024)
        #expect(kept > 60 * 1024)
        let peak = try #require(daemon.peakResidentBytes)
        #expect(peak < 200 * 1024 * 1024, "peak RSS \(peak / 1024 / 1024) MiB")
    }

    @Test func notifyStatusShowsInTheAPIAndHooksRun() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let release = directory.file("release")
        let hookReport = directory.file("hook")
        let daemon = try DaemonHarness(config: """
            jobs:
              progress:
                shell: "systemd-notify --status=50%; while [ ! -e \(release) ]; do sleep 0.05; done; exit 2"
                schedule: "@reboot"
                on_failure: "env | grep ^JOBRUNNER_OUTCOME= > \(hookReport); cat >> \(hookReport)"
            """)
        defer { daemon.cleanUp() }
        try await daemon.waitForLog("run status", "status=50%")
        let client = ControlClient(socketPath: daemon.socketPath)
        let job = try await client.get("/v1/jobs/progress", as: JobInfo.self)
        #expect(job.active.first?.statusText == "50%")
        #expect(FileManager.default.createFile(atPath: release, contents: nil))
        try await daemon.waitForLog("hook finished", "job=progress", "hook=on_failure")
        let report = try String(contentsOfFile: hookReport, encoding: .utf8)
        #expect(report == "JOBRUNNER_OUTCOME=failed\n")
        let finished = try await client.get("/v1/jobs/progress", as: JobInfo.self)
        #expect(finished.lastRun?.statusText == "50%")
    }

    @Test func aRunGetsOnlyItsOwnDescriptorsAndTheDocumentedEnvironment() async throws {
        // The daemon is started as systemd starts it: with a watchdog, passed sockets' variables,
        // the journal's stream, and other variables of its own. None of it may reach a job.
        let daemon = try DaemonHarness(config: """
            jobs:
              probe:
                command: ["/bin/sleep", "300"]
                schedule: "@reboot"
                environment: { GIVEN: "by the job" }
            """, environment: ["WATCHDOG_USEC": "60000000", "LISTEN_FDS": "1", "LISTEN_PID": "1", "LISTEN_FDNAMES": "control",
                               "JOURNAL_STREAM": "8:12345", "INVOCATION_ID": "0123456789abcdef", "JOBRUNNER_TEST_SECRET": "must-not-leak",
                               "LANG": "C.UTF-8", "PATH": "/usr/bin:/bin"])
        defer { daemon.cleanUp() }
        let (runID, pid) = try await daemon.started("probe")
        // Descriptors: stdin /dev/null, stdout and stderr two pipes of their own, nothing else.
        let descriptors = try #require(ProcessTable.descriptors(of: pid))
        #expect(descriptors.keys.sorted() == [0, 1, 2], "\(descriptors)")
        #expect(descriptors[0] == "/dev/null")
        #expect(descriptors[1]?.hasPrefix("pipe:") == true && descriptors[2]?.hasPrefix("pipe:") == true, "\(descriptors)")
        #expect(descriptors[1] != descriptors[2])
        // Environment: exactly what the README lists.
        let environment = try #require(ProcessTable.environment(of: pid))
        #expect(Set(environment.keys) == ["PATH", "LANG", "GIVEN", "NOTIFY_SOCKET", "JOBRUNNER_JOB", "JOBRUNNER_RUN_ID",
                                          "JOBRUNNER_SCHEDULED_TIME", "JOBRUNNER_ATTEMPT"], "\(environment)")
        #expect(environment["JOBRUNNER_RUN_ID"] == runID)
        #expect(environment["PATH"] == "/usr/bin:/bin")
        // Its notify socket is its own, not the daemon's.
        #expect(environment["NOTIFY_SOCKET"] != daemon.notify.path)
        #expect(environment["NOTIFY_SOCKET"]?.contains(runID) == true, "\(environment["NOTIFY_SOCKET"] ?? "")")
        let cancel = try await ControlClient(socketPath: daemon.socketPath).request(.post, "/v1/runs/\(runID)/cancel")
        #expect(cancel.status == 202)
        try await daemon.waitForLog("run finished", "job=probe", "outcome=cancelled")
    }

    @Test func nothingAHookStartsOutlivesIt() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let escaped = directory.file("escaped")
        // The hook leaves a process in a session of its own behind and exits.
        let daemon = try DaemonHarness(config: """
            jobs:
              failing:
                shell: "exit 1"
                schedule: "@reboot"
                on_failure: "setsid sh -c 'echo $$ > \(escaped).new; mv \(escaped).new \(escaped); exec sleep 999' & while [ ! -e \(escaped) ]; do sleep 0.01; done"
            """)
        defer { daemon.cleanUp() }
        let (runID, _) = try await daemon.started("failing")
        try await daemon.waitForLog("hook finished", "job=failing", "hook=on_failure")
        let escapee = try #require(Int32(try String(contentsOfFile: escaped, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)))
        let sweep = try await daemon.waitForLog("killed processes the run left outside its process group", "job=failing")
        #expect(DaemonHarness.field("pids", in: sweep) == "\(escapee)")
        try await ProcessTable.waitUntilNone("the hook's processes", within: .seconds(5)) { ProcessTable.ofRun(runID) }
        #expect(ProcessTable.entry(escapee).map { !$0.isZombie } != true, "the hook's escapee \(escapee) is still alive")
    }
}
