import JobRunnerSupervision
import Foundation
import JobRunnerConfig
import JobRunnerCore
import JobRunnerSchedule
import Logging
import NIOPosix
import ServiceLifecycle
import TestSupport
import Testing

/// A scheduler on a manual clock, running real processes.
final class SchedulerHarness: Sendable {
    let clock: ManualClock
    let registry = RunRegistry()
    let changes = EventQueue<Int>()
    let scheduler: Scheduler
    let group: ServiceGroup
    let task: Task<Void, Never>

    init(jobs: [JobDefinition], start: String = "2026-01-01T10:30:00Z", maxConcurrentRuns: Int = 64,
         shutdownGrace: Duration = .zero, pools: [String: Int] = [:]) {
        let changes = self.changes
        let clock = ManualClock(now: Timestamp(rfc3339: start)!, onSleep: { changes.push(1) })
        self.clock = clock
        let daemon = DaemonSettings(timeZone: .utc, maxConcurrentRuns: maxConcurrentRuns, shutdownGrace: shutdownGrace, pools: pools)
        let supervisor = Supervisor(eventLoopGroup: MultiThreadedEventLoopGroup.singleton,
                                    environment: testEnvironment, logger: testLogger, wallClock: { clock.now() })
        let scheduler = Scheduler(configuration: Configuration(path: "test.yaml", daemon: daemon, jobs: jobs), executor: supervisor,
                                  registry: registry, clock: clock, logger: testLogger, onChange: { changes.push(0) })
        self.scheduler = scheduler
        let group = ServiceGroup(configuration: .init(services: [scheduler], logger: testLogger))
        self.group = group
        task = Task { try? await group.run() }
    }

    /// Waits until `condition` holds, re-checking it each time the engine reports a change or
    /// starts sleeping.
    func until(_ what: String, within timeout: Duration = .seconds(20), _ condition: @Sendable () async -> Bool) async throws {
        let deadline = ContinuousClock.now + timeout
        while !(await condition()) {
            let remaining = deadline - ContinuousClock.now
            guard remaining > .zero else { throw TimeoutError("\(what) did not happen within \(timeout)") }
            _ = try await changes.next(within: remaining)
        }
    }

    /// Finished records of a job, oldest first.
    func finished(_ job: String) -> [RunRecord] {
        registry.history().filter { $0.job == job }.reversed()
    }

    func stop() async {
        await group.triggerGracefulShutdown()
        await task.value
    }
}

