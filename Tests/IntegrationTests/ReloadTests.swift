import Foundation
import Synchronization
import JobRunnerAPI
import TestSupport
import Testing

/// What a reload does to runs, retries and to SIGHUPs that arrive during one, counted in what
/// the jobs did.
@Suite(.timeLimit(.minutes(2))) struct ReloadTests {
    @Test func onReloadRestartStopsTheRunAndStartsTheNewDefinition() async throws {
        func config(_ version: Int) -> String {
            """
            jobs:
              server:
                shell: "exec sleep 300"
                schedule: "@reboot"
                on_reload: restart
                kill_grace: 1s
                environment: { VERSION: "\(version)" }
            """
        }
        let daemon = try DaemonHarness(config: config(1))
        defer { daemon.cleanUp() }
        let (oldRun, oldPID) = try await daemon.started("server")
        #expect(ProcessTable.environment(of: oldPID)?["VERSION"] == "1")
        daemon.writeConfig(config(2))
        daemon.signal(SIGHUP)
        try await daemon.waitForLog("restarting the run with the new definition", "job=server", "run_id=\(oldRun)")
        // The new run's start may be logged before the old run's end (both follow its exit), so
        // the end is looked for anywhere and the start after the restart line.
        try await daemon.sawLog("run finished", "job=server", "run_id=\(oldRun)", "outcome=cancelled")
        let (newRun, newPID) = try await daemon.started("server")
        #expect(newRun != oldRun)
        // The new process runs the new definition; nothing of the old run is left.
        #expect(ProcessTable.environment(of: newPID)?["VERSION"] == "2")
        #expect(ProcessTable.leftovers(ofRun: oldRun, session: oldPID).isEmpty)
        #expect(ProcessTable.ofRun(newRun).map(\.pid) == [newPID])
    }

    @Test func aReloadThatChangesAJobStopsItsPendingRetry() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let ledger = Ledger(path: directory.file("ledger"))
        func config(_ version: Int) -> String {
            """
            jobs:
              flaky:
                shell: "\(ledger.append); exit 3"
                retry: { attempts: 3, backoff: 20s }
                environment: { VERSION: "\(version)" }
              clock:
                shell: "\(ledger.append)"
                schedule: "* * * * * *"
            """
        }
        let daemon = try DaemonHarness(config: config(1))
        defer { daemon.cleanUp() }
        try await daemon.waitUntilReady()
        let client = ControlClient(socketPath: daemon.socketPath)
        let first = try await client.request(.post, "/v1/jobs/flaky/run").decode(RunInfo.self)
        try await daemon.waitForLog("retrying", "job=flaky", "attempt=2")
        let retry = try #require(try await client.get("/v1/runs?job=flaky", as: RunsResponse.self).runs.first { $0.attempt == 2 })
        #expect(retry.state == "waiting")
        daemon.writeConfig(config(2))
        daemon.signal(SIGHUP)
        _ = try await daemon.notify.waitFor("RELOADING=1")
        _ = try await daemon.notify.waitFor("READY=1")
        let dropped = try await client.get("/v1/runs/\(retry.id)", as: RunDetail.self).run
        #expect(dropped.outcome == "cancelled")
        #expect(dropped.statusText == "retry dropped: job changed by reload")
        // Past the backoff (seen in the lines of a job that ticks every second), no other
        // attempt of the fire ran. (The backoff is long enough that a loaded machine reloads
        // well within it.)
        let due = Int64(Date().timeIntervalSince1970) + 20
        try await poll("the clock past the retry's backoff", within: .seconds(40)) {
            ledger.lines().contains { $0.job == "clock" && $0.scheduledSecond > due + 1 }
        }
        let attempts = ledger.lines().filter { $0.job == "flaky" }
        #expect(attempts.map(\.runID) == [first.id], "\(attempts)")
        let runs = try await client.get("/v1/runs?job=flaky", as: RunsResponse.self).runs
        #expect(runs.count == 2, "\(runs.map { ($0.attempt, $0.outcome ?? "-") })")
    }

    @Test func sighupsDuringAReloadCoalesceAndTheLastFileWins() async throws {
        // A configuration big enough that a reload takes a while, so the SIGHUPs arrive during it.
        func config(_ version: Int) -> String {
            "jobs:\n" + (0..<4000).map { "  j\($0): { command: [\"/bin/true\"], schedule: \"\($0 % 60) 3 * * *\" }\n" }.joined()
                + "  edited: { shell: \"echo \(version)\" }\n"
        }
        let daemon = try DaemonHarness(config: config(0), logLevel: "notice")
        defer { daemon.cleanUp() }
        try await daemon.waitUntilReady()
        let client = ControlClient(socketPath: daemon.socketPath)
        daemon.writeConfig(config(1))
        for _ in 0..<20 { daemon.signal(SIGHUP) }
        // An API reload waits its turn behind them and names the generation it made.
        let result = try await client.request(.post, "/v1/reload").decode(ReloadResult.self)
        #expect(result.result == "ok")
        // 20 SIGHUPs, one reload at a time: the first, at most one more for the rest, then ours.
        #expect(result.generation >= 3 && result.generation <= 4, "generation \(result.generation) after 20 SIGHUPs")
        let reloadings = daemon.notify.messages.all.count { $0.contains("RELOADING=1") }
        #expect(reloadings >= 2 && reloadings <= 3, "\(reloadings) reloads for 20 SIGHUPs and one request")
        #expect(try await client.get("/v1/jobs/edited", as: JobInfo.self).shell == "echo 1")
    }

    @Test func concurrentReloadRequestsGoOneAtATimeAndTheLastFileWins() async throws {
        func config(_ version: Int) -> String {
            "jobs:\n" + (0..<1000).map { "  j\($0): { command: [\"/bin/true\"], schedule: \"\($0 % 60) 3 * * *\" }\n" }.joined()
                + "  edited: { shell: \"echo \(version)\" }\n"
        }
        let daemon = try DaemonHarness(config: config(0), logLevel: "notice")
        defer { daemon.cleanUp() }
        try await daemon.waitUntilReady()
        let client = ControlClient(socketPath: daemon.socketPath)
        let writes = Writes()
        // 20 clients at once, each writing a new version of the file, then asking for a reload.
        let answers = try await withThrowingTaskGroup(of: (sent: ContinuousClock.Instant, generation: Int, at: ContinuousClock.Instant).self) { group in
            for _ in 0..<20 {
                group.addTask {
                    writes.state.withLock { state in
                        state.next += 1
                        daemon.writeConfig(config(state.next))
                        state.last = state.next
                    }
                    let sent = ContinuousClock.now
                    let result = try await client.request(.post, "/v1/reload").decode(ReloadResult.self)
                    #expect(result.result == "ok", "\(result)")
                    return (sent, result.generation, ContinuousClock.now)
                }
            }
            var all: [(sent: ContinuousClock.Instant, generation: Int, at: ContinuousClock.Instant)] = []
            for try await answer in group { all.append(answer) }
            return all
        }
        #expect(answers.count == 20)
        // In order: a request sent after another was answered gets a generation no earlier.
        let outOfOrder = answers.flatMap { a in answers.filter { b in a.at < b.sent && a.generation > b.generation }.map { (a.generation, $0.generation) } }
        #expect(outOfOrder.isEmpty, "answered out of order: \(outOfOrder.prefix(3))")
        // One at a time: RELOADING=1 and READY=1 alternate.
        let protocolMessages = daemon.notify.messages.all.compactMap { message -> String? in
            message.contains("RELOADING=1") ? "reloading" : message.contains("READY=1") ? "ready" : nil
        }
        let reloadingCount = protocolMessages.count { $0 == "reloading" }
        #expect(zip(protocolMessages, protocolMessages.dropFirst()).allSatisfy { $0 != $1 }, "\(protocolMessages)")
        // Coalesced: no more reloads than requests, and the generations are those reloads.
        #expect(reloadingCount >= 1 && reloadingCount <= 20)
        #expect(answers.map(\.generation).max() == 1 + reloadingCount)
        // The file applied last is the one written last.
        let last = writes.state.withLock { $0.last }
        #expect(try await client.get("/v1/jobs/edited", as: JobInfo.self).shell == "echo \(last)")
    }
}

/// The versions of the file written so far, shared by the tasks writing them.
final class Writes: Sendable {
    let state = Mutex((next: 0, last: 0))
}
