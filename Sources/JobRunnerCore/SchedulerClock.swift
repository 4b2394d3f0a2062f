import JobRunnerSchedule
import Synchronization


/// Why a clock sleep ended.
public enum WakeReason: Sendable, Hashable {
    /// The deadline was reached.
    case deadline
    /// The wall clock was set (stepped forwards or backwards): deadlines must be recomputed.
    case clockChanged
    /// The sleeping task was cancelled.
    case interrupted
}

/// The scheduler's view of time, injected so schedule behaviour can be tested exactly.
public protocol SchedulerClock: Sendable {
    /// The wall-clock time.
    func now() -> Timestamp
    /// Time since boot, counting suspend; never jumps.
    func uptime() -> Duration
    /// Sleeps until the wall clock reaches `deadline` (forever when nil), the wall clock is set,
    /// or the calling task is cancelled.
    func sleep(until deadline: Timestamp?) async -> WakeReason
}
