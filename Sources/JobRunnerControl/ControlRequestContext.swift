import JobRunnerAPI
import Hummingbird
import NIOCore
#if canImport(Glibc)
import Glibc
#endif

/// Request context of the control API; keeps the connection so handlers can read the peer's
/// credentials.
public struct ControlRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    /// The client connection.
    public let channel: any Channel

    public init(source: ApplicationRequestContextSource) {
        self.coreContext = .init(source: source)
        self.channel = source.channel
    }

    /// Who the client is: its uid, gid and pid (SO_PEERCRED) and its supplementary groups
    /// (SO_PEERGROUPS), as the kernel recorded them when it connected — nothing is read from
    /// /proc later, where a pid may by then name another process.
    public func peerCredentials() async -> PeerCredentials? {
        guard let provider = channel as? any SocketOptionProvider else { return nil }
        let future: EventLoopFuture<UnixCredentials> = provider.unsafeGetSocketOption(
            level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(SO_PEERCRED))
        guard let credentials = try? await future.get() else { return nil }
        var peer = PeerCredentials(pid: credentials.pid, uid: credentials.uid, gid: credentials.gid)
        peer.groups = await Self.peerGroups(provider)
        return peer
    }

    /// SO_PEERGROUPS through NIO, which hands back a fixed-size value (zero-filled) without the
    /// length the kernel returned. The kernel keeps a process's groups sorted, so a 0 can only
    /// come first; asking with no room at all first tells "no groups" (success) from "some"
    /// (ERANGE). Nil when the peer has more than fit (then only uid and gid count).
    static func peerGroups(_ provider: any SocketOptionProvider) async -> [UInt32]? {
        let probe: EventLoopFuture<NoGroups> = provider.unsafeGetSocketOption(
            level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(SO_PEERGROUPS))
        if (try? await probe.get()) != nil { return [] }
        let future: EventLoopFuture<PeerGroupList> = provider.unsafeGetSocketOption(
            level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(SO_PEERGROUPS))
        guard let list = try? await future.get() else { return nil }
        let all = withUnsafeBytes(of: list.storage) { Array($0.bindMemory(to: UInt32.self)) }
        guard let last = all.lastIndex(where: { $0 != 0 }) else { return [0] }
        return Array(all[...last])
    }
}

/// Laid out like `struct ucred` (which Glibc hides behind _GNU_SOURCE).
struct UnixCredentials: Sendable {
    var pid: Int32 = 0
    var uid: UInt32 = 0
    var gid: UInt32 = 0
}

/// A getsockopt value of no bytes.
struct NoGroups: Sendable {}

/// Room for 64 gids (a process in more groups is judged by its uid and gid alone).
struct PeerGroupList: Sendable {
    var storage: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64,
                  UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64,
                  UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64,
                  UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64)
        = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
}
