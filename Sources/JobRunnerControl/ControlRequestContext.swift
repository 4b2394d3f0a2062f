import Hummingbird
import NIOCore

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
}
