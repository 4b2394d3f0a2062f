import JobRunnerAPI
import Foundation
import Hummingbird

/// An error answer of the API: a status and `{"error": code, "message": …}`.
public struct APIError: Error, HTTPResponseError, Sendable {
    public var status: HTTPResponse.Status
    public var code: String
    public var message: String

    public init(status: HTTPResponse.Status, code: String, message: String) {
        self.status = status
        self.code = code
        self.message = message
    }

    public static func notFound(_ message: String) -> APIError { .init(status: .notFound, code: "not_found", message: message) }
    public static func badRequest(_ message: String) -> APIError { .init(status: .badRequest, code: "bad_request", message: message) }
    public static func forbidden(_ message: String) -> APIError { .init(status: .forbidden, code: "forbidden", message: message) }
    public static func conflict(_ message: String) -> APIError { .init(status: .conflict, code: "conflict", message: message) }
    /// 503: a dependency (the cluster database) cannot be reached.
    public static func unavailable(_ message: String) -> APIError { .init(status: .serviceUnavailable, code: "unavailable", message: message) }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        Self.jsonResponse(status: status, body: ErrorBody(error: code, message: message))
    }

    static func jsonResponse(status: HTTPResponse.Status, body: some Encodable) -> Response {
        let data = (try? APICoding.encoder().encode(body)) ?? Data("{}".utf8)
        var buffer = ByteBuffer()
        buffer.writeBytes(data)
        buffer.writeString("\n")
        return Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: buffer))
    }
}
