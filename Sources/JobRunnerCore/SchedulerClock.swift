import CLinuxSupport
import JobRunnerSchedule
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

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

/// The real clocks: `CLOCK_REALTIME` through a timerfd armed with `TFD_TIMER_CANCEL_ON_SET`,
/// so a sleep ends exactly at its wall-clock deadline and also the moment someone sets the
/// clock; and `CLOCK_BOOTTIME` for intervals. Sleeping costs no wakeups.
public final class SystemClock: SchedulerClock {
    private struct Sleeper {
        var deadline: Timestamp?
        var continuation: CheckedContinuation<WakeReason, Never>
        var token: UInt64
    }

    private struct State {
        var sleeper: Sleeper?
        var nextToken: UInt64 = 0
        var cancelledTokens: Set<UInt64> = []
    }

    private let timer: Int32
    private let state = Mutex(State())

    /// Creates the clock and its timer thread.
    public init() {
        timer = jr_realtime_timer_create()
        precondition(timer >= 0, "timerfd_create failed: \(errno)")
        let fd = timer
        startDetachedThread { [self] in self.loop(fd) }
    }

    public func now() -> Timestamp {
        WallClock.now()
    }

    public func uptime() -> Duration {
        .microseconds(jr_boottime_microseconds())
    }

    public func sleep(until deadline: Timestamp?) async -> WakeReason {
        let token = state.withLock { state -> UInt64 in
            state.nextToken += 1
            return state.nextToken
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let cancelled = state.withLock { state -> Bool in
                    if state.cancelledTokens.remove(token) != nil { return true }
                    // One sleeper at a time: a newer sleep replaces (and wakes) an older one.
                    if let previous = state.sleeper {
                        previous.continuation.resume(returning: .interrupted)
                    }
                    state.sleeper = Sleeper(deadline: deadline, continuation: continuation, token: token)
                    arm(deadline)
                    return false
                }
                if cancelled { continuation.resume(returning: .interrupted) }
            }
        } onCancel: {
            let sleeper = state.withLock { state -> Sleeper? in
                guard let sleeper = state.sleeper, sleeper.token == token else {
                    state.cancelledTokens.insert(token)
                    return nil
                }
                state.sleeper = nil
                return sleeper
            }
            sleeper?.continuation.resume(returning: .interrupted)
        }
    }

    private func arm(_ deadline: Timestamp?) {
        // A deadline of nil means "no deadline": arm far in the future so a clock change still
        // cancels the timer and wakes the sleeper to recompute.
        let target = deadline?.microseconds ?? (jr_realtime_microseconds() + 365 * 86_400 * 1_000_000)
        _ = jr_realtime_timer_arm(timer, max(1, target))
    }

    private func loop(_ fd: Int32) {
        while true {
            let rc = jr_realtime_timer_wait(fd)
            if rc < 0 { continue }
            let reason: WakeReason = rc == 1 ? .clockChanged : .deadline
            let sleeper = state.withLock { state -> Sleeper? in
                guard let sleeper = state.sleeper else { return nil }
                if reason == .deadline, let deadline = sleeper.deadline, now() < deadline {
                    // A stale expiry from an earlier arming: keep sleeping.
                    arm(deadline)
                    return nil
                }
                state.sleeper = nil
                return sleeper
            }
            sleeper?.continuation.resume(returning: reason)
        }
    }
}

/// A clock that moves only when a test says so.
public final class ManualClock: SchedulerClock {
    private struct State {
        var now: Timestamp
        var uptime: Duration
        var sleepers: [UInt64: (deadline: Timestamp?, continuation: CheckedContinuation<WakeReason, Never>)] = [:]
        var nextToken: UInt64 = 0
        var cancelledTokens: Set<UInt64> = []
        var sleepCount = 0
    }

    private let state: Mutex<State>
    private let onSleep: @Sendable () -> Void

    /// A clock at `now`; `onSleep` is called each time something starts sleeping on it.
    public init(now: Timestamp, uptime: Duration = .seconds(1000), onSleep: @escaping @Sendable () -> Void = {}) {
        state = Mutex(State(now: now, uptime: uptime))
        self.onSleep = onSleep
    }

