import NIOCore
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
        var followers: [UInt64: AsyncStream<OutputLine>.Continuation] = [:]
        var nextFollower: UInt64 = 0
        var finished = false
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

    func append(_ line: OutputLine) {
        let followers = state.withLock { state -> [AsyncStream<OutputLine>.Continuation] in
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
            return Array(state.followers.values)
        }
        for follower in followers { follower.yield(line) }
    }

    /// The lines kept so far and every line printed from now on, until the run ends: what
    /// `logs -f` shows. Taken under one lock, so no line is missed or shown twice. A follower
    /// that reads slowly loses the oldest lines it has not read (at most 10,000 are buffered).
    public func follow() -> (kept: [OutputLine], more: AsyncStream<OutputLine>) {
        let (stream, continuation) = AsyncStream.makeStream(of: OutputLine.self, bufferingPolicy: .bufferingNewest(10_000))
        let kept = state.withLock { state -> [OutputLine] in
            if state.finished {
                continuation.finish()
            } else {
                state.nextFollower += 1
                let token = state.nextFollower
                state.followers[token] = continuation
                continuation.onTermination = { [weak self] _ in
                    _ = self?.state.withLock { $0.followers.removeValue(forKey: token) }
                }
            }
            return Array(state.lines[state.head...])
        }
        return (kept, stream)
    }

    /// The run has ended: followers see the end of the stream.
    public func finish() {
        let followers = state.withLock { state -> [AsyncStream<OutputLine>.Continuation] in
            state.finished = true
            defer { state.followers.removeAll() }
            return Array(state.followers.values)
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

/// Splits a pipe's bytes into lines, bounded: a line longer than the limit is delivered in
/// pieces, so no job can make the daemon buffer without end.
final class LineSplitter: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    private let stream: OutputStreamKind
    private let maximumLineLength: Int
    private let deliver: @Sendable (OutputLine) -> Void
    private var pending: [UInt8] = []

    init(stream: OutputStreamKind, maximumLineLength: Int, deliver: @escaping @Sendable (OutputLine) -> Void) {
        self.stream = stream
        self.maximumLineLength = maximumLineLength
        self.deliver = deliver
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        buffer.withUnsafeReadableBytes { bytes in
            var start = 0
            for index in 0..<bytes.count where bytes[index] == UInt8(ascii: "\n") {
                pending.append(contentsOf: bytes[start..<index])
                flushPending()
                start = index + 1
            }
            if start < bytes.count {
                pending.append(contentsOf: bytes[start..<bytes.count])
            }
        }
        while pending.count >= maximumLineLength {
            let piece = Array(pending.prefix(maximumLineLength))
            pending.removeFirst(maximumLineLength)
            deliver(OutputLine(stream: stream, text: String(decoding: piece, as: UTF8.self)))
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !pending.isEmpty { flushPending() }
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    private func flushPending() {
        var bytes = pending[...]
        if bytes.last == UInt8(ascii: "\r") { bytes = bytes.dropLast() }
        while bytes.count > maximumLineLength {
            deliver(OutputLine(stream: stream, text: String(decoding: bytes.prefix(maximumLineLength), as: UTF8.self)))
            bytes = bytes.dropFirst(maximumLineLength)
        }
        deliver(OutputLine(stream: stream, text: String(decoding: bytes, as: UTF8.self)))
        pending.removeAll(keepingCapacity: pending.count <= 4096)
    }
}

/// Limits on what is kept of a run's output.
public enum RunOutput {
    /// Longer lines are split into pieces of this many bytes.
    public static let maximumLineLength = 64 * 1024
    /// Default bytes of output kept per run for status.
    public static let defaultTailCapacity = 64 * 1024
}
