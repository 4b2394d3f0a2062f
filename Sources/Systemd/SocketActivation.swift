import CSystemd

#if canImport(Glibc)
import Glibc
#endif

/// Sockets passed by systemd socket activation (`sd_listen_fds(3)`).
public enum SocketActivation {
    /// A socket passed by the service manager and its `FileDescriptorName=`.
    public struct PassedSocket: Sendable {
        public var descriptor: Int32
        public var name: String
    }

    /// Takes the passed sockets (once: the `LISTEN_*` variables are removed).
    public static func takeSockets() -> [PassedSocket] {
        var names: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?
        let count = sd_listen_fds_with_names(1, &names)
        guard count > 0 else { return [] }
        defer {
            if let names {
                for index in 0..<Int(count) { free(names[index]) }
                free(names)
            }
        }
        return (0..<Int(count)).map { index in
            let name = names?[index].map { String(cString: $0) } ?? "unknown"
            return PassedSocket(descriptor: SD_LISTEN_FDS_START + Int32(index), name: name)
        }
    }

    /// Whether `descriptor` is a listening unix stream socket.
    public static func isListeningUnixStream(_ descriptor: Int32) -> Bool {
        sd_is_socket_unix(descriptor, Int32(SOCK_STREAM.rawValue), 1, nil, 0) > 0
    }

    /// The control socket among `sockets`: the one named `control`, else the only one that is a
    /// listening unix stream socket.
    public static func controlSocket(in sockets: [PassedSocket]) -> PassedSocket? {
        let candidates = sockets.filter { isListeningUnixStream($0.descriptor) }
        return candidates.first { $0.name == "control" } ?? (candidates.count == 1 ? candidates.first : nil)
    }
}
