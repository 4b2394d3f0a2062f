import Synchronization

/// How the engine waits out a span of time that is not a schedule's: a retry's backoff, a
/// poll, a rate limit. (The scheduler's own sleep is its ``SchedulerClock``.)
///
/// `Task.sleep` always schedules its wakeup on libdispatch's global pool, whatever executor the
/// tasks run on, and once that pool has run a job, libdispatch wakes once a second for as long as
/// the process lives. The daemon runs its tasks on a pool of its own and installs a pause on its
/// event loops' timers (`Daemon.useOwnTaskPool`), so that pool never starts; everything else
/// (tests, tools) keeps `Task.sleep`.
public enum Pause {
    /// Waits for a duration; throws `CancellationError` when the waiting task is cancelled.
    public typealias Implementation = @Sendable (Duration) async throws -> Void

    private static let installed = Mutex<Implementation?>(nil)

    /// Makes `implementation` every later pause's. Call it once, at start-up.
    public static func install(_ implementation: @escaping Implementation) {
        installed.withLock { $0 = implementation }
    }

    /// Waits for `duration`; throws `CancellationError` when the task is cancelled first.
    public static func sleep(for duration: Duration) async throws {
        if let implementation = installed.withLock({ $0 }) {
            try await implementation(duration)
        } else {
            try await Task.sleep(for: duration)
        }
    }

    /// Waits until `instant` (at once when it has passed).
    public static func sleep(until instant: ContinuousClock.Instant) async throws {
        let left = instant - .now
        if left > .zero { try await sleep(for: left) } else { try Task.checkCancellation() }
    }
}
