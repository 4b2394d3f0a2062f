import JobRunnerCore
import JobRunnerHistory
import JobRunnerConfig
import JobRunnerSchedule
import Logging
import NIOCore
import PostgresNIO
import ServiceLifecycle
import Synchronization

/// The cluster's PostgreSQL: a connection pool (a `Service` to run in the daemon's group), the
/// schema it migrates at start, and short messages for its errors.
public final class ClusterDatabase: Service {
    /// The newest schema this build understands; a newer one in the database stops the daemon.
    public static let schemaVersion = 5
    /// Everything lives in this schema of the database.
    static let schema = "jobrunner"

    public let client: PostgresClient
    public let url: PostgresURL
    let logger: Logger

    /// `idleInTransaction`: how long the server keeps a session of this daemon that stopped
    /// inside a transaction (a node frozen by SIGSTOP or a stalled VM holds its row locks until
    /// then, and the others wait on them: the `jobs` rows every node's history writes touch).
    public init(url: PostgresURL, idleInTransaction: Duration = .seconds(5), logger: Logger) {
        self.url = url
        self.logger = logger
        var configuration: PostgresClient.Configuration
        if let socket = url.socketPath {
            configuration = .init(unixSocketPath: socket, username: url.user, password: url.password, database: url.database)
        } else {
            let tls: PostgresClient.Configuration.TLS = switch url.tls {
            case .disable: .disable
            case .prefer: .prefer(.makeClientConfiguration())
            case .require: .require(.makeClientConfiguration())
            }
            configuration = .init(host: url.host ?? "localhost", port: url.port, username: url.user, password: url.password,
                                  database: url.database, tls: tls)
        }
        configuration.options.connectTimeout = .seconds(5)
        configuration.options.maximumConnections = 8
        configuration.options.minimumConnections = 1
        configuration.options.keepAliveBehavior = .init(frequency: .seconds(10))
        // A session stopped inside a transaction ends after `idleInTransaction` (its locks
        // with it); functions resolve in the system catalog only, so another role's objects
        // in `public` cannot stand in for the ones the daemon calls.
        configuration.options.additionalStartupParameters = [
            ("idle_in_transaction_session_timeout", "\(max(500, idleInTransaction.wholeMicroseconds / 1000))"),
            ("search_path", "pg_catalog"),
        ]
        var background = logger
        background.logLevel = .critical
        client = PostgresClient(configuration: configuration, backgroundLogger: background)
    }

    public func run() async {
        await client.run()
    }

    /// Runs `body` with the connection pool running beside it as a child task (no query is
    /// answered without it); the pool stops, and is awaited, when `body` returns.
    public static func serving<T: Sendable>(_ database: ClusterDatabase?, _ body: () async -> T) async -> T {
        guard let database else { return await body() }
        return await withTaskGroup(of: Void.self, returning: T.self) { group in
            group.addTask { await database.run() }
            let result = await body()
            group.cancelAll()
            return result
        }
    }

