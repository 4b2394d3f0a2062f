import Synchronization

/// Which output stream a line came from.
public enum OutputStreamKind: String, Sendable, Hashable, Codable {
    case stdout
    case stderr
}

/// One line a run printed (without its newline; split at ``RunOutput/maximumLineLength``).
public struct OutputLine: Sendable, Hashable {
    public var stream: OutputStreamKind
    public var text: String

    public init(stream: OutputStreamKind, text: String) {
        self.stream = stream
        self.text = text
    }
}

/// The last bytes a run printed, kept for status: a bounded ring of lines.
public final class OutputTail: Sendable {
    private struct State {
        var lines: [OutputLine] = []
        var head = 0
        var bytes = 0
        /// Held weakly: a follower whose client went away is gone, not kept until the run ends.
        var followers: [UInt64: WeakFollower] = [:]
        var nextFollower: UInt64 = 0
        var finished = false
    }

    private struct WeakFollower {
        weak var follower: OutputFollower?
    }

    /// The most bytes kept.
    public let capacity: Int
    private let state = Mutex(State())

    public init(capacity: Int) {
        self.capacity = capacity
    }

    /// A tail holding `lines` (as read back from the history).
    public convenience init(capacity: Int, lines: [OutputLine]) {
        self.init(capacity: capacity)
        for line in lines { append(line) }
    }

    package func append(_ line: OutputLine) {
        let followers = state.withLock { state -> [OutputFollower] in
            var line = line
            if line.text.utf8.count > capacity {
                line.text = String(decoding: line.text.utf8.suffix(capacity), as: UTF8.self)
            }
            state.lines.append(line)
            state.bytes += line.text.utf8.count + 1
            while state.bytes > capacity, state.head < state.lines.count {
                state.bytes -= state.lines[state.head].text.utf8.count + 1
                state.head += 1
            }
            if state.head > 64 && state.head * 2 > state.lines.count {
                state.lines.removeFirst(state.head)
                state.head = 0
            }
            return state.followers.values.compactMap(\.follower)
        }
        for follower in followers { follower.offer(line) }
    }

    /// The lines kept so far and every line printed from now on, until the run ends: what
    /// `logs -f` shows. Taken under one lock, so no line is missed or shown twice. A follower
    /// holds at most ``OutputFollower/budget`` bytes it has not read; lines beyond are dropped
    /// and it is told how many (`.dropped(n)`), so a client that stops reading costs the daemon
    /// a megabyte, never more.
    public func follow() -> (kept: [OutputLine], more: OutputFollower) {
        state.withLock { state in
            let follower = OutputFollower()
            if state.finished {
                follower.finish()
            } else {
                state.nextFollower += 1
                let token = state.nextFollower
                state.followers[token] = WeakFollower(follower: follower)
                follower.onEnd = { [weak self] in
                    _ = self?.state.withLock { $0.followers.removeValue(forKey: token) }
                }
            }
            return (Array(state.lines[state.head...]), follower)
        }
    }

    /// The run has ended: followers see the end of the stream.
    public func finish() {
        let followers = state.withLock { state -> [OutputFollower] in
            state.finished = true
            defer { state.followers.removeAll() }
            return state.followers.values.compactMap(\.follower)
        }
        for follower in followers { follower.finish() }
    }

    /// The kept lines, oldest first.
    public var lines: [OutputLine] {
        state.withLock { Array($0.lines[$0.head...]) }
    }

    /// The kept output as text, one line per line.
    public var text: String {
        lines.map { $0.text + "\n" }.joined()
    }
}

/// What a follower of a run's output receives.
public enum FollowEvent: Sendable, Hashable {
    case line(OutputLine)
    /// This many lines were printed while the follower was a budget behind, and not kept for it.
    case dropped(Int)
}

/// One follower of a run's output: an async sequence of ``FollowEvent``s with a byte budget.
/// It ends when the run ends; letting go of it (a client that went away) unregisters it.
public final class OutputFollower: AsyncSequence, Sendable {
    public typealias Element = FollowEvent

    /// Bytes of unread lines a follower may hold.
    public static let budget = 1 << 20

    private struct State {
        var events: [FollowEvent] = []
        var head = 0
        var bytes = 0
        var waiter: CheckedContinuation<FollowEvent?, Never>?
        var finished = false
        var onEnd: (@Sendable () -> Void)?
    }

    private let state = Mutex(State())

    init() {}

    var onEnd: (@Sendable () -> Void)? {
        get { state.withLock { $0.onEnd } }
        set { state.withLock { $0.onEnd = newValue } }
    }

    deinit {
        state.withLock { $0.onEnd }?()
    }

    func offer(_ line: OutputLine) {
        let waiter = state.withLock { state -> CheckedContinuation<FollowEvent?, Never>? in
            guard !state.finished else { return nil }
            if let waiter = state.waiter {
                state.waiter = nil
                return waiter
            }
            let size = line.text.utf8.count + 1
            if state.bytes + size > Self.budget {
                if case .dropped(let count) = state.events.last, state.events.count > state.head {
                    state.events[state.events.count - 1] = .dropped(count + 1)
                } else {
                    state.events.append(.dropped(1))
                }
            } else {
                state.events.append(.line(line))
                state.bytes += size
            }
            return nil
        }
        waiter?.resume(returning: .line(line))
    }

    func finish() {
        let (waiter, onEnd) = state.withLock { state -> (CheckedContinuation<FollowEvent?, Never>?, (@Sendable () -> Void)?) in
            state.finished = true
            defer { state.waiter = nil }
            return (state.waiter, state.onEnd)
        }
        waiter?.resume(returning: nil)
        onEnd?()
    }

    /// Unread bytes held now (for tests).
    var heldBytes: Int { state.withLock { $0.bytes } }

    func next() async -> FollowEvent? {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<FollowEvent?, Never>) in
                let ready = state.withLock { state -> FollowEvent?? in
                    if state.head < state.events.count {
                        let event = state.events[state.head]
                        state.head += 1
                        if case .line(let line) = event { state.bytes -= line.text.utf8.count + 1 }
                        if state.head == state.events.count {
                            state.events.removeAll(keepingCapacity: state.events.count < 1024)
                            state.head = 0
                        }
                        return .some(event)
                    }
                    if state.finished || Task.isCancelled { return .some(nil) }
                    state.waiter = continuation
                    return nil
                }
                if let ready { continuation.resume(returning: ready) }
            }
        } onCancel: {
            let waiter = state.withLock { state -> CheckedContinuation<FollowEvent?, Never>? in
                defer { state.waiter = nil }
                return state.waiter
            }
            waiter?.resume(returning: nil)
        }
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        let follower: OutputFollower
        public mutating func next() async -> FollowEvent? { await follower.next() }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(follower: self) }
}

/// Limits on what is kept of a run's output.
public enum RunOutput {
    /// Longer lines are split into pieces of this many bytes.
    public static let maximumLineLength = 64 * 1024
    /// Default bytes of output kept per run for status.
    public static let defaultTailCapacity = 64 * 1024
}
