import JobRunnerCore

/// Splits a stream's bytes into lines, bounded: a line longer than the limit is delivered in
/// pieces, so no job can make the daemon buffer without end.
struct LineSplitter {
    let stream: OutputStreamKind
    let maximumLineLength: Int
    private var pending: [UInt8] = []

    init(stream: OutputStreamKind, maximumLineLength: Int = RunOutput.maximumLineLength) {
        self.stream = stream
        self.maximumLineLength = maximumLineLength
    }

    /// The complete lines (and over-long pieces) in `bytes`, keeping the rest for later.
    mutating func feed(_ bytes: UnsafeRawBufferPointer, into lines: inout [OutputLine]) {
        var start = 0
        for index in 0..<bytes.count where bytes[index] == UInt8(ascii: "\n") {
            pending.append(contentsOf: bytes[start..<index])
            flushPending(into: &lines)
            start = index + 1
        }
        if start < bytes.count {
            pending.append(contentsOf: bytes[start..<bytes.count])
        }
        while pending.count >= maximumLineLength {
            lines.append(OutputLine(stream: stream, text: String(decoding: pending.prefix(maximumLineLength), as: UTF8.self)))
            pending.removeFirst(maximumLineLength)
        }
    }

    /// The stream ended: the last line, if it had no newline.
    mutating func finish(into lines: inout [OutputLine]) {
        if !pending.isEmpty { flushPending(into: &lines) }
    }

    private mutating func flushPending(into lines: inout [OutputLine]) {
        var bytes = pending[...]
        if bytes.last == UInt8(ascii: "\r") { bytes = bytes.dropLast() }
        while bytes.count > maximumLineLength {
            lines.append(OutputLine(stream: stream, text: String(decoding: bytes.prefix(maximumLineLength), as: UTF8.self)))
            bytes = bytes.dropFirst(maximumLineLength)
        }
        lines.append(OutputLine(stream: stream, text: String(decoding: bytes, as: UTF8.self)))
        pending.removeAll(keepingCapacity: pending.count <= 4096)
    }
}