    /// Runs `body` and fails with a `ClusterError` after `limit`, whether or not `body` has
    /// returned by then: a pool waiting for an unreachable server would otherwise wait on, and
    /// postgres-nio (1.33) can leave a statement unanswered for good when the server ended its
    /// session under it (seen when a node frozen inside a transaction was let go on, and when
    /// an operator ends a session with pg_terminate_backend). `body` runs in a task of its own,
    /// cancelled when given up on or when the caller is cancelled (a wait for a pooled
    /// connection then ends; a statement already sent runs to its end on the server).
    public func within<T: Sendable>(_ limit: Duration, _ what: String, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        let url = self.url
        let work = Shared<Task<Void, Never>?>(nil)
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                let answer = FirstAnswer(continuation)
                let timer = Task {
                    try await Pause.sleep(for: limit)
                    answer.resume(with: .failure(ClusterError("\(what): no answer from \(url) within \(DurationText.format(limit))")))
                    work.value?.cancel()
                }
                work.set(Task {
                    let result: Result<T, any Error>
                    do { result = .success(try await body()) } catch { result = .failure(error) }
                    timer.cancel()
                    answer.resume(with: result)
                })
                if Task.isCancelled { work.value?.cancel() }
            }
        } onCancel: {
            work.value?.cancel()
        }
    }

    /// A transaction given up on after `limit` (see ``within(_:_:_:)``): if it is still out
    /// then (its BEGIN, a statement of it or its COMMIT unanswered), its connection is closed,
    /// so that the server rolls it back and the pool opens another. A connection is closed only
    /// while this transaction holds it, never once it went back to the pool.
    public func transaction<T: Sendable>(within limit: Duration, _ what: String,
                                         _ body: @escaping @Sendable (PostgresConnection) async throws -> T) async throws -> T {
        let held = Shared<TransactionHold>(.waiting)
        do {
            return try await within(limit, what) { [client, logger] in
                try await client.withConnection { connection in
                    guard held.update({ $0 == .waiting ? .open(connection) : $0 }) == .waiting else {
                        throw ClusterError("\(what): given up on before it began")
                    }
                    defer { held.set(.done) }
                    try await connection.query("BEGIN", logger: logger)
                    let value: T
                    do {
                        value = try await body(connection)
                    } catch {
                        _ = try? await connection.query("ROLLBACK", logger: logger)
                        throw error
                    }
                    try await connection.query("COMMIT", logger: logger)
                    return value
                }
            }
        } catch {
            if case .open(let connection) = held.update({ _ in .done }) {
                connection.close().whenComplete { _ in }
            }
            throw error
        }
    }

    // MARK: - Schema

    /// Creates or upgrades the schema under an advisory lock (several nodes may start at once),
    /// and refuses a schema newer than this build.
    public func migrate() async throws {
        try await client.withTransaction(logger: logger) { connection in
            try await connection.query("SELECT pg_advisory_xact_lock(hashtext('jobrunner.migrate'))", logger: logger)
            try await connection.query("CREATE SCHEMA IF NOT EXISTS jobrunner", logger: logger)
            try await connection.query("CREATE TABLE IF NOT EXISTS jobrunner.schema_info (version bigint NOT NULL)", logger: logger)
            var found: Int64?
            for try await version in try await connection.query("SELECT max(version) FROM jobrunner.schema_info", logger: logger)
                .decode(Int64?.self)
            {
                found = version
            }
            let current = Int(found ?? 0)
            guard current <= Self.schemaVersion else {
                throw ClusterError("the database schema is version \(current), newer than this jobrunnerd understands "
                    + "(\(Self.schemaVersion)); upgrade jobrunnerd on this node")
            }
            for version in stride(from: current + 1, through: Self.schemaVersion, by: 1) {
                for statement in Self.migrations[version - 1] {
                    try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                }
                try await connection.query("INSERT INTO jobrunner.schema_info (version) VALUES (\(Int64(version)))", logger: logger)
                logger.notice("cluster database schema migrated", metadata: ["version": .stringConvertible(version)])
            }
        }
    }

    /// One list of statements per schema version. Times are microseconds since the Unix epoch
    /// (as in the SQLite store), except liveness, which uses the server's clock.
    static let migrations: [[String]] = [
        [
            """
            CREATE TABLE jobrunner.nodes (
                name text PRIMARY KEY, incarnation bigint NOT NULL, state text NOT NULL, machine_id text NOT NULL,
                pid bigint NOT NULL, version text NOT NULL, config_hash text NOT NULL, running bigint NOT NULL DEFAULT 0,
                lease_ms bigint NOT NULL, started_at timestamptz NOT NULL, heartbeat_at timestamptz NOT NULL)
            """,
            "CREATE TABLE jobrunner.cluster (id int PRIMARY KEY CHECK (id = 1), started_at bigint NOT NULL, generation bigint NOT NULL)",
            """
            CREATE TABLE jobrunner.occurrences (
                job text NOT NULL, occurrence bigint NOT NULL, node text NOT NULL, claimed_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (job, occurrence))
            """,
            "CREATE INDEX occurrences_by_claim ON jobrunner.occurrences (claimed_at)",
            """
            CREATE TABLE jobrunner.runs (
                id text PRIMARY KEY, fire_id text NOT NULL, job text NOT NULL, trigger text NOT NULL, attempt bigint NOT NULL,
                scheduled_at bigint NOT NULL, queued_at bigint NOT NULL, started_at bigint, ended_at bigint, outcome text,
                exit_code bigint, signal bigint, detail text, pid bigint, status_text text, output text, node text NOT NULL)
            """,
            "CREATE INDEX runs_by_job ON jobrunner.runs (job, id)",
            "CREATE INDEX runs_open ON jobrunner.runs (node) WHERE ended_at IS NULL",
            "CREATE INDEX runs_by_end ON jobrunner.runs (ended_at)",
            """
            CREATE TABLE jobrunner.jobs (
                name text PRIMARY KEY, last_occurrence bigint, first_seen bigint NOT NULL, paused boolean NOT NULL DEFAULT false)
            """,
        ],
        [
            // Slots of cluster-wide pools: one row per slot taken.
            """
            CREATE TABLE jobrunner.pool_slots (
                pool text NOT NULL, slot int NOT NULL, node text NOT NULL, run_id text NOT NULL UNIQUE, PRIMARY KEY (pool, slot))
            """,
            // Runs waiting for a slot, so slots go to the longest waiting run of any node.
            """
            CREATE TABLE jobrunner.pool_waiters (
                run_id text PRIMARY KEY, pool text NOT NULL, node text NOT NULL, since bigint NOT NULL)
            """,
        ],
        [
            // Set right before a run's process starts: a survivor taking the run over knows it
            // may have started (interrupted, retried as its job says) rather than run it again.
            "ALTER TABLE jobrunner.runs ADD COLUMN dispatched_at bigint",
            // Commands between nodes (run, cancel, pause): rows only the daemon's role may write.
            // NOTIFY only wakes the receivers, its payload is never read.
            """
            CREATE TABLE jobrunner.commands (
                id bigserial PRIMARY KEY, fields text[] NOT NULL, sender text NOT NULL, created_at timestamptz NOT NULL DEFAULT now())
            """,
            "REVOKE ALL ON jobrunner.commands FROM PUBLIC",
        ],
        [
            // What each run cost (wait4's accounting of its process tree).
            "ALTER TABLE jobrunner.runs ADD COLUMN cpu_user_us bigint, ADD COLUMN cpu_system_us bigint, ADD COLUMN max_rss_bytes bigint, "
                + "ADD COLUMN max_rss_bound_bytes bigint",
        ],
        [
            // How each step of a run made of steps ended (``StoredSteps``), and the run whose end
            // fired a run (`after:`).
            "ALTER TABLE jobrunner.runs ADD COLUMN steps text, ADD COLUMN triggered_by text",
        ],
    ]

    // MARK: - Errors

    /// A short reason for a database error: the server's message, or what stopped the connection.
    public static func describe(_ error: any Error) -> String {
        if let error = error as? PSQLError {
            if let message = error.serverInfo?[.message] {
                return message + (error.serverInfo?[.sqlState].map { " (SQLSTATE \($0))" } ?? "")
            }
            switch error.code {
            case .connectionError, .serverClosedConnection, .clientClosedConnection, .uncleanShutdown:
                return "connection failed" + (error.underlying.map { ": \($0)" } ?? "")
            case .poolClosed:
                return "the connection pool is closed"
            default:
                return "\(error.code)" + (error.underlying.map { ": \($0)" } ?? "")
            }
        }
        if let error = error as? ClusterError { return error.description }
        return "\(error)"
    }
}

