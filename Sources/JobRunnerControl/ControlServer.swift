import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOExtras
import NIOPosix
import ServiceLifecycle

/// The control API's HTTP/1.1 server on an already listening unix socket (bound by
/// ``ControlSocket`` or passed by systemd socket activation).
public struct ControlServer: Service {
    /// Closes connections idle this long.
    public static let idleTimeout: TimeAmount = .seconds(60)

    private let listener: Int32
    private let handler: any ControlHandler
    private let eventLoopGroup: any EventLoopGroup
    private let logger: Logger

    public init(listeningSocket: Int32, handler: some ControlHandler, eventLoopGroup: any EventLoopGroup, logger: Logger) {
        self.listener = listeningSocket
        self.handler = handler
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
    }

    public func run() async throws {
        let responder = ControlRouter.make(handler: handler).buildResponder()
        let logger = self.logger
        let http = HTTP1Channel(
            responder: { request, responseWriter, channel in
                let context = ControlRequestContext(source: .init(channel: channel, logger: logger))
                var response: Response
                do {
                    response = try await responder.respond(to: request, context: context)
                } catch let error as any HTTPResponseError {
                    response = try error.response(from: request, context: context)
                } catch {
                    logger.error("control request failed", metadata: ["path": "\(request.uri.path)", "error": "\(error)"])
                    response = APIError.jsonResponse(status: .internalServerError, body: ErrorBody(error: "internal", message: "\(error)"))
                }
                if response.status == .notFound, response.headers[.contentType] == nil {
                    response = APIError.jsonResponse(
                        status: .notFound, body: ErrorBody(error: "not_found", message: "no such endpoint: \(request.method) \(request.uri.path)"))
                }
                try await responseWriter.write(response: response.head, body: response.body)
            },
            configuration: .init(idleTimeout: Self.idleTimeout)
        )
        let quiescing = ServerQuiescingHelper(group: eventLoopGroup)
        let server = try await ServerBootstrap(group: eventLoopGroup)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(quiescing.makeServerChannelHandler(channel: channel))
                }
            }
            .childChannelOption(ChannelOptions.allowRemoteHalfClosure, value: true)
            .bind(NIOBSDSocket.Handle(listener)) { channel in
                http.setup(channel: channel, logger: logger)
            }
        await withTaskCancellationOrGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                do {
                    try await server.executeThenClose { inbound in
                        for try await connection in inbound {
                            group.addTask { await http.handle(value: connection, logger: logger) }
                        }
                    }
                } catch {
                    logger.error("control socket stopped accepting", metadata: ["error": "\(error)"])
                }
            }
        } onCancelOrGracefulShutdown: {
            let promise = server.channel.eventLoop.makePromise(of: Void.self)
            quiescing.initiateShutdown(promise: promise)
        }
    }
}
