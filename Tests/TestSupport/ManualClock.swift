import JobRunnerCore
import JobRunnerSchedule
import Synchronization

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
