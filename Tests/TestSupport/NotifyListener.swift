import Foundation
import Synchronization

/// A unix datagram socket standing in for systemd's `NOTIFY_SOCKET`: receives exactly what
/// `sd_notify` sends, one datagram per message.
public final class NotifyListener: @unchecked Sendable {
    // `fd` is written once in init. `close()` only shuts it down; the reader thread closes it after
    // its last `recv`, so the descriptor number can never be reused under a pending read.
    public let path: String
    public let messages = EventQueue<String>()
    /// Every message with the instant the reader thread received it (read by that thread, not
    /// by a test task that may be scheduled late).
    public let arrivals = EventQueue<Arrival>()
    private let fd: Int32

    public struct Arrival: Sendable {
        public var at: ContinuousClock.Instant
        public var text: String
    }

    public init(path: String) {
        self.path = path
        unlink(path)
        let socketFD = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        precondition(socketFD >= 0, "socket failed")
        fd = socketFD
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            for (index, byte) in path.utf8.enumerated() where index < buffer.count - 1 { buffer[index] = byte }
        }
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(socketFD, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        precondition(rc == 0, "bind \(path) failed: \(errno)")
        let messages = self.messages
        let arrivals = self.arrivals
        let thread = Thread {
            var buffer = [UInt8](repeating: 0, count: 65_536)
            while true {
                let count = buffer.withUnsafeMutableBytes { recv(socketFD, $0.baseAddress, $0.count, 0) }
                if count < 0 && errno == EINTR { continue }
                if count <= 0 {
                    Foundation.close(socketFD)
                    return
                }
                let text = String(decoding: buffer[0..<count], as: UTF8.self)
                arrivals.push(Arrival(at: .now, text: text))
                messages.push(text)
            }
        }
        thread.start()
    }

    /// The next message containing `text`.
    public func waitFor(_ text: String, within timeout: Duration = .seconds(20)) async throws -> String {
        try await messages.first(within: timeout, "notify message containing \(text)") { $0.contains(text) }
    }

    public func close() {
        closed.withLock { alreadyClosed in
            guard !alreadyClosed else { return }
            alreadyClosed = true
            shutdown(fd, Int32(SHUT_RDWR))
            unlink(path)
        }
    }

    private let closed = Mutex(false)
}
