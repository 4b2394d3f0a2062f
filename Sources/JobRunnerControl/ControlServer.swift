import JobRunnerAPI
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
    /// The server's limits: everything a client controls is bounded.
    public struct Limits: Sendable {
        /// Connections served at once; more wait in the listen backlog.
        public var maxConnections = 256
        /// A keep-alive connection with no request for this long is closed.
        public var idleTimeout: TimeAmount = .seconds(30)
        /// A request head must arrive within this (from the connection's start or the last response).
        public var requestHeadTimeout: TimeAmount = .seconds(10)
        /// Largest request head.
        public var maxHeaderBytes = 16 * 1024
        /// Largest request body (the API takes none; anything bigger is refused).
        public var maxBodyBytes = 64 * 1024

        public init() {}
    }

    private let listener: Int32
    private let handler: any ControlHandler
    private let eventLoopGroup: any EventLoopGroup
    private let logger: Logger
    private let limits: Limits
    private let metricsOnly: Bool

    /// - Parameter metricsOnly: serve only `GET /metrics` (the optional TCP listener).
    public init(listeningSocket: Int32, handler: some ControlHandler, eventLoopGroup: any EventLoopGroup, logger: Logger,
                limits: Limits = Limits(), metricsOnly: Bool = false) {
        self.listener = listeningSocket
        self.handler = handler
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
        self.limits = limits
        self.metricsOnly = metricsOnly
    }

    public func run() async throws {
        let responder = ControlRouter.make(handler: handler, metricsOnly: metricsOnly).buildResponder()
        let limits = self.limits
        let logger = self.logger
        let http = HTTP1Channel(
            responder: { request, responseWriter, channel in
                let context = ControlRequestContext(source: .init(channel: channel, logger: logger))
                var response: Response
                let bodyLength = request.headers[.contentLength].flatMap { Int($0) }
                let hasBody = (bodyLength ?? 0) > 0 || request.headers[.transferEncoding] != nil
                do {
                    if let bodyLength, bodyLength > limits.maxBodyBytes {
                        throw APIError(status: .contentTooLarge, code: "bad_request",
                                       message: "request body of \(bodyLength) bytes; the API takes at most \(limits.maxBodyBytes)")
                    }
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
                // The API reads no request bodies: after answering one, close rather than drain it.
                if hasBody { response.headers[.connection] = "close" }
                try await responseWriter.write(response: response.head, body: response.body)
            },
            configuration: .init(
                additionalChannelHandlers: [RequestHeadTimeout(limit: limits.requestHeadTimeout)],
                idleTimeout: limits.idleTimeout,
                httpDecoderConfiguration: .init(maxHeaderFieldSize: limits.maxHeaderBytes, maxHeaderListSize: limits.maxHeaderBytes,
                                                maxHeaderFieldCount: 100)
            )
        )
        let quiescing = ServerQuiescingHelper(group: eventLoopGroup)
        let server = try await ServerBootstrap(group: eventLoopGroup)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ConnectionLimiter(maximum: limits.maxConnections))
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
