import Synchronization

/// Where the scheduler's loop learns what happened while it slept: events from its child tasks
/// (a run started or ended, a claim or a slot answered), a ring for work a call left in its
/// outbox, and the stop of a shutdown. Tiny synchronous state behind a lock; one waiter (the
/// loop) at a time.
final class Inbox: Sendable {
    private struct State {
        var events: [DispatchEvent] = []
        var rung = false
        var stopped = false
        var waiter: CheckedContinuation<Void, Never>?
        var cancelledWait = false
    }

    private let state = Mutex(State())

    /// Delivers an event (from any task).
    func post(_ event: DispatchEvent) {
        wake { $0.events.append(event) }
    }

    /// Says there is work in the outbox.
    func ring() {
        wake { $0.rung = true }
    }

    /// Graceful shutdown began: the loop stops firing.
    func stop() {
        wake { $0.stopped = true }
    }

    var isStopped: Bool { state.withLock { $0.stopped } }

    /// Whether nothing is waiting to be taken.
    var isEmpty: Bool { state.withLock { $0.events.isEmpty && !$0.rung } }

    /// Every event that arrived, oldest first (and clears a ring).
    func take() -> [DispatchEvent] {
        state.withLock { state in
            defer {
                state.events = []
                state.rung = false
            }
            return state.events
        }
    }

    /// Returns once something arrived (or, unless `ignoringStop`, the stop), or the calling task
    /// is cancelled.
    func wait(ignoringStop: Bool = false) async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let ready = state.withLock { state -> Bool in
                    if state.cancelledWait {
                        state.cancelledWait = false
                        return true
                    }
                    if !state.events.isEmpty || state.rung || (state.stopped && !ignoringStop) { return true }
                    precondition(state.waiter == nil, "the inbox has one waiter")
                    state.waiter = continuation
                    return false
                }
                if ready { continuation.resume() }
            }
        } onCancel: {
            let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
                guard let waiter = state.waiter else {
                    state.cancelledWait = true
                    return nil
                }
                state.waiter = nil
                return waiter
            }
            waiter?.resume()
        }
    }

    private func wake(_ change: (inout State) -> Void) {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            change(&state)
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }
}