    public func now() -> Timestamp { state.withLock { $0.now } }
    public func uptime() -> Duration { state.withLock { $0.uptime } }

    /// How many sleeps have started (lets a test wait until the scheduler is idle).
    public var sleepCount: Int { state.withLock { $0.sleepCount } }

    /// Whether something is sleeping now.
    public var hasSleeper: Bool { state.withLock { !$0.sleepers.isEmpty } }

    /// The earliest deadline a sleeper waits for.
    public var nextDeadline: Timestamp? {
        state.withLock { $0.sleepers.values.compactMap(\.deadline).min() }
    }

    public func sleep(until deadline: Timestamp?) async -> WakeReason {
        let token = state.withLock { state -> UInt64 in
            state.nextToken += 1
            return state.nextToken
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let immediate = state.withLock { state -> WakeReason? in
                    if state.cancelledTokens.remove(token) != nil { return .interrupted }
                    state.sleepCount += 1
                    if let deadline, state.now >= deadline { return .deadline }
                    state.sleepers[token] = (deadline, continuation)
                    return nil
                }
                if let immediate {
                    continuation.resume(returning: immediate)
                } else {
                    onSleep()
                }
            }
        } onCancel: {
            let continuation = state.withLock { state -> CheckedContinuation<WakeReason, Never>? in
                guard let sleeper = state.sleepers.removeValue(forKey: token) else {
                    state.cancelledTokens.insert(token)
                    return nil
                }
                return sleeper.continuation
            }
            continuation?.resume(returning: .interrupted)
        }
    }

    /// Moves both clocks forward by `duration` and wakes sleepers whose deadline has come.
    public func advance(by duration: Duration) {
        let woken = state.withLock { state -> [CheckedContinuation<WakeReason, Never>] in
            state.now = state.now.advanced(by: duration)
            state.uptime += duration
            return Self.takeDue(&state)
        }
        woken.forEach { $0.resume(returning: .deadline) }
    }

    /// Moves both clocks to the wall-clock instant `instant` (forwards only).
    public func advance(to instant: Timestamp) {
        let delta = now().duration(to: instant)
        precondition(delta >= .zero, "advance(to:) only moves forwards; use setWallClock for steps")
        advance(by: delta)
    }

    /// Steps the wall clock (as settimeofday or an NTP step would), leaving uptime alone, and
    /// wakes every sleeper with `.clockChanged`.
    public func setWallClock(_ instant: Timestamp) {
        let woken = state.withLock { state -> [CheckedContinuation<WakeReason, Never>] in
            state.now = instant
            let all = state.sleepers.values.map(\.continuation)
            state.sleepers.removeAll()
            return all
        }
        woken.forEach { $0.resume(returning: .clockChanged) }
    }

    private static func takeDue(_ state: inout State) -> [CheckedContinuation<WakeReason, Never>] {
        let due = state.sleepers.filter { _, sleeper in sleeper.deadline.map { state.now >= $0 } ?? false }
        for token in due.keys { state.sleepers.removeValue(forKey: token) }
        return due.values.map(\.continuation)
    }
}

// MARK: - Threads

/// Starts a detached OS thread for a loop that blocks in a system call.
func startDetachedThread(_ body: @escaping @Sendable () -> Void) {
    final class Box: @unchecked Sendable {
        // Handed from the creating thread to the new thread once, never shared.
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }
    var attributes = pthread_attr_t()
    pthread_attr_init(&attributes)
    pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED))
    let box = Unmanaged.passRetained(Box(body))
    var handle = pthread_t()
    let rc = pthread_create(&handle, &attributes, { argument in
        let box = Unmanaged<Box>.fromOpaque(argument!).takeRetainedValue()
        box.body()
        return nil
    }, box.toOpaque())
    pthread_attr_destroy(&attributes)
    precondition(rc == 0, "cannot start a thread: \(rc)")
}

/// The wall clock, read directly (for code that has no `SchedulerClock`: stores, tools).
public enum WallClock {
    public static func now() -> Timestamp {
        Timestamp(microseconds: jr_realtime_microseconds())
    }
}
