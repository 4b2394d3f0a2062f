/// `daemon.cluster`: several daemons share one schedule through PostgreSQL.
public struct ClusterSettings: Sendable, Hashable {
    /// Where the cluster's state lives.
    public var database: PostgresURL
    /// This node's name (unique in the cluster; default: the host name).
    public var nodeName: String
    /// A node silent for this long is declared dead and its work taken over.
    public var lease: Duration

    public static let defaultLease: Duration = .seconds(15)

    public init(database: PostgresURL, nodeName: String, lease: Duration = Self.defaultLease) {
        self.database = database
        self.nodeName = nodeName
        self.lease = lease
    }

    /// How long the database keeps a session of this node that stopped inside a transaction: a
    /// quarter of the lease (at least a second), so a frozen node's row locks are gone before the
    /// others' leases are at risk.
    public var idleInTransactionLimit: Duration { max(.seconds(1), lease / 4) }
}

/// A PostgreSQL connection URL: `postgresql://user[:password]@host[:port]/database[?sslmode=…]`,
/// or a unix socket: `postgresql://user@%2Frun%2Fpostgresql/database` (the host is the socket's
/// directory, percent-encoded) or `postgresql:///database?host=/run/postgresql`.
public struct PostgresURL: Sendable, Hashable, CustomStringConvertible {
    public enum TLSMode: String, Sendable, Hashable {
        case disable, prefer, require
    }

    public var user: String
    public var password: String?
    /// A TCP host, or nil for a unix socket.
    public var host: String?
    public var port: Int
    /// The directory of the server's unix socket (`.s.PGSQL.<port>` inside it).
    public var socketDirectory: String?
    public var database: String
    public var tls: TLSMode

    /// The socket file, for a unix-socket URL.
    public var socketPath: String? {
        socketDirectory.map { $0 + "/.s.PGSQL.\(port)" }
    }

    /// The URL without its password, for logs and status.
    public var description: String {
        let credentials = user + (password == nil ? "" : ":***")
        if let socketDirectory { return "postgresql://\(credentials)@\(socketDirectory):\(port)/\(database)" }
        return "postgresql://\(credentials)@\(host ?? "localhost"):\(port)/\(database)"
    }

    /// Parses `text`, or says what is wrong with it.
    public static func parse(_ text: String, defaultUser: String = "jobrunner") -> Result<PostgresURL, PostgresURLError> {
        guard let schemeEnd = text.firstRange(of: "://") else {
            return .failure(.init("'\(text)' is not a URL such as postgresql://user@host/database"))
        }
        let scheme = text[..<schemeEnd.lowerBound]
        guard scheme == "postgresql" || scheme == "postgres" else {
            return .failure(.init("the URL scheme must be postgresql://, not \(scheme)://"))
        }
        var rest = Substring(text[schemeEnd.upperBound...])
        var query: [String: String] = [:]
        if let mark = rest.firstIndex(of: "?") {
            for pair in rest[rest.index(after: mark)...].split(separator: "&") {
                let parts = pair.split(separator: "=", maxSplits: 1)
                guard parts.count == 2, let key = percentDecoded(parts[0]), let value = percentDecoded(parts[1]) else {
                    return .failure(.init("bad query parameter '\(pair)'"))
                }
                query[key] = value
            }
            rest = rest[..<mark]
        }
        var authority = rest
        var path = Substring("")
        if let slash = rest.firstIndex(of: "/") {
            authority = rest[..<slash]
            path = rest[rest.index(after: slash)...]
        }
        var user = defaultUser
        var password: String?
        if let at = authority.lastIndex(of: "@") {
            let credentials = authority[..<at]
            authority = authority[authority.index(after: at)...]
            let parts = credentials.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
            guard let name = percentDecoded(parts[0]), !name.isEmpty else { return .failure(.init("empty user name")) }
            user = name
            if parts.count == 2 { password = percentDecoded(parts[1]) }
        }
        var hostPart = Substring(authority)
        var port = 5432
        if let colon = hostPart.lastIndex(of: ":"), !hostPart.hasSuffix("]") {
            guard let number = Int(hostPart[hostPart.index(after: colon)...]), (1...65_535).contains(number) else {
                return .failure(.init("bad port in '\(text)'"))
            }
            port = number
            hostPart = hostPart[..<colon]
        }
        if let value = query["port"] {
            guard let number = Int(value), (1...65_535).contains(number) else { return .failure(.init("bad port '\(value)'")) }
            port = number
        }
        guard var host = percentDecoded(hostPart) else { return .failure(.init("bad host in '\(text)'")) }
        if let value = query["host"] { host = value }
        if let value = query["user"] { user = value }
        if let value = query["password"] { password = value }
        guard let database = percentDecoded(path), !database.isEmpty else {
            return .failure(.init("the URL names no database (postgresql://user@host/DATABASE)"))
        }
        var tls = TLSMode.prefer
        if let mode = query["sslmode"] {
            switch mode {
            case "disable": tls = .disable
            case "allow", "prefer": tls = .prefer
            case "require", "verify-ca", "verify-full": tls = .require
            default: return .failure(.init("unknown sslmode '\(mode)' (disable, prefer or require)"))
            }
        }
        if host.isEmpty { host = "/run/postgresql" }
        if host.hasPrefix("/") {
            return .success(PostgresURL(user: user, password: password, host: nil, port: port, socketDirectory: host,
                                        database: database, tls: .disable))
        }
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return .success(PostgresURL(user: user, password: password, host: host, port: port, socketDirectory: nil,
                                    database: database, tls: tls))
    }

    static func percentDecoded<S: StringProtocol>(_ text: S) -> String? {
        var bytes: [UInt8] = []
        var iterator = Array(text.utf8).makeIterator()
        while let byte = iterator.next() {
            if byte == UInt8(ascii: "%") {
                guard let high = iterator.next(), let low = iterator.next(),
                      let value = UInt8(String(decoding: [high, low], as: UTF8.self), radix: 16) else { return nil }
                bytes.append(value)
            } else {
                bytes.append(byte)
            }
        }
        return String(validating: bytes, as: UTF8.self)
    }
}

public struct PostgresURLError: Error, Sendable, Hashable {
    public var message: String
    init(_ message: String) { self.message = message }
}
