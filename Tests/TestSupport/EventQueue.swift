import Foundation
import Synchronization

/// A test waited longer than its limit for an event.
public struct TimeoutError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Events arriving from another thread (lines a process prints, datagrams on a socket),
/// waited for by tests with a time limit: the way tests wait for things without sleeping.
public final class EventQueue<Element: Sendable>: Sendable {
    private struct Waiter {
        var predicate: @Sendable (Element) -> Bool
        var continuation: CheckedContinuation<Element, any Error>
        /// A `first` waiter consumes the event (one of them gets it); a `seen` waiter does not
        /// (every one it satisfies gets it).
        var consumes: Bool
    }

    private struct State {
        var history: [Element] = []
        var cursor = 0
        var waiters: [UInt64: Waiter] = [:]
        var nextToken: UInt64 = 0
    }

    private let state = Mutex(State())

    public init() {}

    /// Adds an event (from any thread) and wakes the waiters it satisfies: the oldest `first`
    /// waiter, and every `seen` waiter.
    public func push(_ element: Element) {
        let resumed = state.withLock { state -> [CheckedContinuation<Element, any Error>] in
            state.history.append(element)
            var resumed: [CheckedContinuation<Element, any Error>] = []
            var consumed = false
            for (token, waiter) in state.waiters.sorted(by: { $0.key < $1.key }) where waiter.predicate(element) {
                if waiter.consumes {
                    if consumed { continue }
                    consumed = true
                    state.cursor = state.history.count
                }
                state.waiters.removeValue(forKey: token)
                resumed.append(waiter.continuation)
            }
            return resumed
        }
        for continuation in resumed { continuation.resume(returning: element) }
    }

    /// Everything received so far.
    public var all: [Element] { state.withLock { $0.history } }

    /// The first event after the cursor that satisfies `predicate` (consuming everything up to
    /// it), waiting up to `timeout` for it to arrive.
    public func first(
        within timeout: Duration = .seconds(10),
        _ what: String = "event",
        where predicate: @escaping @Sendable (Element) -> Bool
    ) async throws -> Element {
        let token = state.withLock { state -> UInt64 in
            state.nextToken += 1
            return state.nextToken
        }
        let timer = Task {
            try? await Task.sleep(for: timeout)
            let waiter = state.withLock { $0.waiters.removeValue(forKey: token) }
            let seen = all.suffix(20).map { "\($0)" }.joined(separator: "\n  ")
            waiter?.continuation.resume(throwing: TimeoutError("no \(what) within \(timeout); last events:\n  \(seen)"))
        }
        defer { timer.cancel() }
        return try await withCheckedThrowingContinuation { continuation in
            let ready = state.withLock { state -> Element? in
                while state.cursor < state.history.count {
                    let element = state.history[state.cursor]
                    state.cursor += 1
                    if predicate(element) { return element }
                }
                state.waiters[token] = Waiter(predicate: predicate, continuation: continuation, consumes: true)
                return nil
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }

    /// An event satisfying `predicate`, seen at any time (before or after the cursor), without
    /// moving the cursor: for events whose order is not fixed.
    public func seen(
        within timeout: Duration = .seconds(10),
        _ what: String = "event",
        where predicate: @escaping @Sendable (Element) -> Bool
    ) async throws -> Element {
        if let found = state.withLock({ $0.history.first(where: predicate) }) { return found }
        let token = state.withLock { state -> UInt64 in
            state.nextToken += 1
            return state.nextToken
        }
        let timer = Task {
            try? await Task.sleep(for: timeout)
            let waiter = state.withLock { $0.waiters.removeValue(forKey: token) }
            waiter?.continuation.resume(throwing: TimeoutError("no \(what) within \(timeout)"))
        }
        defer { timer.cancel() }
        return try await withCheckedThrowingContinuation { continuation in
            let ready = state.withLock { state -> Element? in
                if let found = state.history.first(where: predicate) { return found }
                state.waiters[token] = Waiter(predicate: predicate, continuation: continuation, consumes: false)
                return nil
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }

    /// The next event after the cursor, whatever it is.
    public func next(within timeout: Duration = .seconds(10)) async throws -> Element {
        try await first(within: timeout) { _ in true }
    }
}

/// Checks `condition` every `interval` until it holds, for state that has no event to wait on
/// (the process table, another process's files); throws after `timeout`.
public func poll(_ what: String, within timeout: Duration = .seconds(10), every interval: Duration = .milliseconds(20),
                 _ condition: () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while !(try await condition()) {
        guard ContinuousClock.now < deadline else { throw TimeoutError("\(what): not within \(timeout)") }
        try await Task.sleep(for: interval)
    }
}
