import JobRunnerAPI
import CLinuxSupport

#if canImport(Glibc)
import Glibc
#endif

/// Why the control socket could not be set up.
public struct ControlSocketError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

/// Creates the listening unix socket of the control API.
public enum ControlSocket {
    /// Binds and listens on `path` with `mode` (0660 by default), owned by `group` if given.
    ///
    /// A socket file left by a crashed daemon is replaced; a path where a live daemon answers is
    /// an error, never taken over.
    @available(*, noasync, message: "blocking socket calls; call at start-up or from the thread pool")
    public static func listen(path: String, mode: mode_t = 0o660, group: gid_t? = nil, backlog: Int32 = SOMAXCONN) throws(ControlSocketError) -> Int32 {
        guard path.utf8.count < 108 else {
            throw ControlSocketError(message: "socket path '\(path)' is longer than 107 bytes")
        }
        let type = jr_file_type(path)
        if type >= 0 {
            guard jr_is_socket_type(type) != 0 else {
                throw ControlSocketError(message: "\(path) exists and is not a socket; not replacing it")
            }
            if isAnswering(path) {
                throw ControlSocketError(message: "another daemon is listening on \(path)")
            }
            unlink(path)
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { throw ControlSocketError(message: "socket: \(String(cString: strerror(errno)))") }
        var address = makeAddress(path)
        // Bind with a restrictive umask so the file never exists with wider permissions.
        let previousMask = umask(0o177)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        umask(previousMask)
        guard bound == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw ControlSocketError(message: "cannot bind \(path): \(reason)")
        }
        if let group, chown(path, uid_t.max, group) != 0 {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw ControlSocketError(message: "cannot give \(path) to group \(group): \(reason)")
        }
        guard chmod(path, mode) == 0, Glibc.listen(fd, backlog) == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw ControlSocketError(message: "cannot listen on \(path): \(reason)")
        }
        return fd
    }

    /// A listening TCP socket (for the read-only metrics listener).
    @available(*, noasync, message: "blocking socket calls; call at start-up or from the thread pool")
    public static func listenTCP(host: String, port: Int) throws(ControlSocketError) -> Int32 {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_PASSIVE | AI_NUMERICHOST
        var result: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &result) == 0, let info = result else {
            throw ControlSocketError(message: "'\(host)' is not a numeric address")
        }
        defer { freeaddrinfo(result) }
        let fd = socket(info.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else { throw ControlSocketError(message: "socket: \(String(cString: strerror(errno)))") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        guard Glibc.bind(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0, Glibc.listen(fd, 128) == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw ControlSocketError(message: "cannot listen on \(host):\(port): \(reason)")
        }
        return fd
    }

    /// Whether something accepts connections on the socket at `path`.
    static func isAnswering(_ path: String) -> Bool {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = makeAddress(path)
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        return rc == 0
    }

    static func makeAddress(_ path: String) -> sockaddr_un {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            for (index, byte) in path.utf8.enumerated() where index < buffer.count - 1 {
                buffer[index] = byte
            }
        }
        return address
    }

    /// The uid, gid and pid of the process at the other end of a connected unix socket.
    public static func peerCredentials(fd: Int32) -> (pid: Int32, uid: UInt32, gid: UInt32)? {
        var pid: pid_t = 0
        var uid: uid_t = 0
        var gid: gid_t = 0
        guard jr_peer_credentials(fd, &pid, &uid, &gid) == 0 else { return nil }
        return (pid, uid, gid)
    }
}
