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

    /// The uid, gid and pid of the client process (SO_PEERCRED on the unix socket).
    public func peerCredentials() async -> PeerCredentials? {
        guard let provider = channel as? any SocketOptionProvider else { return nil }
        let future: EventLoopFuture<UnixCredentials> = provider.unsafeGetSocketOption(
            level: SocketOptionLevel(SOL_SOCKET), name: SocketOptionName(SO_PEERCRED))
        guard let credentials = try? await future.get() else { return nil }
        return PeerCredentials(pid: credentials.pid, uid: credentials.uid, gid: credentials.gid)
    }
}

/// Laid out like `struct ucred` (which Glibc hides behind _GNU_SOURCE).
struct UnixCredentials: Sendable {
    var pid: Int32 = 0
    var uid: UInt32 = 0
    var gid: UInt32 = 0
}
