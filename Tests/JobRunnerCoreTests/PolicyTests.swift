import JobRunnerSupervision
import Foundation
import Synchronization
import JobRunnerConfig
import JobRunnerCore
import JobRunnerSchedule
import TestSupport
import Testing

/// Overlap policies, pools and retries, with real processes on a manual clock.
@Suite(.timeLimit(.minutes(1))) struct PolicyTests {
    static func at(_ text: String) -> Timestamp { Timestamp(rfc3339: text)! }
    static let minute1 = at("2026-01-01T10:31:00Z")
    static let minute2 = at("2026-01-01T10:32:00Z")
    static let minute3 = at("2026-01-01T10:33:00Z")

    /// A job that runs until `release` exists.
    func blocking(_ name: String, release: String, marker: String, overlap: OverlapPolicy = .skip, pool: String? = nil) throws -> JobDefinition {
        var definition = try job(name, shell: "while [ ! -e \(release) ]; do sleep 0.02; done", schedule: "* * * * *",
                                 environment: ["JR_TEST_MARK": marker])
        definition.overlap = overlap
        definition.pool = pool
        return definition
    }

    @Test func queueKeepsOneFireAndSkipsTheNext() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let release = directory.file("release")
        let harness = SchedulerHarness(jobs: [try blocking("q", release: release, marker: uniqueMarker(), overlap: .queue(max: 1))])
        harness.clock.advance(to: Self.minute1)
        try await harness.until("first running") { harness.registry.runningCount == 1 }
        harness.clock.advance(to: Self.minute2)
        try await harness.until("second queued") { harness.registry.waitingCount == 1 }
        #expect(harness.registry.active().first { $0.phase == .waiting }?.waitingFor == "the previous run")
        harness.clock.advance(to: Self.minute3)
        try await harness.until("third skipped") { harness.finished("q").count == 1 }
        #expect(harness.finished("q").first?.outcome == .skipped(reason: "queue full (max_queue 1)"))
        #expect(FileManager.default.createFile(atPath: release, contents: nil))
        try await harness.until("both ran") { harness.finished("q").count == 3 }
        let outcomes = harness.finished("q").map(\.outcome)
        #expect(outcomes == [.skipped(reason: "queue full (max_queue 1)"), .succeeded, .succeeded])
        // In fire order: the queued fire (10:32) ran after the first (10:31).
        let ran = harness.finished("q").filter { $0.outcome == .succeeded }
        #expect(ran.map(\.scheduledTime) == [Self.minute1, Self.minute2])
        #expect(ran[0].endedAt! <= ran[1].startedAt!)
        await harness.stop()
    }

    @Test func replaceCancelsTheRunningRunThenStarts() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let marker = uniqueMarker()
        let harness = SchedulerHarness(jobs: [try blocking("r", release: directory.file("never"), marker: marker, overlap: .replace)])
        harness.clock.advance(to: Self.minute1)
        try await harness.until("first running") { harness.registry.runningCount == 1 }
        harness.clock.advance(to: Self.minute2)
        try await harness.until("first cancelled, second running") {
            harness.finished("r").count == 1 && harness.registry.runningCount == 1
        }
        let first = try #require(harness.finished("r").first)
        #expect(first.outcome == .cancelled)
        #expect(first.scheduledTime == Self.minute1)
        let second = try #require(harness.registry.active(job: "r").first)
        #expect(second.scheduledTime == Self.minute2)
        #expect(second.startedAt! >= first.endedAt!)
        await harness.stop()
        #expect(marked(marker).isEmpty, "left behind: \(marked(marker))")
    }

    @Test func allowRunsSideBySideUpToMaxInstances() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let release = directory.file("release")
        let marker = uniqueMarker()
        let harness = SchedulerHarness(jobs: [try blocking("a", release: release, marker: marker, overlap: .allow(maxInstances: 2))])
        harness.clock.advance(to: Self.minute1)
        try await harness.until("one running") { harness.registry.runningCount == 1 }
        harness.clock.advance(to: Self.minute2)
        try await harness.until("two running") { harness.registry.runningCount == 2 }
        harness.clock.advance(to: Self.minute3)
        try await harness.until("third skipped") { harness.finished("a").count == 1 }
        #expect(harness.finished("a").first?.outcome == .skipped(reason: "max_instances (2) reached"))
        // Two runs alive: two sessions (a run's session is its own), found by the marker.
        #expect(Set(marked(marker).map(\.session)).count == 2, "\(marked(marker))")
        #expect(FileManager.default.createFile(atPath: release, contents: nil))
        try await harness.until("both done") { harness.finished("a").count == 3 }
        await harness.stop()
    }

    @Test func poolOfTwoNeverRunsMoreThanTwo() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let release = directory.file("release")
        let marker = uniqueMarker()
        let jobs = try (1...5).map { try blocking("p\($0)", release: release, marker: marker, pool: "db") }
        let harness = SchedulerHarness(jobs: jobs, pools: ["db": 2])
        harness.clock.advance(to: Self.minute1)
        try await harness.until("two running, three waiting") {
            harness.registry.runningCount == 2 && harness.registry.waitingCount == 3
        }
        #expect(harness.registry.active().filter { $0.phase == .waiting }.allSatisfy { $0.waitingFor == "pool 'db'" })
        // Fire order: p1 and p2 took the pool's two slots.
        #expect(Set(harness.registry.active().filter { $0.phase == .running }.map(\.job)) == ["p1", "p2"])
        let alive = Set(marked(marker).map(\.session))
        #expect(alive.count == 2, "\(marked(marker))")
        // Release them: each change must still show at most two alive.
        #expect(FileManager.default.createFile(atPath: release, contents: nil))
        let maximum = Mutex(0)
        try await harness.until("all five done") {
            maximum.withLock { $0 = max($0, harness.registry.runningCount) }
            return harness.registry.history().count == 5
        }
        #expect(maximum.withLock { $0 } <= 2)
        await harness.stop()
    }

    @Test func retriesBackOffAndGiveUp() async throws {
        var definition = try job("flaky", shell: "exit 3", schedule: "0 * * * *")
        definition.retry = RetryPolicy(attempts: 3, backoff: .seconds(10), maxBackoff: .seconds(15), on: [.failure])
        let harness = SchedulerHarness(jobs: [definition])
        harness.clock.advance(to: Self.at("2026-01-01T11:00:00Z"))
        try await harness.until("first attempt failed and retry waits") {
            harness.finished("flaky").count == 1 && harness.registry.waitingCount == 1
        }
        let waiting = try #require(harness.registry.active(job: "flaky").first)
        #expect(waiting.attempt == 2)
        #expect(waiting.waitingFor == "retry backoff (10s)")
        // Not before the backoff: 9s later nothing has started.
        harness.clock.advance(by: .seconds(9))
        try await harness.until("asleep") { harness.clock.hasSleeper }
        #expect(harness.finished("flaky").count == 1)
        harness.clock.advance(by: .seconds(1))
        try await harness.until("second attempt failed") { harness.finished("flaky").count == 2 && harness.registry.waitingCount == 1 }
        // The second backoff doubles to 20s but is capped at max_backoff (15s).
        #expect(harness.registry.active(job: "flaky").first?.waitingFor == "retry backoff (15s)")
        harness.clock.advance(by: .seconds(15))
        try await harness.until("third attempt failed") { harness.finished("flaky").count == 3 }
        try await harness.until("no more retries") { harness.registry.active(job: "flaky").isEmpty }
        let attempts = harness.finished("flaky")
        #expect(attempts.map(\.attempt) == [1, 2, 3])
        #expect(Set(attempts.map(\.fireID)).count == 1)
        #expect(attempts.allSatisfy { $0.scheduledTime == Self.at("2026-01-01T11:00:00Z") })
        #expect(attempts.allSatisfy { $0.outcome == .failed(exitCode: 3) })
        let starts = attempts.compactMap(\.startedAt)
        #expect(starts[0].duration(to: starts[1]) >= .seconds(10))
        #expect(starts[1].duration(to: starts[2]) >= .seconds(15))
        await harness.stop()
    }

    @Test func cancelStopsARunAndItsRetries() async throws {
        var definition = try job("cancel-me", shell: "exit 1", schedule: "0 * * * *")
        definition.retry = RetryPolicy(attempts: 5, backoff: .seconds(60), on: [.failure])
        let harness = SchedulerHarness(jobs: [definition])
        harness.clock.advance(to: Self.at("2026-01-01T11:00:00Z"))
        try await harness.until("retry pending") { harness.finished("cancel-me").count == 1 && harness.registry.waitingCount == 1 }
        let first = try #require(harness.finished("cancel-me").first)
        guard case .dropped(let dropped) = await harness.scheduler.cancel(run: first.id) else {
            Issue.record("expected the pending retry to be dropped")
            return
        }
        #expect(dropped.attempt == 2)
        #expect(dropped.outcome == .cancelled)
        #expect(harness.registry.active(job: "cancel-me").isEmpty)
        if case .notFound = await harness.scheduler.cancel(run: RunID(rawValue: "nope")) {} else {
            Issue.record("expected notFound")
        }
        await harness.stop()
    }

    @Test func reloadRemovingAJobDropsItsWaitingFires() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let harness = SchedulerHarness(jobs: [
            try blocking("hog", release: directory.file("never"), marker: uniqueMarker()),
            try job("starved", shell: "true", schedule: "* * * * *"),
        ], maxConcurrentRuns: 1)
        harness.clock.advance(to: Self.minute1)
        try await harness.until("starved waits") { harness.registry.waitingCount == 1 }
        _ = await harness.scheduler.apply(Configuration(path: "t", daemon: DaemonSettings(timeZone: .utc, maxConcurrentRuns: 1, shutdownGrace: .zero),
                                                        jobs: [try blocking("hog", release: directory.file("never"), marker: uniqueMarker())]))
        #expect(harness.finished("starved").first?.outcome == .cancelled)
        #expect(harness.finished("starved").first?.statusText == "job removed by reload")
        #expect(harness.registry.runningCount == 1)
        await harness.stop()
    }
}
