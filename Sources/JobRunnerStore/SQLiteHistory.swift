import JobRunnerHistory
import Foundation
import GRDB
import JobRunnerCore
import JobRunnerSchedule

/// The run history and job state in SQLite (`state.sqlite`, WAL): one table of runs, one of
/// jobs, versioned by migrations.
public final class SQLiteHistory: HistoryStore {
    /// The newest schema this build understands.
    public static let schemaVersion = 2

    let database: DatabasePool
    public let path: String
    public var location: String { path }

    /// Opens (creating if needed) and migrates the database.
    @available(*, noasync, message: "opens files; call from the thread pool")
    public init(path: String) throws {
        self.path = path
        var configuration = Configuration()
        configuration.busyMode = .timeout(5)
        database = try DatabasePool(path: path, configuration: configuration)
        // Every commit is fsynced (in WAL mode, the log), so a fire recorded before its process
        // starts is on disk even after a power cut: no occurrence runs twice. The writer commits
        // what accumulated while the last commit was being written in one transaction (group
        // commit), so a burst of fires costs one fsync, not one each. Set on the pool's one
        // writer connection after the pool opened it (the pool sets NORMAL when it turns WAL on).
        try database.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA synchronous = FULL") }
        try Self.migrator.migrate(database)
    }

    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.create(table: "runs") { table in
                table.column("id", .text).primaryKey()
                table.column("fire_id", .text).notNull()
                table.column("job", .text).notNull()
                table.column("trigger", .text).notNull()
                table.column("attempt", .integer).notNull()
                table.column("scheduled_at", .integer).notNull()
                table.column("queued_at", .integer).notNull()
                table.column("started_at", .integer)
                table.column("ended_at", .integer)
                table.column("outcome", .text)
                table.column("exit_code", .integer)
                table.column("signal", .integer)
                table.column("detail", .text)
                table.column("pid", .integer)
                table.column("status_text", .text)
                table.column("output", .text)
                table.column("node", .text)
            }
            try db.create(index: "runs_by_job", on: "runs", columns: ["job", "id"])
            try db.create(index: "runs_open", on: "runs", columns: ["ended_at"], condition: Column("ended_at") == nil)
            try db.create(index: "runs_by_end", on: "runs", columns: ["ended_at"])
            try db.create(table: "jobs") { table in
                table.column("name", .text).primaryKey()
                table.column("last_occurrence", .integer)
                table.column("first_seen", .integer).notNull()
                table.column("paused", .boolean).notNull().defaults(to: false)
            }
            try db.create(table: "schema_info") { table in
                table.column("version", .integer).notNull()
            }
            try db.execute(sql: "INSERT INTO schema_info (version) VALUES (1)")
        }
        migrator.registerMigration("v2") { db in
            // What each run cost (wait4's accounting of its process tree).
            try db.alter(table: "runs") { table in
                table.add(column: "cpu_user_us", .integer)
                table.add(column: "cpu_system_us", .integer)
                table.add(column: "max_rss_bytes", .integer)
                table.add(column: "max_rss_bound_bytes", .integer)
            }
            try db.execute(sql: "UPDATE schema_info SET version = 2")
        }
        migrator.registerMigration("v3") { db in
            // How each step of a run made of steps ended (``StoredSteps``), and the run whose end
            // fired a run (`after:`).
            try db.alter(table: "runs") { table in
                table.add(column: "steps", .text)
                table.add(column: "triggered_by", .text)
            }
            try db.execute(sql: "UPDATE schema_info SET version = 3")
        }
        return migrator
    }

    // MARK: - Recovery

    /// Marks every run without an end as `interrupted` (the daemon died while it was waiting or
    /// running) and returns them, so their processes can be hunted down.
    public func recoverInterrupted(at instant: Timestamp) async throws -> [InterruptedRun] {
        try await database.write { db in
            let rows = try Row.fetchAll(db, sql: "SELECT id, job, pid FROM runs WHERE ended_at IS NULL")
            let interrupted = rows.map { InterruptedRun(id: RunID(rawValue: $0["id"]), job: $0["job"], pid: $0["pid"]) }
            try db.execute(sql: """
                UPDATE runs SET ended_at = ?, outcome = 'interrupted',
                    detail = CASE WHEN started_at IS NULL THEN 'the daemon stopped before it started' ELSE 'the daemon stopped while it ran' END
                WHERE ended_at IS NULL
                """, arguments: [instant.microseconds])
            return interrupted
        }
    }

    /// What the history remembers of every job.
    public func jobMemories() async throws -> [String: JobMemory] {
        try await database.read { db in
            var result: [String: JobMemory] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT name, last_occurrence, first_seen, paused FROM jobs") {
                let last: Int64? = row["last_occurrence"]
                let first: Int64 = row["first_seen"]
                result[row["name"]] = JobMemory(lastOccurrence: last.map { Timestamp(microseconds: $0) },
                                                firstSeen: Timestamp(microseconds: first), paused: row["paused"])
            }
            return result
        }
    }

    /// Records that these jobs exist from `instant` on (jobs already known keep their date).
    public func registerJobs(_ names: [String], at instant: Timestamp) async throws {
        try await database.write { db in
            for name in names {
                try db.execute(sql: "INSERT INTO jobs (name, first_seen) VALUES (?, ?) ON CONFLICT(name) DO NOTHING",
                               arguments: [name, instant.microseconds])
            }
        }
    }

    // MARK: - Reads

    /// Runs newest first.
    public func runs(_ query: RunQuery) async throws -> [RunRecord] {
        try await database.read { db in
            var conditions: [String] = []
            var arguments: [any DatabaseValueConvertible] = []
            func add(_ condition: String, _ values: any DatabaseValueConvertible...) {
                conditions.append(condition)
                arguments.append(contentsOf: values)
            }
            if let job = query.job { add("job = ?", job) }
            if let outcome = query.outcome { add("outcome = ?", outcome) }
            if let before = query.before { add("id < ?", before) }
            if let fire = query.fireID { add("fire_id = ?", fire) }
            if let since = query.since { add("COALESCE(started_at, queued_at) >= ?", since.microseconds) }
            if let until = query.until { add("COALESCE(started_at, queued_at) < ?", until.microseconds) }
            if let abbreviation = query.abbreviation {
                add("(substr(id, 1, ?) = ? OR substr(id, -?) = ?)", abbreviation.utf8.count, abbreviation, abbreviation.utf8.count, abbreviation)
            }
            let filter = conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND ")
            let rows = try Row.fetchAll(db, sql: "SELECT * FROM runs \(filter) ORDER BY id DESC LIMIT ?",
                                        arguments: StatementArguments(arguments + [query.limit]))
            return rows.map(Self.record(from:))
        }
    }

    /// One run.
    public func run(id: RunID) async throws -> RunRecord? {
        try await database.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM runs WHERE id = ?", arguments: [id.rawValue]).map(Self.record(from:))
        }
    }

    /// How many runs a job has in the history.
    public func count(job: String) async throws -> Int {
        try await database.read { db in
            try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM runs WHERE job = ?", arguments: [job]) ?? 0
        }
    }

    static func record(from row: Row) -> RunRecord {
        var record = RunRecord(
            id: RunID(rawValue: row["id"]),
            job: row["job"],
            trigger: RunTrigger(rawValue: row["trigger"]) ?? .schedule,
            scheduledTime: Timestamp(microseconds: row["scheduled_at"]),
            attempt: row["attempt"],
            fireID: RunID(rawValue: row["fire_id"]),
            queuedAt: Timestamp(microseconds: row["queued_at"])
        )
        record.startedAt = (row["started_at"] as Int64?).map { Timestamp(microseconds: $0) }
        record.endedAt = (row["ended_at"] as Int64?).map { Timestamp(microseconds: $0) }
        record.pid = row["pid"]
        record.statusText = row["status_text"]
        if let name: String = row["outcome"] {
            record.outcome = .stored(name: name, exitCode: row["exit_code"], signal: row["signal"], detail: row["detail"])
        }
        if let output: String = row["output"] {
            record.output = OutputTail(capacity: Int.max, lines: StoredOutput.decode(output))
        }
        record.node = row["node"]
        record.usage = ResourceUsage.stored(user: row["cpu_user_us"], system: row["cpu_system_us"], maxResident: row["max_rss_bytes"],
                                            bound: row["max_rss_bound_bytes"])
        record.steps = StoredSteps.decode(row["steps"])
        record.triggeredBy = row["triggered_by"]
        return record
    }

    // MARK: - Writes

    public func write(_ events: [JournalEvent]) async throws {
        try await database.write { db in
            for event in events { try Self.apply(event, in: db) }
        }
    }

    static func apply(_ event: JournalEvent, in db: Database) throws {
        switch event {
        case .fired(let record, let occurrence), .settled(let record, let occurrence):
            try upsert(record, in: db)
            if let occurrence { try handled(job: record.job, occurrence: occurrence, in: db) }
        case .started(let id, let pid, let at):
            try db.cachedStatement(sql: "UPDATE runs SET started_at = ?, pid = ? WHERE id = ?").execute(arguments: [at.microseconds, pid > 0 ? pid : nil, id.rawValue])
        case .finished(let record):
            try upsert(record, in: db)
        case .known(let jobs, let at):
            for job in jobs {
                try db.cachedStatement(sql: "INSERT INTO jobs (name, first_seen) VALUES (?, ?) ON CONFLICT(name) DO NOTHING")
                    .execute(arguments: [job, at.microseconds])
            }
        case .paused(let job, let paused):
            try db.cachedStatement(sql: """
                INSERT INTO jobs (name, first_seen, paused) VALUES (?, ?, ?)
                ON CONFLICT(name) DO UPDATE SET paused = excluded.paused
                """).execute(arguments: [job, WallClock.now().microseconds, paused])
        }
    }

    static func handled(job: String, occurrence: Timestamp, in db: Database) throws {
        try db.cachedStatement(sql: """
            INSERT INTO jobs (name, first_seen, last_occurrence) VALUES (?, ?, ?)
            ON CONFLICT(name) DO UPDATE SET last_occurrence = MAX(COALESCE(last_occurrence, 0), excluded.last_occurrence)
            """).execute(arguments: [job, occurrence.microseconds, occurrence.microseconds])
    }

    static func upsert(_ record: RunRecord, in db: Database) throws {
        let outcome = record.outcome
        try db.cachedStatement(sql: """
            INSERT INTO runs (id, fire_id, job, trigger, attempt, scheduled_at, queued_at, started_at, ended_at, outcome,
                              exit_code, signal, detail, pid, status_text, output, cpu_user_us, cpu_system_us, max_rss_bytes,
                              max_rss_bound_bytes, steps, triggered_by)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT(id) DO UPDATE SET
                started_at = COALESCE(excluded.started_at, started_at), ended_at = excluded.ended_at,
                outcome = excluded.outcome, exit_code = excluded.exit_code, signal = excluded.signal,
                detail = excluded.detail, pid = COALESCE(excluded.pid, pid), status_text = excluded.status_text,
                output = COALESCE(excluded.output, output), cpu_user_us = excluded.cpu_user_us,
                cpu_system_us = excluded.cpu_system_us, max_rss_bytes = excluded.max_rss_bytes,
                max_rss_bound_bytes = excluded.max_rss_bound_bytes, steps = COALESCE(excluded.steps, steps)
            """).execute(arguments: [
                record.id.rawValue, record.fireID.rawValue, record.job, record.trigger.rawValue, record.attempt,
                record.scheduledTime.microseconds, record.queuedAt.microseconds, record.startedAt?.microseconds,
                record.endedAt?.microseconds, outcome?.name, outcome?.exitCode, outcome?.signal, outcome?.detail, record.pid,
                record.progress, record.outcome == nil ? nil : record.output.map { StoredOutput.encode($0.lines) },
                record.usage?.userMicroseconds, record.usage?.systemMicroseconds, record.usage?.maxResidentBytes,
                record.usage?.maxResidentBound, StoredSteps.encode(record.steps), record.triggeredBy,
            ])
    }

    // MARK: - Retention

    public func prune(jobs: Set<String>, keepPerJob: Int, endedBefore cutoff: Timestamp) async throws {
        // A hundred jobs per transaction: one commit for them, not one each, and still no
        // write lock held for long.
        let names = jobs.sorted()
        for start in stride(from: 0, to: names.count, by: 100) {
            let chunk = names[start..<min(start + 100, names.count)]
            try await database.write { db in
                let statement = try db.cachedStatement(sql: """
                    DELETE FROM runs WHERE job = ? AND ended_at IS NOT NULL AND id < (
                        SELECT id FROM runs WHERE job = ? ORDER BY id DESC LIMIT 1 OFFSET ?)
                    """)
                for job in chunk {
                    try statement.execute(arguments: [job, job, keepPerJob - 1])
                }
            }
        }
        while true {
            let deleted = try await database.write { db -> Int in
                try db.execute(sql: """
                    DELETE FROM runs WHERE rowid IN (
                        SELECT rowid FROM runs WHERE ended_at IS NOT NULL AND ended_at < ? LIMIT 1000)
                    """, arguments: [cutoff.microseconds])
                return db.changesCount
            }
            if deleted < 1000 { break }
        }
    }

    public func jobsWithRuns() async throws -> [String] {
        try await database.read { db in try String.fetchAll(db, sql: "SELECT DISTINCT job FROM runs") }
    }

    public func describe(_ error: any Error) -> String {
        if let error = error as? DatabaseError {
            switch error.resultCode {
            case .SQLITE_FULL: return "disk full"
            case .SQLITE_READONLY: return "read-only database or directory"
            case .SQLITE_CANTOPEN: return "cannot open the database file"
            case .SQLITE_IOERR: return "I/O error"
            default: return error.message ?? "\(error.resultCode)"
            }
        }
        return "\(error)"
    }
}
