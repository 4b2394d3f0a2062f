import AsyncHTTPClient
import JobRunnerConfig
import JobRunnerCore
import JobRunnerSchedule
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import Synchronization

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
    /// Longest silence of a server within one answer.
    public static let readTimeout: TimeAmount = .seconds(300)
    /// Bytes of an answer's body read past what is kept, so the connection can be reused;
    /// beyond this the connection is dropped instead.
    static let drainLimit = 1 << 20

    private let following: HTTPClient
    private let direct: HTTPClient
    private let blockingPool: NIOThreadPool?
    private let gate = HostGate(limit: HTTPCaller.perHostLimit)

    /// - Parameter blockingPool: where `header_files` are read (without one, on the calling thread).
    public init(eventLoopGroup: any EventLoopGroup, blockingPool: NIOThreadPool? = nil) {
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: Self.perHostLimit)
        // Without a timeout of its own, a request whose server stops sending fails after
        // ``readTimeout`` of silence.
        configuration.timeout = .init(connect: Self.connectTimeout, read: Self.readTimeout)
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

    /// Makes the request, waiting at most `timeout` for all of it (the body included); keeps
    /// up to `outputLimit` bytes of output. At most ``perHostLimit`` requests to one host are
    /// in flight; the others wait their turn (a cancel or the timeout ends the wait).
    public func call(_ call: HTTPCall, timeout: Duration?, outputLimit: Int) async -> Answer {
        guard let timeout else { return await gated(call, outputLimit: outputLimit) }
        return await withTaskGroup(of: Answer?.self) { group -> Answer in
            group.addTask { await self.gated(call, outputLimit: outputLimit) }
            group.addTask {
                try? await Pause.sleep(for: timeout)
                return nil
            }
            let first = await group.next()!
            group.cancelAll()
            if let first { return first }
            // The timer went first: the request, cancelled, ends now.
            _ = await group.next()
            return Answer(outcome: Task.isCancelled ? .cancelled : .timedOut, lines: [])
        }
    }

    private func gated(_ call: HTTPCall, outputLimit: Int) async -> Answer {
        let host = Self.origin(of: call.url)
        guard await gate.enter(host) else { return Answer(outcome: .cancelled, lines: []) }
        defer { gate.leave(host) }
        return await perform(call, outputLimit: outputLimit)
    }

    private func perform(_ call: HTTPCall, outputLimit: Int) async -> Answer {
        var headers = HTTPHeaders()
        // Every header value is kept out of what the request's failure says.
        var hidden = call.headers.map(\.value)
        for header in call.headers { headers.add(name: header.name, value: header.value) }
        for header in call.headerFiles {
            switch await readSecret(header.value) {
            case .success(let value):
                headers.add(name: header.name, value: value)
                hidden.append(value)
            case .failure(let error):
                return Answer(outcome: .requestFailed(reason: "header_files.\(header.name): \(error.reason)", connection: false), lines: [])
            }
        }
        // With header values to protect, redirects are followed here, and only within the
        // request's origin: a value meant for one server never goes to another.
        let guarded = call.followRedirects && !(call.headers.isEmpty && call.headerFiles.isEmpty)
        let client = call.followRedirects && !guarded ? following : direct
        var url = call.url
        var method = call.method
        var body = call.body
        var notes: [String] = []
        do {
            var response: HTTPClientResponse
            var hops = 0
            while true {
                var request = HTTPClientRequest(url: url)
                request.method = HTTPMethod(rawValue: method)
                request.headers = headers
                if let body { request.body = .bytes(ByteBuffer(string: body)) }
                if let caFile = call.caFile {
                    var tls = TLSConfiguration.makeClientConfiguration()
                    tls.trustRoots = .file(caFile)
                    request.tlsConfiguration = tls
                }
                response = try await client.execute(request, deadline: .distantFuture)
                let status = Int(response.status.code)
                guard guarded, [301, 302, 303, 307, 308].contains(status), let location = response.headers.first(name: "Location") else { break }
                let next = Self.resolve(location, against: url)
                guard Self.origin(of: next) == Self.origin(of: url) else {
                    notes.append("(not following the redirect to \(Self.origin(of: next)): the request carries header values)")
                    break
                }
                hops += 1
                guard hops <= 10 else { return Answer(outcome: .requestFailed(reason: "more than 10 redirects", connection: false), lines: []) }
                for try await _ in response.body {}
                if status == 303 || ((status == 301 || status == 302) && method == "POST") {
                    method = "GET"
                    body = nil
                }
                url = next
            }
            var lines = ["HTTP/\(response.version.major).\(response.version.minor) \(response.status.code) \(response.status.reasonPhrase)"]
            lines += response.headers.map { "\($0.name): \($0.value)" }
            lines += notes
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
            if case .requestFailed(var reason, let connection) = outcome {
                for value in hidden where !value.isEmpty { reason = reason.replacing(value, with: "<hidden>") }
                if connection { reason = "could not connect to \(Self.authority(of: url)): \(reason)" }
                outcome = .requestFailed(reason: reason, connection: connection)
            }
            return Answer(outcome: outcome, lines: [])
        }
    }

    /// `scheme://host:port` of a URL (lowercased), the unit of connection reuse and of trust.
    static func origin(of url: String) -> String {
        let scheme = url.prefix { $0 != ":" }.lowercased()
        var authority = authority(of: url).lowercased()
        if let at = authority.lastIndex(of: "@") { authority = String(authority[authority.index(after: at)...]) }
        let hasPort = authority.hasPrefix("[") ? authority.contains("]:") : authority.contains(":")
        if !hasPort { authority += scheme == "https" ? ":443" : ":80" }
        return scheme + "://" + authority
    }

    /// A `Location` against the URL it came from: absolute, scheme-relative, path-absolute or relative.
    static func resolve(_ location: String, against base: String) -> String {
        let lowered = location.lowercased()
        if lowered.hasPrefix("http://") || lowered.hasPrefix("https://") { return location }
        let scheme = String(base.prefix { $0 != ":" })
        if location.hasPrefix("//") { return scheme + ":" + location }
        let root = scheme + "://" + authority(of: base)
        if location.hasPrefix("/") { return root + location }
        let path = base.dropFirst(root.count).prefix { $0 != "?" && $0 != "#" }
        let directory = path.lastIndex(of: "/").map { String(path[...$0]) } ?? "/"
        return root + directory + location
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
            case .getConnectionFromPoolTimeout: return .requestFailed(reason: "no connection within \(connectTimeout.nanoseconds / 1_000_000_000) s", connection: true)
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
            guard !value.unicodeScalars.contains(where: { ($0.value < 0x20 && $0 != "\t") || $0.value == 0x7F }) else {
                return .failure(SecretError("its first line holds a control character, which a header cannot carry"))
            }
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

/// At most `limit` requests in flight per origin; the others wait in order. The client's own
/// pool would fail a request that waits for a connection longer than the connect timeout.
final class HostGate: Sendable {
    private struct State {
        var inUse: [String: Int] = [:]
        var waiters: [String: [(token: UInt64, continuation: CheckedContinuation<Bool, Never>)]] = [:]
        /// Turns asked for and not yet granted or refused.
        var pending: Set<UInt64> = []
        /// Pending turns cancelled before they could queue.
        var cancelled: Set<UInt64> = []
        var nextToken: UInt64 = 0
    }

    private let state = Mutex(State())
    let limit: Int

    init(limit: Int) {
        self.limit = limit
    }

    /// Waits for a turn for `origin`; false when cancelled while waiting.
    func enter(_ origin: String) async -> Bool {
        let token = state.withLock { state -> UInt64 in
            state.nextToken += 1
            state.pending.insert(state.nextToken)
            return state.nextToken
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
                let answer = state.withLock { state -> Bool? in
                    if state.cancelled.remove(token) != nil {
                        state.pending.remove(token)
                        return false
                    }
                    if state.inUse[origin, default: 0] < limit {
                        state.inUse[origin, default: 0] += 1
                        state.pending.remove(token)
                        return true
                    }
                    state.waiters[origin, default: []].append((token, continuation))
                    return nil
                }
                if let answer { continuation.resume(returning: answer) }
            }
        } onCancel: {
            let waiter = state.withLock { state -> CheckedContinuation<Bool, Never>? in
                if let index = state.waiters[origin]?.firstIndex(where: { $0.token == token }) {
                    state.pending.remove(token)
                    let waiter = state.waiters[origin]!.remove(at: index).continuation
                    if state.waiters[origin]!.isEmpty { state.waiters[origin] = nil }
                    return waiter
                }
                // Not queued yet (it will see this), or already granted (nothing to do).
                if state.pending.contains(token) { state.cancelled.insert(token) }
                return nil
            }
            waiter?.resume(returning: false)
        }
    }

    /// Ends a turn: the next waiter, if any, takes it.
    func leave(_ origin: String) {
        let next = state.withLock { state -> CheckedContinuation<Bool, Never>? in
            if var queue = state.waiters[origin], !queue.isEmpty {
                let first = queue.removeFirst()
                state.waiters[origin] = queue.isEmpty ? nil : queue
                state.pending.remove(first.token)
                return first.continuation
            }
            state.inUse[origin, default: 1] -= 1
            if state.inUse[origin] == 0 { state.inUse[origin] = nil }
            return nil
        }
        next?.resume(returning: true)
    }
}
