import JobRunnerSupervision
import Foundation
import JobRunnerConfig
import JobRunnerCore
import JobRunnerSchedule
import NIOPosix
import ServiceLifecycle
import Synchronization
import TestSupport
import Testing

/// The scheduler never waits for the blocking pool: with the pool's only thread busy, runs still
/// start on time (their /proc sweeps queue behind the busy thread instead). The precise figure
/// is in the benchmark; this is a generous sanity bound.
@Suite(.timeLimit(.minutes(1))) struct ThreadPoolDisciplineTests {
    @Test func runsStartOnTimeWhileThePoolIsSaturated() async throws {
        _ = ChildReaper.becomeSubreaper()
        let pool = NIOThreadPool(numberOfThreads: 1)
        pool.start()
        let busy = Task { try? await pool.runIfActive { usleep(4_000_000) } }
        let clock = SystemClock()
        let supervisor = Supervisor(eventLoopGroup: MultiThreadedEventLoopGroup.singleton, blockingPool: pool, environment: testEnvironment, logger: testLogger,
                                    wallClock: { clock.now() })
        let registry = RunRegistry()
        let changes = EventQueue<Int>()
        let scheduler = Scheduler(
            configuration: Configuration(path: "t", daemon: DaemonSettings(timeZone: .utc, shutdownGrace: .zero),
                                         jobs: [try job("tick", shell: "true", every: .milliseconds(250))]),
            executor: supervisor, registry: registry, clock: clock, logger: testLogger, onChange: { changes.push(0) })
        let group = ServiceGroup(configuration: .init(services: [scheduler], logger: testLogger))
        let running = Task { try? await group.run() }
        _ = try await changes.first(within: .seconds(20), "five runs") { _ in
            registry.history().count { $0.outcome == .succeeded } >= 5
        }
        let runs = registry.history().filter { $0.outcome == .succeeded }
        let lateness = runs.compactMap { run in run.startedAt.map { run.scheduledTime.duration(to: $0) } }
        #expect(lateness.count >= 5)
        // Waiting for the pool would make runs seconds late (its thread is busy for 4 s); other
        // suites running beside this one on two cores can make one start 0.2 s late.
        #expect(lateness.allSatisfy { $0 < .seconds(1) }, "lateness: \(lateness)")
        // The pool really was busy the whole time.
        #expect(registry.history().count >= 5)
        await group.triggerGracefulShutdown()
        await running.value
        _ = await busy.value
        try await pool.shutdownGracefully()
    }
}