@Suite(.timeLimit(.minutes(1))) struct SchedulerTests {
    static func at(_ text: String) -> Timestamp { Timestamp(rfc3339: text)! }

    @Test func cronJobFiresAtItsTime() async throws {
        let harness = SchedulerHarness(jobs: [try job("tick", shell: "true", schedule: "0 * * * *")])
        #expect(await harness.scheduler.jobState("tick")?.nextFire == Self.at("2026-01-01T11:00:00Z"))
        harness.clock.advance(to: Self.at("2026-01-01T11:00:00Z"))
        try await harness.until("first run") { harness.finished("tick").count == 1 }
        let run = try #require(harness.finished("tick").first)
        #expect(run.outcome == .succeeded)
        #expect(run.scheduledTime == Self.at("2026-01-01T11:00:00Z"))
        #expect(run.trigger == .schedule)
        #expect(await harness.scheduler.jobState("tick")?.nextFire == Self.at("2026-01-01T12:00:00Z"))
        await harness.stop()
    }

    @Test func overlappingFireIsSkipped() async throws {
        let marker = uniqueMarker()
        let harness = SchedulerHarness(jobs: [try job("long", shell: "exec sleep 300", schedule: "* * * * *", environment: ["JR_TEST_MARK": marker])],
                                       shutdownGrace: .seconds(30))
        harness.clock.advance(to: Self.at("2026-01-01T10:31:00Z"))
        try await harness.until("run started") { harness.registry.runningCount == 1 }
        harness.clock.advance(to: Self.at("2026-01-01T10:32:00Z"))
        try await harness.until("skip recorded") { harness.finished("long").count == 1 }
        let skipped = try #require(harness.finished("long").first)
        #expect(skipped.outcome == .skipped(reason: "previous run still running"))
        #expect(skipped.scheduledTime == Self.at("2026-01-01T10:32:00Z"))
        // Shutdown with the run still going: after shutdown_grace it is torn down.
        let stopping = Task { await harness.stop() }
        try await harness.until("draining") {
            await harness.scheduler.summary().state == .draining && harness.clock.hasSleeper
        }
        harness.clock.advance(by: .seconds(31))
        await stopping.value
        #expect(harness.finished("long").last?.outcome == .cancelled)
        #expect(marked(marker).isEmpty, "left behind: \(marked(marker))")
    }

    @Test func concurrencyLimitQueuesInFireOrder() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let release = directory.file("release")
        let harness = SchedulerHarness(
            jobs: [
                try job("first", shell: "while [ ! -e \(release) ]; do sleep 0.02; done", schedule: "* * * * *"),
                try job("second", shell: "true", schedule: "* * * * *"),
                try job("third", shell: "true", schedule: "* * * * *"),
            ],
            maxConcurrentRuns: 1)
        harness.clock.advance(to: Self.at("2026-01-01T10:31:00Z"))
        try await harness.until("one running, two waiting") {
            harness.registry.runningCount == 1 && harness.registry.waitingCount == 2
        }
        let waiting = harness.registry.active().filter { $0.phase == .waiting }.map(\.job)
        #expect(waiting == ["second", "third"])
        #expect(FileManager.default.createFile(atPath: release, contents: nil))
        try await harness.until("all finished") { harness.registry.history().count == 3 }
        let order = harness.registry.history().reversed().map(\.job)
        #expect(order == ["first", "second", "third"])
        let starts = harness.registry.history().reversed().compactMap(\.startedAt)
        #expect(starts == starts.sorted())
        await harness.stop()
    }

    @Test func clockStepBackwardsNeverRepeatsAnOccurrence() async throws {
        let harness = SchedulerHarness(jobs: [try job("hourly", shell: "true", schedule: "0 * * * *")])
        harness.clock.advance(to: Self.at("2026-01-01T11:00:00Z"))
        try await harness.until("11:00 ran") { harness.finished("hourly").count == 1 }
        // NTP steps the clock back an hour: 11:00 comes round again but must not run again.
        harness.clock.setWallClock(Self.at("2026-01-01T10:05:00Z"))
        harness.clock.advance(to: Self.at("2026-01-01T11:30:00Z"))
        #expect(await harness.scheduler.jobState("hourly")?.nextFire == Self.at("2026-01-01T12:00:00Z"))
        harness.clock.advance(to: Self.at("2026-01-01T12:00:00Z"))
        try await harness.until("12:00 ran") { harness.finished("hourly").count == 2 }
        #expect(harness.finished("hourly").map(\.scheduledTime) == [Self.at("2026-01-01T11:00:00Z"), Self.at("2026-01-01T12:00:00Z")])
        await harness.stop()
    }

    @Test func clockStepForwardRunsTheLatestMissedOccurrenceOnce() async throws {
        let harness = SchedulerHarness(jobs: [try job("hourly", shell: "true", schedule: "0 * * * *")])
        try await harness.until("asleep") { harness.clock.hasSleeper }
        // A step forward of a day (or a suspend): 24 occurrences passed; one run, for the latest.
        harness.clock.setWallClock(Self.at("2026-01-02T10:45:00Z"))
        try await harness.until("catch-up ran") { harness.finished("hourly").count == 1 }
        #expect(harness.finished("hourly").map(\.scheduledTime) == [Self.at("2026-01-02T10:00:00Z")])
        #expect(await harness.scheduler.jobState("hourly")?.nextFire == Self.at("2026-01-02T11:00:00Z"))
        await harness.stop()
    }

    @Test func intervalsFollowUptimeNotTheWallClock() async throws {
        let harness = SchedulerHarness(jobs: [try job("every", shell: "true", every: .seconds(60))])
        try await harness.until("asleep") { harness.clock.hasSleeper }
        // The wall clock jumps back a day; the interval is not affected.
        harness.clock.setWallClock(Self.at("2025-12-31T10:30:00Z"))
        harness.clock.advance(by: .seconds(60))
        try await harness.until("interval fired") { harness.finished("every").count == 1 }
        harness.clock.advance(by: .seconds(60))
        try await harness.until("interval fired again") { harness.finished("every").count == 2 }
        await harness.stop()
    }

    @Test func reloadAppliesByJobName() async throws {
        let harness = SchedulerHarness(jobs: [
            try job("same", shell: "true", every: .seconds(600)),
            try job("reschedule", shell: "true", schedule: "0 * * * *"),
            try job("recommand", shell: "true", schedule: "0 12 * * *"),
            try job("gone", shell: "true", schedule: "0 * * * *"),
        ])
        harness.clock.advance(by: .seconds(120))
        let sameBefore = await harness.scheduler.jobState("same")?.nextFire
        let recommandBefore = await harness.scheduler.jobState("recommand")?.nextFire
        let summary = await harness.scheduler.apply(Configuration(path: "test.yaml", daemon: DaemonSettings(timeZone: .utc, shutdownGrace: .zero), jobs: [
            try job("same", shell: "true", every: .seconds(600)),
            try job("reschedule", shell: "true", schedule: "30 * * * *"),
            try job("recommand", shell: "echo changed", schedule: "0 12 * * *"),
            try job("new", shell: "true", schedule: "0 0 * * *"),
        ]))
        #expect(summary.generation == 2)
        #expect(summary.added == ["new"])
        #expect(summary.changed == ["reschedule", "recommand"])
        #expect(summary.removed == ["gone"])
        #expect(await harness.scheduler.jobState("same")?.nextFire == sameBefore)
        #expect(await harness.scheduler.jobState("recommand")?.nextFire == recommandBefore)
        #expect(await harness.scheduler.jobState("reschedule")?.nextFire == Self.at("2026-01-01T11:30:00Z"))
        #expect(await harness.scheduler.jobState("gone") == nil)
        #expect(await harness.scheduler.jobState("new")?.nextFire == Self.at("2026-01-02T00:00:00Z"))
        await harness.stop()
    }

    @Test func startupJobsRunOnceAtStart() async throws {
        let harness = SchedulerHarness(jobs: [try job("boot", shell: "true", schedule: "@reboot")])
        try await harness.until("startup run") { harness.finished("boot").count == 1 }
        #expect(harness.finished("boot").first?.trigger == .startup)
        _ = await harness.scheduler.apply(Configuration(path: "t", daemon: DaemonSettings(timeZone: .utc, shutdownGrace: .zero),
                                                        jobs: [try job("boot", shell: "true", schedule: "@reboot")]))
        #expect(await harness.scheduler.jobState("boot")?.nextFire == nil)
        await harness.stop()
        #expect(harness.finished("boot").count == 1)
    }
}

