import JobRunnerSchedule
import JobRunnerConfig
import JobRunnerCore
import NIOCore

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
