import AsyncHTTPClient
import JobRunnerConfig
import JobRunnerCore
import JobRunnerSchedule
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

#if canImport(Glibc)
import Glibc
#endif

/// Makes `http` steps' and jobs' requests in-process, on one pooled client shared by every run
/// (connections are reused per host, at most ``perHostLimit`` at once to one host), on the
/// daemon's event loops. TLS trusts the system's store, or a job's `ca_file`.
///
/// A request never throws: an expected status is `succeeded`, another status `http_status`,
/// no answer `request_failed` (with whether it could not connect at all), the timeout
/// `timed_out`, cancellation `cancelled`. The answer's status line, headers and first bytes of
/// body are its output.
public final class HTTPCaller: Sendable {
    /// Most connections open at once to one host (further requests wait for one).
    public static let perHostLimit = 8
    /// How long a connection may take to open.
    public static let connectTimeout: TimeAmount = .seconds(10)
    /// Bytes of an answer's body read past what is kept, so the connection can be reused;
    /// beyond this the connection is dropped instead.
    static let drainLimit = 1 << 20

    private let following: HTTPClient
    private let direct: HTTPClient
    private let blockingPool: NIOThreadPool?

    /// - Parameter blockingPool: where `header_files` are read (without one, on the calling thread).
    public init(eventLoopGroup: any EventLoopGroup, blockingPool: NIOThreadPool? = nil) {
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: Self.perHostLimit)
        configuration.timeout = .init(connect: Self.connectTimeout)
        // A refused connection fails the request now, not after retrying until the connect timeout.
        configuration.connectionPool.retryConnectionEstablishment = false
        configuration.decompression = .disabled
        configuration.redirectConfiguration = .follow(max: 10, allowCycles: false)
        following = HTTPClient(eventLoopGroupProvider: .shared(eventLoopGroup), configuration: configuration)
        configuration.redirectConfiguration = .disallow
        direct = HTTPClient(eventLoopGroupProvider: .shared(eventLoopGroup), configuration: configuration)
        self.blockingPool = blockingPool
    }

    /// Closes the pooled connections (at the daemon's stop).
    public func shutdown() async {
        try? await following.shutdown()
        try? await direct.shutdown()
    }

    /// How a request ended.
    public struct Answer: Sendable {
        public var outcome: RunOutcome
        /// The status, when an answer came.
        public var status: Int?
        /// The answer's `Retry-After`, in seconds.
        public var retryAfter: Duration?
        /// The status line, the headers, the body's first bytes.
        public var lines: [String]
    }

    /// Makes the request, waiting at most `timeout`; keeps up to `outputLimit` bytes of body.
    public func call(_ call: HTTPCall, timeout: Duration?, outputLimit: Int) async -> Answer {
        var request = HTTPClientRequest(url: call.url)
        request.method = HTTPMethod(rawValue: call.method)
        for header in call.headers { request.headers.add(name: header.name, value: header.value) }
        for header in call.headerFiles {
            switch await readSecret(header.value) {
            case .success(let value): request.headers.add(name: header.name, value: value)
            case .failure(let reason):
                return Answer(outcome: .requestFailed(reason: "header_files.\(header.name): \(reason)", connection: false), lines: [])
            }
        }
        if let body = call.body { request.body = .bytes(ByteBuffer(string: body)) }
        if let caFile = call.caFile {
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.trustRoots = .file(caFile)
            request.tlsConfiguration = tls
        }
        let deadline: NIODeadline = timeout.map { .now() + .microseconds($0.wholeMicroseconds) } ?? .distantFuture
        let client = call.followRedirects ? following : direct
        do {
            let response = try await client.execute(request, deadline: deadline)
            var lines = ["HTTP/\(response.version.major).\(response.version.minor) \(response.status.code) \(response.status.reasonPhrase)"]
            lines += response.headers.map { "\($0.name): \($0.value)" }
            // The body gets what the status line, the headers and a blank line leave of the
            // output's bytes (each line costs its bytes and a newline).
            let budget = max(0, outputLimit - lines.reduce(0) { $0 + $1.utf8.count + 1 } - 2)
            var kept: [UInt8] = []
            var read = 0
            for try await chunk in response.body {
                read += chunk.readableBytes
                if kept.count < budget { kept += chunk.readableBytesView.prefix(budget - kept.count) }
                if read > budget + Self.drainLimit { break }
            }
            if !kept.isEmpty {
                lines.append("")
                lines += String(decoding: kept, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).map {
                    String($0.hasSuffix("\r") ? $0.dropLast() : $0)
                }
                if lines.last == "" { lines.removeLast() }
            }
            let status = Int(response.status.code)
            let retryAfter = response.headers.first(name: "Retry-After").flatMap { Int64($0.filter { $0 != " " }) }.map { Duration.seconds($0) }
            return Answer(outcome: call.expects(status) ? .succeeded : .httpStatus(status), status: status, retryAfter: retryAfter,
                          lines: lines)
        } catch {
            var outcome = Self.outcome(of: error)
            if case .requestFailed(let reason, true) = outcome {
                outcome = .requestFailed(reason: "could not connect to \(Self.authority(of: call.url)): \(reason)", connection: true)
            }
            return Answer(outcome: outcome, lines: [])
        }
    }

    /// `host:port` of a URL, for messages.
    static func authority(of url: String) -> String {
        let parts = url.split(separator: "/", maxSplits: 3, omittingEmptySubsequences: false)
        guard parts.count >= 3, parts[0].hasSuffix(":"), parts[1].isEmpty else { return url }
        return String(parts[2].prefix { $0 != "?" && $0 != "#" })
    }

    /// What a failed request's error means.
    static func outcome(of error: any Error) -> RunOutcome {
        if Task.isCancelled { return .cancelled }
        if let error = error as? HTTPClientError {
            switch error {
            case .cancelled: return .cancelled
            case .deadlineExceeded, .readTimeout, .writeTimeout: return .timedOut
            case .connectTimeout: return .requestFailed(reason: "no connection within \(connectTimeout.nanoseconds / 1_000_000_000) s", connection: true)
            case .remoteConnectionClosed: return .requestFailed(reason: "the server closed the connection", connection: true)
            case .tlsHandshakeTimeout: return .requestFailed(reason: "TLS handshake timed out", connection: false)
            default: return .requestFailed(reason: "\(error)", connection: false)
            }
        }
        if let error = error as? NIOConnectionError {
            if let first = error.connectionErrors.first { return outcome(of: first.error) }
            return .requestFailed(reason: "host not found", connection: true)
        }
        if let error = error as? IOError, [ECONNREFUSED, ECONNRESET, EHOSTUNREACH, ENETUNREACH, EPIPE, ETIMEDOUT].contains(error.errnoCode) {
            return .requestFailed(reason: String(cString: strerror(error.errnoCode)), connection: true)
        }
        if let error = error as? SocketAddressError {
            return .requestFailed(reason: "host not found (\(error))", connection: true)
        }
        if error is NIOSSLError || error is BoringSSLError {
            return .requestFailed(reason: "TLS: \(error)", connection: false)
        }
        return .requestFailed(reason: "\(error)", connection: false)
    }

    /// A header file's first line (a token); read on the blocking pool.
    private func readSecret(_ path: String) async -> Result<String, SecretError> {
        let read: @Sendable () -> Result<String, SecretError> = {
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { return .failure(SecretError(String(cString: strerror(errno)))) }
            defer { close(fd) }
            var bytes: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 4096)
            while bytes.count < 64 * 1024 {
                let count = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
                if count < 0, errno == EINTR { continue }
                guard count > 0 else { break }
                bytes += buffer[0..<count]
            }
            let line = String(decoding: bytes.prefix { $0 != 10 }, as: UTF8.self)
            let value = line.hasSuffix("\r") ? String(line.dropLast()) : line
            guard !value.isEmpty else { return .failure(SecretError("the file is empty")) }
            return .success(value)
        }
        guard let blockingPool else { return read() }
        return (try? await blockingPool.runIfActive(read)) ?? .failure(SecretError("the daemon is stopping"))
    }

    struct SecretError: Error {
        var reason: String
        init(_ reason: String) { self.reason = reason }
    }
}

extension Result where Failure == HTTPCaller.SecretError {
    fileprivate static func failure(_ reason: String) -> Self { .failure(HTTPCaller.SecretError(reason)) }
}
