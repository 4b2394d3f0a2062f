import JobRunnerSchedule
import JobRunnerConfig
import JobRunnerCore
import CLinuxSupport
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Every run's `NOTIFY_SOCKET`, read by one thread of its own.
///
/// A run's socket is a datagram socket in the abstract unix namespace (`@jobrunner/<daemon
/// pid>/<n>-<run id>`): no file, no directory, nothing to `chown` or to clean up after a crash —
/// the kernel removes the name with the socket. Anyone on the machine could send to a name, so
/// every datagram carries its sender's credentials (`SO_PASSCRED`, filled in by the kernel) and
/// only those from the run's own uid or from root are read; the rest are dropped. Messages are
/// attributed by the socket they arrive on, so short-lived senders such as `systemd-notify`
/// cannot be misattributed.
///
/// The thread waits in `epoll_wait` with no timeout: with no run sending, it never wakes.
public final class NotifyHub: Sendable {
    /// The process-wide hub.
    public static let shared = NotifyHub()

    private struct Registration {
        var fd: Int32
        var allowedUID: uid_t
        var deliver: @Sendable ([NotifyMessage]) -> Void
    }

    private struct State {
        var registrations: [UInt64: Registration] = [:]
        var nextToken: UInt64 = 0
        var threadStarted = false
        var dropped = 0
    }

    private let state = Mutex(State())
    private let epoll: Int32

    private init() {
        epoll = jr_epoll_create()
    }

    /// How many datagrams were dropped because a sender was neither the run's user nor root.
    public var droppedDatagrams: Int { state.withLock { $0.dropped } }

    /// Opens a socket for one run; `deliver` gets the messages of each datagram read from a
    /// sender with uid `allowedUID` or 0. The endpoint closes the socket when it goes away.
    func open(runID: String, allowedUID: uid_t, deliver: @escaping @Sendable ([NotifyMessage]) -> Void) -> Result<NotifyEndpoint, SpawnError> {
        guard epoll >= 0 else { return .failure(SpawnError("notify socket: epoll is unavailable")) }
        let token = state.withLock { state -> UInt64 in
            state.nextToken += 1
            return state.nextToken
        }
        let name = "jobrunner/\(getpid())/\(token)-\(runID)"
        let bytes = Array(name.utf8)
        let fd = bytes.withUnsafeBufferPointer { buffer in
            buffer.withMemoryRebound(to: CChar.self) { jr_notify_socket($0.baseAddress, Int32($0.count)) }
        }
        guard fd >= 0 else { return .failure(SpawnError("notify socket @\(name): \(lastError())")) }
        let startThread = state.withLock { state -> Bool in
            state.registrations[token] = Registration(fd: fd, allowedUID: allowedUID, deliver: deliver)
            defer { state.threadStarted = true }
            return !state.threadStarted
        }
        guard jr_epoll_add(epoll, fd, token) == 0 else {
            let error = lastError()
            close(token)
            return .failure(SpawnError("notify socket @\(name): epoll: \(error)"))
        }
        if startThread { startDetachedThread(named: "jr-notify") { [self] in loop() } }
        return .success(NotifyEndpoint(token: token, path: "@" + name, hub: self))
    }

    /// Stops reading a run's socket and closes it. Under the lock, so the reader thread never
    /// reads a descriptor that is being closed (or reused).
    func close(_ token: UInt64) {
        state.withLock { state in
            guard let registration = state.registrations.removeValue(forKey: token) else { return }
            _ = jr_epoll_remove(epoll, registration.fd)
            Glibc.close(registration.fd)
        }
    }

    private func loop() {
        var tokens = [UInt64](repeating: 0, count: 64)
        var buffer = [UInt8](repeating: 0, count: NotifyMessage.maximumDatagram)
        while true {
            let count = tokens.withUnsafeMutableBufferPointer { jr_epoll_wait(epoll, $0.baseAddress, 64, -1) }
            guard count > 0 else { continue }
            for token in tokens[0..<Int(count)] {
                var datagrams: [[UInt8]] = []
                let deliver = state.withLock { state -> (@Sendable ([NotifyMessage]) -> Void)? in
                    guard let registration = state.registrations[token] else { return nil }
                    // At most 64 per wake-up: a flood of datagrams cannot hold the others up.
                    for _ in 0..<64 {
                        var uid: uid_t = 0
                        var pid: pid_t = 0
                        let length = buffer.withUnsafeMutableBytes { jr_notify_receive(registration.fd, $0.baseAddress, $0.count, &uid, &pid) }
                        guard length >= 0 else { break }
                        if uid == registration.allowedUID || uid == 0 {
                            datagrams.append(Array(buffer[0..<length]))
                        } else {
                            state.dropped += 1
                        }
                    }
                    return registration.deliver
                }
                guard let deliver, !datagrams.isEmpty else { continue }
                deliver(datagrams.flatMap { NotifyMessage.parse($0) })
            }
        }
    }
}

/// One run's notify socket: what `NOTIFY_SOCKET` names, open until this goes away.
struct NotifyEndpoint: ~Copyable {
    let token: UInt64
    /// `@jobrunner/…`: an abstract socket name, as sd_notify(3) reads it.
    let path: String
    let hub: NotifyHub

    deinit {
        hub.close(token)
    }
}
