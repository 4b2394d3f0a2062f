import JobRunnerConfig
import JobRunnerCore
import JobRunnerSchedule
import ServiceLifecycle
import Synchronization
import TestSupport
import Testing

/// The scheduler as the executor of the machine's actions, with doubles for its ports: no
/// process, no database. What it must guarantee: a fire is journalled and flushed before its
/// run starts; every effect is awaited on drain; hooks follow sweeps; claims go through the
/// cluster.
@Suite(.timeLimit(.minutes(1))) struct SchedulerLoopTests {
    final class Rig: Sendable {
        let clock = ManualClock(now: Timestamp(rfc3339: "2026-01-01T10:30:00Z")!)
        let journal = RecordingJournal()
        let executor: ScriptedExecutor
        let registry = RunRegistry()
        let scheduler: Scheduler
        let group: ServiceGroup
        let task: Task<Void, Never>
        /// Runs whose start came before their fire was journalled and flushed.
        let unflushedStarts = RunIDs()

        init(_ jobs: [JobDefinition], maxConcurrentRuns: Int = 64, shutdownGrace: Duration = .seconds(30), cluster: FakeCluster? = nil) {
            let journal = self.journal
            let unflushed = self.unflushedStarts
            executor = ScriptedExecutor(clock: clock, onStart: { request in
                // The fire is on disk before its process exists.
                if !(journal.flushes > 0 && journal.fired.contains(request.id)) { unflushed.ids.withLock { $0.append(request.id) } }
            })
            let daemon = DaemonSettings(timeZone: .utc, maxConcurrentRuns: maxConcurrentRuns, shutdownGrace: shutdownGrace, pools: [:])
            scheduler = Scheduler(configuration: Configuration(path: "t.yaml", daemon: daemon, jobs: jobs), executor: executor,
                                  registry: registry, clock: clock, logger: testLogger, journal: journal, cluster: cluster)
            let group = ServiceGroup(configuration: .init(services: [scheduler], logger: testLogger))
            self.group = group
            task = Task { try? await group.run() }
        }

        func stop() async {
            await group.triggerGracefulShutdown()
            await task.value
            #expect(unflushedStarts.ids.withLock { $0 }.isEmpty, "runs started before their fire was flushed")
        }
    }

    @Test func aFireIsJournalledAndFlushedBeforeItsRunAndEndsInTheHistory() async throws {
        var definition = try job("tick", shell: "true", schedule: "* * * * *")
        definition.onSuccess = .shell("notify")
        let rig = Rig([definition])
        rig.clock.advance(to: Timestamp(rfc3339: "2026-01-01T10:31:00Z")!)
        let run = try await rig.executor.started.next()
        #expect(run.job.name == "tick")
        rig.executor.finish(run.id)
        // The hook runs after the sweep of the run's leftovers.
        _ = try await rig.executor.sweeps.first { $0 == run.id }
        #expect(try await rig.executor.hooks.next() == "on_success \(run.id)")
        let finished = try #require(await rig.registry.waitForEnd(run.id))
        #expect(finished.outcome == .succeeded)
        await rig.stop()
        #expect(rig.journal.finished.map(\.id) == [run.id])
        #expect(rig.journal.events.contains { if case .started(let id, _, _) = $0 { id == run.id } else { false } })
    }

    @Test func drainDropsWaitingFiresAndStopsRunsAfterTheGrace() async throws {
        let rig = Rig([try job("long", shell: "sleep", schedule: "* * * * *"), try job("second", shell: "true", schedule: "* * * * *")],
                      maxConcurrentRuns: 1, shutdownGrace: .seconds(5))
        rig.clock.advance(to: Timestamp(rfc3339: "2026-01-01T10:31:00Z")!)
        let run = try await rig.executor.started.next()
        let stopping = Task { await rig.stop() }
        // Waiting fires are dropped at once; the running one gets the grace, then its stop.
        try await poll("the waiting fire dropped") { rig.journal.finished.contains { $0.job == "second" && $0.outcome == .cancelled } }
        try await poll("the drain sleeping out its grace") { rig.clock.hasSleeper }
        rig.clock.advance(by: .seconds(6))
        await stopping.value
        let finished = rig.journal.finished
        #expect(finished.first { $0.id == run.id }?.outcome == .cancelled)
        #expect(rig.executor.started.all.count == 1, "nothing started while draining")
    }

    @Test func inAClusterFiresWaitForTheirClaim() async throws {
        let cluster = FakeCluster()
        cluster.answer { $0.job == "mine" ? .won(busyOn: nil) : .lost(to: "n2") }
        let rig = Rig([try job("mine", shell: "true", schedule: "* * * * *"), try job("theirs", shell: "true", schedule: "* * * * *")],
                      cluster: cluster)
        rig.clock.advance(to: Timestamp(rfc3339: "2026-01-01T10:31:00Z")!)
        let run = try await rig.executor.started.next()
        #expect(run.job.name == "mine")
        #expect(cluster.claims.flatMap { $0 }.map(\.job).sorted() == ["mine", "theirs"])
        rig.executor.finish(run.id)
        _ = await rig.registry.waitForEnd(run.id)
        await rig.stop()
        #expect(rig.executor.started.all.map(\.job.name) == ["mine"])
        #expect(!rig.journal.fired.isEmpty && rig.journal.events.allSatisfy { event in
            if case .fired(let record, _) = event { record.job == "mine" } else { true }
        })
    }

    @Test func aRunRefusedByTheClusterIsNotStartedAndItsClaimGoesBack() async throws {
        let cluster = FakeCluster()
        cluster.answerDispatch(.refused("this node's cluster lease ran out"))
        let rig = Rig([try job("mine", shell: "true", schedule: "* * * * *")], cluster: cluster)
        rig.clock.advance(to: Timestamp(rfc3339: "2026-01-01T10:31:00Z")!)
        try await poll("the fire") { !rig.journal.fired.isEmpty }
        let id = rig.journal.fired[0]
        let record = await rig.registry.waitForEnd(id)
        #expect(record?.outcome == .interrupted)
        #expect(cluster.dispatched == [id])
        #expect(cluster.releasedClaims == [ClaimRequest(job: "mine", occurrence: Timestamp(rfc3339: "2026-01-01T10:31:00Z")!)])
        await rig.stop()
        #expect(rig.executor.started.all.isEmpty, "a refused run never reaches the executor")
    }
}

/// Run ids collected from several tasks.
final class RunIDs: Sendable {
    let ids = Mutex<[RunID]>([])
}
