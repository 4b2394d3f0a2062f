import CLinuxSupport
import JobRunnerCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Every run's stdout and stderr pipes, read by one thread of its own in one epoll set: a run's
/// output costs two registrations, not two event-loop channels.
///
/// Lines (split at ``RunOutput/maximumLineLength``) go to each pipe's `deliver` in order, on
/// this thread; end of file calls `closed` once. A run that prints without end is read as fast
/// as `deliver` takes its lines (the pipe's own buffer is the only backlog), and at most 64 KiB
/// is read from one pipe before the others get their turn.
public final class OutputHub: Sendable {
    /// The process-wide hub.
    public static let shared = OutputHub()

    private struct Reader {
        var fd: Int32
        var splitter: LineSplitter
        var deliver: @Sendable ([OutputLine]) -> Void
        var closed: @Sendable () -> Void
    }

    private struct State {
        var readers: [UInt64: Reader] = [:]
        var nextToken: UInt64 = 0
        var threadStarted = false
    }

    private let state = Mutex(State())
    private let epoll: Int32

    private init() {
        epoll = jr_epoll_create()
    }

    /// Reads `fd` (which the hub owns and closes from here on) until end of file.
    func read(_ fd: Int32, stream: OutputStreamKind, deliver: @escaping @Sendable ([OutputLine]) -> Void,
              closed: @escaping @Sendable () -> Void) -> UInt64? {
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        let token = state.withLock { state -> UInt64 in
            state.nextToken += 1
            state.readers[state.nextToken] = Reader(fd: fd, splitter: LineSplitter(stream: stream), deliver: deliver, closed: closed)
            return state.nextToken
        }
        guard jr_epoll_add(epoll, fd, token) == 0 else {
            // Never read, so never closed: the caller counts no stream for a nil token (and
            // logs errno, the add's, kept across the removal).
            let error = errno
            _ = remove(token)
            errno = error
            return nil
        }
        // The thread starts with the first pipe actually in epoll (a failed first add leaves
        // it for the next one).
        let startThread = state.withLock { state -> Bool in
            defer { state.threadStarted = true }
            return !state.threadStarted
        }
        if startThread { startDetachedThread(named: "jr-output") { [self] in loop() } }
        return token
    }

    /// Stops reading a pipe before its end (something outside the run still holds it open) and
    /// closes it; its `closed` is called.
    func stop(_ token: UInt64) {
        remove(token)?.closed()
    }

    private func remove(_ token: UInt64) -> Reader? {
        state.withLock { state -> Reader? in
            guard let reader = state.readers.removeValue(forKey: token) else { return nil }
            _ = jr_epoll_remove(epoll, reader.fd)
            close(reader.fd)
            return reader
        }
    }

    /// Whether every writer of these pipes is gone (each still being read shows `POLLHUP`), so
    /// that each one's end of file is on its way without waiting on anyone outside the run: a
    /// run's exit then needs no drain deadline. A pipe already at its end counts as gone.
    func writersGone(_ tokens: [UInt64]) -> Bool {
        state.withLock { state in
            // Under the lock: a descriptor still registered is the run's own, never one reused.
            var polled = tokens.compactMap { state.readers[$0].map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) } }
            guard !polled.isEmpty else { return true }
            guard poll(&polled, nfds_t(polled.count), 0) == polled.count else { return false }
            return polled.allSatisfy { $0.revents & Int16(POLLHUP) != 0 }
        }
    }

    private func loop() {
        var tokens = [UInt64](repeating: 0, count: 64)
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            let count = tokens.withUnsafeMutableBufferPointer { jr_epoll_wait(epoll, $0.baseAddress, 64, -1) }
            guard count > 0 else { continue }
            for token in tokens[0..<Int(count)] {
                var lines: [OutputLine] = []
                // Read under the lock, so a `stop` never closes a descriptor being read (or reused).
                let (deliver, closed) = state.withLock { state -> ((@Sendable ([OutputLine]) -> Void)?, (@Sendable () -> Void)?) in
                    guard var reader = state.readers[token] else { return (nil, nil) }
                    let length = buffer.withUnsafeMutableBytes { Glibc.read(reader.fd, $0.baseAddress, $0.count) }
                    if length > 0 {
                        buffer.withUnsafeBytes { reader.splitter.feed(UnsafeRawBufferPointer(rebasing: $0[0..<length]), into: &lines) }
                        state.readers[token] = reader
                        return (reader.deliver, nil)
                    }
                    if length < 0 && (errno == EAGAIN || errno == EINTR) { return (nil, nil) }
                    // End of file (or a read error): the last line, then the end.
                    reader.splitter.finish(into: &lines)
                    state.readers.removeValue(forKey: token)
                    _ = jr_epoll_remove(epoll, reader.fd)
                    close(reader.fd)
                    return (reader.deliver, reader.closed)
                }
                if !lines.isEmpty { deliver?(lines) }
                closed?()
            }
        }
    }
}
