import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

/// Why a request to the daemon failed, worded for the person at the terminal.
public struct ControlClientError: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable {
        /// The socket is missing or nobody listens: the daemon is not running.
        case notRunning
        /// The socket exists but may not be opened by this user.
        case permissionDenied
        /// The daemon answered with an error status.
        case api(status: Int, code: String)
        /// Anything else (broken connection, unreadable answer).
        case other
    }

    public var kind: Kind
    public var message: String
    public var description: String { message }
}

/// A response from the control API.
public struct ControlResponse: Sendable {
    public var status: Int
    public var body: Data

    /// Decodes the body as `T`, or throws the API's error message.
    public func decode<T: Decodable>(_ type: T.Type) throws(ControlClientError) -> T {
        guard (200..<300).contains(status) else {
            let error = try? APICoding.decoder().decode(ErrorBody.self, from: body)
            throw ControlClientError(kind: .api(status: status, code: error?.error ?? "http_\(status)"),
                                     message: error?.message ?? "the daemon answered HTTP \(status)")
        }
        do {
            return try APICoding.decoder().decode(type, from: body)
        } catch {
            throw ControlClientError(kind: .other, message: "cannot read the daemon's answer: \(error)")
        }
    }
}

/// The methods the control API uses.
public enum ControlMethod: String, Sendable {
    case get = "GET"
    case post = "POST"

    var nio: HTTPMethod { self == .get ? .GET : .POST }
}

/// A small HTTP/1.1 client for the daemon's unix socket.
public struct ControlClient: Sendable {
    public let socketPath: String

    public init(socketPath: String) {
        self.socketPath = socketPath
    }

    /// Sends a request and collects the whole response.
    public func request(_ method: ControlMethod, _ path: String, body: Data? = nil) async throws(ControlClientError) -> ControlResponse {
        let channel = try await connect()
        do {
            return try await channel.executeThenClose { inbound, outbound in
                var head = HTTPRequestHead(version: .http1_1, method: method.nio, uri: path)
                head.headers.add(name: "Host", value: "localhost")
                head.headers.add(name: "Connection", value: "close")
                if let body {
                    head.headers.add(name: "Content-Type", value: "application/json")
                    head.headers.add(name: "Content-Length", value: "\(body.count)")
                }
                var parts: [HTTPClientRequestPart] = [.head(head)]
                if let body { parts.append(.body(.byteBuffer(ByteBuffer(bytes: body)))) }
                parts.append(.end(nil))
                // The daemon may answer (and close, as asked) before the last part is flushed;
                // a failed write is not a failed request as long as the answer arrives.
                var writeError: (any Error)?
                do {
                    try await outbound.write(contentsOf: parts)
                } catch {
                    writeError = error
                }
                var status = 0
                var collected = Data()
                for try await part in inbound {
                    switch part {
                    case .head(let responseHead):
                        status = Int(responseHead.status.code)
                    case .body(let buffer):
                        collected.append(contentsOf: buffer.readableBytesView)
                    case .end:
                        return ControlResponse(status: status, body: collected)
                    }
                }
                // It stopped (or restarted) while the request was in flight.
                throw ControlClientError(kind: .notRunning, message: "the daemon closed the connection before answering"
                                         + (writeError.map { " (\($0))" } ?? ""))
            }
        } catch let error as ControlClientError {
            throw error
        } catch {
            throw ControlClientError(kind: .other, message: "request to \(socketPath) failed: \(error)")
        }
    }