@Suite(.timeLimit(.minutes(1))) struct JitterAndStartTests {
    static func at(_ text: String) -> Timestamp { Timestamp(rfc3339: text)! }

    @Test func randomDelayStaysInItsRangeAndVaries() throws {
        var definition = try job("jittery", shell: "true", schedule: "0 * * * *")
        definition.randomDelay = .seconds(600)
        var delays = Set<Int64>()
        for _ in 0..<50 {
            let delay = Scheduler.delay(for: definition, occurrence: nil, seed: 1)
            #expect(delay >= .zero && delay < .seconds(600))
            delays.insert(delay.wholeMicroseconds)
        }
        #expect(delays.count > 40)
    }

    @Test func fixedRandomDelayIsStablePerJobAndMachine() throws {
        var first = try job("fixed-a", shell: "true", schedule: "0 * * * *")
        first.randomDelay = .seconds(3600)
        first.fixedRandomDelay = true
        var second = first
        second.name = "fixed-b"
        let a1 = Scheduler.delay(for: first, occurrence: nil, seed: 42)
        #expect(Scheduler.delay(for: first, occurrence: nil, seed: 42) == a1)
        #expect(Scheduler.delay(for: second, occurrence: nil, seed: 42) != a1)
        #expect(Scheduler.delay(for: first, occurrence: nil, seed: 43) != a1)
        #expect(a1 < .seconds(3600))
    }

    @Test func delayedFireKeepsItsOccurrenceAsScheduledTime() async throws {
        var definition = try job("late", shell: "true", schedule: "0 * * * *")
        definition.randomDelay = .seconds(600)
        definition.fixedRandomDelay = true
        let harness = SchedulerHarness(jobs: [definition])
        let fireAt = try #require(await harness.scheduler.jobState("late")?.nextFire)
        #expect(fireAt >= Self.at("2026-01-01T11:00:00Z") && fireAt < Self.at("2026-01-01T11:10:00Z"))
        harness.clock.advance(to: fireAt)
        try await harness.until("delayed run") { harness.finished("late").count == 1 }
        #expect(harness.finished("late").first?.scheduledTime == Self.at("2026-01-01T11:00:00Z"))
        await harness.stop()
    }

    @Test func calendarJobsAndRunOnStart() async throws {
        var definition = try job("calendar", shell: "true")
        definition.trigger = .calendar([try calendarEvent("*-*-* 10:45:00")])
        definition.runOnStart = true
        let harness = SchedulerHarness(jobs: [definition])
        try await harness.until("startup run") { harness.finished("calendar").count == 1 }
        #expect(harness.finished("calendar").first?.trigger == .startup)
        #expect(await harness.scheduler.jobState("calendar")?.nextFire == Self.at("2026-01-01T10:45:00Z"))
        harness.clock.advance(to: Self.at("2026-01-01T10:45:00Z"))
        try await harness.until("calendar run") { harness.finished("calendar").count == 2 }
        #expect(harness.finished("calendar").last?.scheduledTime == Self.at("2026-01-01T10:45:00Z"))
        #expect(await harness.scheduler.upcoming(job: "calendar", count: 2) == [Self.at("2026-01-02T10:45:00Z"), Self.at("2026-01-03T10:45:00Z")])
        await harness.stop()
    }
}
