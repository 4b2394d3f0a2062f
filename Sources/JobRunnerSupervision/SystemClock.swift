import JobRunnerConfig
import CLinuxSupport
import JobRunnerCore
import JobRunnerSchedule
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

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
        startDetachedThread(named: "jr-clock") { [self] in self.loop(fd) }
    }

    public func now() -> Timestamp {
        Timestamp(microseconds: jr_realtime_microseconds())
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

// MARK: - Threads

/// Starts a detached OS thread for a loop that blocks in a system call, named `name` (at most
/// 15 bytes: what `top -H` and /proc/PID/task/TID/comm show).
package func startDetachedThread(named name: String, _ body: @escaping @Sendable () -> Void) {
    final class Box: @unchecked Sendable {
        // Handed from the creating thread to the new thread once, never shared.
        let name: String
        let body: @Sendable () -> Void
        init(_ name: String, _ body: @escaping @Sendable () -> Void) {
            self.name = name
            self.body = body
        }
    }
    var attributes = pthread_attr_t()
    pthread_attr_init(&attributes)
    pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED))
    let box = Unmanaged.passRetained(Box(name, body))
    var handle = pthread_t()
    let rc = pthread_create(&handle, &attributes, { argument in
        let box = Unmanaged<Box>.fromOpaque(argument!).takeRetainedValue()
        jr_name_current_thread(box.name)
        box.body()
        return nil
    }, box.toOpaque())
    pthread_attr_destroy(&attributes)
    precondition(rc == 0, "cannot start a thread: \(rc)")
}

/// Runs `body` on a new OS thread whose priority is `niceIncrement` below the caller's, and
/// waits for it. Threads started by `body` inherit that priority (Linux keeps nice per thread):
/// the blocking pool is started this way, so a reload parsing a big file or a sweep of /proc
/// yields the CPU to the threads that start runs on a busy machine.
package func onLowerPriorityThread(niceIncrement: Int32, _ body: @escaping @Sendable () -> Void) {
    final class Box: @unchecked Sendable {
        // Handed to the new thread once; the caller waits for it to end.
        let body: @Sendable () -> Void
        let niceIncrement: Int32
        init(_ body: @escaping @Sendable () -> Void, _ niceIncrement: Int32) {
            self.body = body
            self.niceIncrement = niceIncrement
        }
    }
    let box = Unmanaged.passRetained(Box(body, niceIncrement))
    var handle = pthread_t()
    let rc = pthread_create(&handle, nil, { argument in
        let box = Unmanaged<Box>.fromOpaque(argument!).takeRetainedValue()
        // `who` 0 with PRIO_PROCESS is the calling thread on Linux. Failing (a limit) leaves the
        // priority as it was: the pool still works.
        errno = 0
        let current = getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0)
        if errno == 0 { _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, current + box.niceIncrement) }
        box.body()
        return nil
    }, box.toOpaque())
    precondition(rc == 0, "cannot start a thread: \(rc)")
    pthread_join(handle, nil)
}