    /// GETs a streaming endpoint and hands each complete line of the body to `line` as it
    /// arrives; returns the status when the body ends.
    public func streamLines(_ path: String, line: @Sendable (String) -> Void) async throws(ControlClientError) -> Int {
        let channel = try await connect()
        do {
            return try await channel.executeThenClose { inbound, outbound in
                var head = HTTPRequestHead(version: .http1_1, method: .GET, uri: path)
                head.headers.add(name: "Host", value: "localhost")
                head.headers.add(name: "Connection", value: "close")
                try await outbound.write(contentsOf: [.head(head), .end(nil)])
                var status = 0
                var pending: [UInt8] = []
                var errorBody = Data()
                for try await part in inbound {
                    switch part {
                    case .head(let responseHead):
                        status = Int(responseHead.status.code)
                    case .body(let buffer):
                        guard status == 200 else {
                            errorBody.append(contentsOf: buffer.readableBytesView)
                            continue
                        }
                        pending.append(contentsOf: buffer.readableBytesView)
                        while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                            line(String(decoding: pending[..<newline], as: UTF8.self))
                            pending.removeSubrange(...newline)
                        }
                    case .end:
                        if status != 200 {
                            _ = try ControlResponse(status: status, body: errorBody).decode(ErrorBody.self)
                        }
                        return status
                    }
                }
                // The connection ended inside the response: the daemon went away.
                throw ControlClientError(kind: .notRunning, message: "the daemon closed the stream before it ended")
            }
        } catch let error as ControlClientError {
            throw error
        } catch {
            throw ControlClientError(kind: .other, message: "request to \(socketPath) failed: \(error)")
        }
    }

    /// GET and decode.
    public func get<T: Decodable>(_ path: String, as type: T.Type) async throws(ControlClientError) -> T {
        try await request(.get, path).decode(type)
    }

    private func connect() async throws(ControlClientError) -> NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart> {
        // A unix socket whose listen backlog is full refuses with EAGAIN at once (it does not
        // queue the caller): retry with a growing pause for up to five seconds.
        let deadline = ContinuousClock.now + .seconds(5)
        var pause = Duration.milliseconds(5)
        while true {
            do {
                return try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                    .connectTimeout(.seconds(5))
                    .connect(unixDomainSocketPath: socketPath) { channel in
                        channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHTTPClientHandlers()
                            return try NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>(wrappingChannelSynchronously: channel)
                        }
                    }
            } catch let error as IOError where error.errnoCode == EAGAIN && ContinuousClock.now < deadline {
                try? await Task.sleep(for: pause)
                pause = min(pause * 2, .milliseconds(200))
            } catch let error as IOError {
                throw Self.connectionError(errno: error.errnoCode, path: socketPath)
            } catch {
                throw ControlClientError(kind: .notRunning, message: "cannot connect to \(socketPath): \(error) — is jobrunnerd running?")
            }
        }
    }

    /// `a directory`, `a regular file`, `socket`…, or nil when the path cannot be read.
    static func fileKind(_ path: String) -> String? {
        var status = stat()
        guard stat(path, &status) == 0 else { return nil }
        switch status.st_mode & S_IFMT {
        case S_IFSOCK: return "socket"
        case S_IFDIR: return "a directory"
        case S_IFREG: return "a regular file"
        default: return "not a socket"
        }
    }

    /// Who may use the socket, from its owner, group and mode (or why that is unknown).
    static func access(_ path: String) -> String {
        var status = stat()
        // A socket in a directory this user may not search cannot even be looked at.
        guard stat(path, &status) == 0 else { return "a directory on the way to the socket is closed to this user" }
        let owner = getpwuid(status.st_uid).map { String(cString: $0.pointee.pw_name) } ?? "uid \(status.st_uid)"
        let group = getgrgid(status.st_gid).map { String(cString: $0.pointee.gr_name) } ?? "gid \(status.st_gid)"
        let mode = String(status.st_mode & 0o777, radix: 8)
        return "the socket is for \(owner) and the group \(group), mode \(mode); join that group or ask its owner"
    }

    static func connectionError(errno code: Int32, path: String) -> ControlClientError {
        switch code {
        case ENOENT:
            return ControlClientError(kind: .notRunning, message: "cannot connect to \(path): no such file — is jobrunnerd running?")
        case ECONNREFUSED, ENOTSOCK:
            if let kind = fileKind(path), kind != "socket" {
                return ControlClientError(kind: .other, message: "cannot connect to \(path): not a socket (it is \(kind)); --socket names the daemon's control socket")
            }
            return ControlClientError(kind: .notRunning, message: "cannot connect to \(path): connection refused — is jobrunnerd running?")
        case EAGAIN:
            return ControlClientError(kind: .other, message: "cannot connect to \(path): the daemon's connection queue stayed full for 5 seconds")
        case EACCES, EPERM:
            return ControlClientError(kind: .permissionDenied, message: "cannot connect to \(path): permission denied (\(access(path)))")
        default:
            return ControlClientError(kind: .notRunning, message: "cannot connect to \(path): \(String(cString: strerror(code)))")
        }
    }
}
