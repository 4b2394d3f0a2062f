import JobRunnerSchedule
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
    /// When the daemon read it.
    public var at: Timestamp?
    /// The step that printed it, in a run made of steps.
    public var step: String?

    public init(stream: OutputStreamKind, text: String, at: Timestamp? = nil, step: String? = nil) {
        self.stream = stream
        self.text = text
        self.at = at
        self.step = step
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

/// What a follower of output receives.
public enum Followed<Line: Sendable & Hashable>: Sendable, Hashable {
    case line(Line)
    /// This many lines were printed while the follower was a budget behind, and not kept for it.
    case dropped(Int)
    /// Nothing was printed for a while (``OutputBroadcast/idleInterval``): whoever writes the
    /// stream to a client writes something, so a client that went away is noticed.
    case idle
}

/// A line a follower can hold: its size counts against the follower's budget.
public protocol FollowableLine: Sendable, Hashable {
    var heldBytes: Int { get }
}

extension OutputLine: FollowableLine {
    public var heldBytes: Int { text.utf8.count + 1 }
}

/// A line of some run's output, for a follower of every run.
public struct RunOutputLine: FollowableLine {
    public var job: String
    public var run: RunID
    public var line: OutputLine

    public init(job: String, run: RunID, line: OutputLine) {
        self.job = job
        self.run = run
        self.line = line
    }

    public var heldBytes: Int { line.heldBytes + job.utf8.count + 26 }
}

public typealias FollowEvent = Followed<OutputLine>
public typealias OutputFollower = Follower<OutputLine>

/// One follower of output: an async sequence of ``Followed`` lines with a byte budget. It ends
/// when the run ends; letting go of it (a client that went away) unregisters it.
public final class Follower<Line: FollowableLine>: AsyncSequence, Sendable {
    public typealias Element = Followed<Line>
    typealias FollowEvent = Followed<Line>

    /// Bytes of unread lines a follower may hold.
    public static var budget: Int { 1 << 20 }

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

    func offer(_ line: Line) {
        let waiter = state.withLock { state -> CheckedContinuation<FollowEvent?, Never>? in
            guard !state.finished else { return nil }
            if let waiter = state.waiter {
                state.waiter = nil
                return waiter
            }
            let size = line.heldBytes
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

    /// Tells a follower that has nothing waiting that the stream is idle.
    func offerIdle() {
        let waiter = state.withLock { state -> CheckedContinuation<Followed<Line>?, Never>? in
            guard !state.finished, state.head == state.events.count else { return nil }
            if let waiter = state.waiter {
                state.waiter = nil
                return waiter
            }
            state.events.append(.idle)
            return nil
        }
        waiter?.resume(returning: .idle)
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
                        if case .line(let line) = event { state.bytes -= line.heldBytes }
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
        let follower: Follower<Line>
        public mutating func next() async -> Followed<Line>? { await follower.next() }
    }

    public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(follower: self) }
}

/// Every run's output as it is printed, for `jobrunnerctl logs -f` without a run: followers
/// come and go; with none, publishing costs one atomic load. While any follows, each is told
/// every ``idleInterval`` that nothing was printed (so a writer notices a client that left);
/// at shutdown every follower's stream ends.
public final class OutputBroadcast: Sendable {
    private struct WeakFollower {
        weak var follower: Follower<RunOutputLine>?
    }

    private struct State {
        var next: UInt64 = 0
        var all: [UInt64: WeakFollower] = [:]
        /// The idle ticker while anyone follows: owned here, cancelled when the last follower
        /// goes or the daemon stops.
        var ticker: Task<Void, Never>?
        var finished = false
    }

    /// How often a follower hears that nothing was printed.
    public let idleInterval: Duration
    private let state = Mutex(State())
    private let count = Atomic<Int>(0)

    public init(idleInterval: Duration = .seconds(15)) {
        self.idleInterval = idleInterval
    }

    /// Every line printed from now on, by any run (a finished stream once the daemon stops).
    public func follow() -> Follower<RunOutputLine> {
        let follower = Follower<RunOutputLine>()
        state.withLock { state in
            guard !state.finished else { return }
            state.next += 1
            let token = state.next
            state.all[token] = WeakFollower(follower: follower)
            count.store(state.all.count, ordering: .relaxed)
            follower.onEnd = { [weak self] in
                guard let self else { return }
                self.state.withLock { state in
                    state.all.removeValue(forKey: token)
                    self.count.store(state.all.count, ordering: .relaxed)
                }
            }
            if state.ticker == nil {
                state.ticker = Task.detached { [weak self, idleInterval] in
                    while !Task.isCancelled {
                        try? await Pause.sleep(for: idleInterval)
                        guard let self, self.tick() else { return }
                    }
                }
            }
        }
        if state.withLock({ $0.finished }) { follower.finish() }
        return follower
    }

    /// One idle tick; false (and no more ticking) when nobody follows.
    private func tick() -> Bool {
        let current = state.withLock { state -> [Follower<RunOutputLine>]? in
            let alive = state.all.values.compactMap(\.follower)
            if alive.isEmpty || state.finished {
                state.ticker = nil
                return nil
            }
            return alive
        }
        guard let current else { return false }
        for follower in current { follower.offerIdle() }
        return true
    }

    public func publish(job: String, run: RunID, _ line: OutputLine) {
        guard count.load(ordering: .relaxed) > 0 else { return }
        let current = state.withLock { $0.all.values.compactMap(\.follower) }
        for follower in current { follower.offer(RunOutputLine(job: job, run: run, line: line)) }
    }

    /// The daemon is stopping: every follower's stream ends, and later ones end at once.
    public func finishAll() {
        let current = state.withLock { state -> [Follower<RunOutputLine>] in
            state.finished = true
            state.ticker?.cancel()
            state.ticker = nil
            return state.all.values.compactMap(\.follower)
        }
        for follower in current { follower.finish() }
    }
}

/// Limits on what is kept of a run's output.
public enum RunOutput {
    /// Longer lines are split into pieces of this many bytes.
    public static let maximumLineLength = 64 * 1024
    /// Default bytes of output kept per run for status.
    public static let defaultTailCapacity = 64 * 1024
}
