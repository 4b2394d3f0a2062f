import Synchronization

/// A single-consumer queue of events whose `next()` ignores task cancellation.
///
/// A run's supervision must keep receiving events (the process exiting, the grace period
/// ending) after its task has been cancelled, because cancellation is what starts the teardown.
package final class Mailbox<Event: Sendable>: Sendable {
    private struct State {
        var queue: [Event] = []
        var head = 0
        var waiter: CheckedContinuation<Event, Never>?
    }

    private let state = Mutex(State())

    package init() {}

    /// Delivers an event to the waiting consumer, or queues it.
    package func post(_ event: Event) {
        let waiter = state.withLock { state -> CheckedContinuation<Event, Never>? in
            if let waiter = state.waiter {
                state.waiter = nil
                return waiter
            }
            state.queue.append(event)
            return nil
        }
        waiter?.resume(returning: event)
    }

    /// The next event, waiting for one if none is queued.
    package func next() async -> Event {
        await withCheckedContinuation { continuation in
            let ready = state.withLock { state -> Event? in
                if state.head < state.queue.count {
                    let event = state.queue[state.head]
                    state.head += 1
                    if state.head == state.queue.count {
                        state.queue.removeAll(keepingCapacity: true)
                        state.head = 0
                    }
                    return event
                }
                precondition(state.waiter == nil, "Mailbox has a single consumer")
                state.waiter = continuation
                return nil
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }
}
