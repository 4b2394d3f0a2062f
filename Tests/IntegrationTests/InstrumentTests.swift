import Foundation
import TestSupport
import Testing

/// The instruments the other suites measure with, tested against planted facts: a check that
/// cannot fail is a defect.
@Suite(.timeLimit(.minutes(1))) struct InstrumentTests {
    @Test func theLeftoverCheckFindsAPlantedLeftover() async throws {
        let runID = "planted\(UInt32.random(in: 0...UInt32.max))"
        // A process that left its parent's session and process group (as a double-forked
        // daemon does), with a run's id in its environment, and whose command line says
        // nothing about it.
        let planter = try await ChildProcess.run("/bin/sh", ["-c", "setsid -f /bin/sleep 300 > /dev/null 2>&1 < /dev/null"],
                                                 environment: ["JOBRUNNER_RUN_ID": runID, "PATH": "/usr/bin:/bin"])
        #expect(planter.status == 0)
        try await poll("the planted process") { !ProcessTable.ofRun(runID).isEmpty }
        let planted = ProcessTable.ofRun(runID)
        #expect(planted.count == 1)
        let leftover = try #require(planted.first)
        defer { kill(leftover.pid, SIGKILL) }
        #expect(!leftover.commandLine.contains(runID))
        // Found by each way the suites look: run id, session, collected pids.
        #expect(ProcessTable.inSession(leftover.session).map(\.pid) == [leftover.pid])
        #expect(ProcessTable.stillAlive(planted).map(\.pid) == [leftover.pid])
        #expect(ProcessTable.leftovers(ofRun: runID).map(\.pid) == [leftover.pid])
        #expect(ProcessTable.leftovers(ofRun: "other", session: leftover.session).map(\.pid) == [leftover.pid])
        #expect(ProcessTable.leftovers(ofRun: "other", collected: planted).map(\.pid) == [leftover.pid])
        // And no longer once it is dead.
        kill(leftover.pid, SIGKILL)
        try await ProcessTable.waitUntilGone(leftover.pid, within: .seconds(5))
        #expect(ProcessTable.leftovers(ofRun: runID, session: leftover.session, collected: planted).isEmpty)
    }

    @Test func theLedgerCountsDoublesAndMissingOccurrences() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let ledger = Ledger(path: directory.file("ledger"))
        directory.write("ledger", """
            tick 2026-12-01T10:00:00Z r1 a
            tick 2026-12-01T10:00:01Z r2 b
            tick 2026-12-01T10:00:01Z r3 a
            tick 2026-12-01T10:00:03.500000Z r4 -
            other 2026-12-01T10:00:02Z r5 -
            tick 2026-12-01T10:0
            """)
        let start = try #require(Ledger.micros(rfc3339: "2026-12-01T10:00:00Z")) / 1_000_000
        #expect(ledger.lines().count == 5, "the torn last line is not a line")
        let audit = ledger.audit(jobs: ["tick"], seconds: start...(start + 3))
        #expect(audit.missing == ["tick": [start + 2]])
        #expect(audit.doubled == ["tick": [start + 1: 2]])
        #expect(audit.counted == 4)
        #expect(!audit.isExact)
        let excused = ledger.audit(jobs: ["tick"], seconds: start...(start + 3), excused: ["tick": [start + 2]])
        #expect(excused.missingCount == 0)
        // Reconciled with the history: a line without a row, a succeeded row without a line.
        let rows: [(id: String, job: String, scheduledMicros: Int64, outcome: String)] = [
            ("r1", "tick", start * 1_000_000, "succeeded"),
            ("r2", "tick", (start + 1) * 1_000_000, "succeeded"),
            ("r4", "tick", (start + 3) * 1_000_000 + 500_000, "succeeded"),
            ("r9", "tick", (start + 2) * 1_000_000, "succeeded"),
        ]
        let problems = ledger.reconcile(with: rows, jobs: ["tick"])
        #expect(problems.count == 2, "\(problems)")
        #expect(problems.contains { $0.contains("no history row") && $0.contains("r3") })
        #expect(problems.contains { $0.contains("r9") })
    }
}