/// A value shared between tasks.
private final class Shared<Value: Sendable>: Sendable {
    private let storage: Mutex<Value>
    init(_ value: Value) { storage = Mutex(value) }
    var value: Value { storage.withLock { $0 } }
    func set(_ value: Value) { storage.withLock { $0 = value } }
    /// Replaces the value with `change(value)` under the lock; returns the value before.
    @discardableResult
    func update(_ change: (Value) -> Value) -> Value {
        storage.withLock { value in
            let before = value
            value = change(value)
            return before
        }
    }
}

/// Where a bounded transaction is: not yet holding a connection, holding one, or over.
private enum TransactionHold: Sendable, Equatable {
    case waiting, open(PostgresConnection), done

    static func == (lhs: Self, rhs: Self) -> Bool {
        switch (lhs, rhs) {
        case (.waiting, .waiting), (.done, .done): true
        case (.open(let a), .open(let b)): a === b
        default: false
        }
    }
}

/// A continuation resumed by whichever answer comes first; later ones are dropped.
private final class FirstAnswer<T: Sendable>: Sendable {
    private let continuation: Mutex<CheckedContinuation<T, any Error>?>

    init(_ continuation: CheckedContinuation<T, any Error>) {
        self.continuation = Mutex(continuation)
    }

    func resume(with result: Result<T, any Error>) {
        continuation.withLock { $0.take() }?.resume(with: result)
    }
}

/// A cluster failure with a message for the operator.
public struct ClusterError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

extension ClusterDatabase {
    /// What `--check-cluster` shows.
    public struct Report: Sendable {
        public var serverVersion: String
        /// nil when the schema does not exist yet.
        public var schemaVersion: Int?
        public var nodes: [ClusterCoordinator.Node]
    }

    /// Reads the server's version, the schema's version and the nodes, changing nothing.
    public func inspect() async throws -> Report {
        var server = ""
        for try await version in try await client.query("SHOW server_version", logger: logger).decode(String.self) {
            server = version
        }
        var exists = false
        for try await found in try await client.query(
            "SELECT to_regclass('jobrunner.schema_info') IS NOT NULL AND to_regclass('jobrunner.nodes') IS NOT NULL", logger: logger
        ).decode(Bool.self) {
            exists = found
        }
        guard exists else { return Report(serverVersion: server, schemaVersion: nil, nodes: []) }
        var version: Int64?
        for try await value in try await client.query("SELECT max(version) FROM jobrunner.schema_info", logger: logger)
            .decode(Int64?.self)
        {
            version = value
        }
        let nodes = try await ClusterCoordinator.nodes(in: self)
        return Report(serverVersion: server, schemaVersion: version.map(Int.init), nodes: nodes)
    }
}
