import JobRunnerHistory
import JobRunnerConfig
import JobRunnerCore
import JobRunnerSchedule
import Logging
import PostgresNIO

/// The run history and job state of a cluster, in PostgreSQL: the same tables as the SQLite
/// store, shared by every node, each run carrying the node that ran it.
public struct PostgresHistory: HistoryStore {
    let database: ClusterDatabase
    /// This node: written on the runs it inserts.
    public let node: String
    let logger: Logger

    /// How long one write may take before it is given up on (and tried again): the starts
    /// waiting for their fire to be on record wait at most this.
    let writeLimit: Duration

    public init(database: ClusterDatabase, node: String, writeLimit: Duration = .seconds(15), logger: Logger) {
        self.database = database
        self.node = node
        self.writeLimit = writeLimit
        self.logger = logger
    }

    public var location: String { database.url.description }

    public func describe(_ error: any Error) -> String {
        "cluster database: " + ClusterDatabase.describe(error)
    }

    // MARK: - Writes

    static let eventsPerTransaction = 256

    public func write(_ events: [JournalEvent]) async throws {
        // In transactions of a few hundred events, each bounded in time: a backlog written after
        // an outage fits the bound too. A part written before a failure is written again with
        // the rest, which changes nothing (every write is an idempotent upsert).
        for start in stride(from: 0, to: events.count, by: Self.eventsPerTransaction) {
            let part = Array(events[start..<min(start + Self.eventsPerTransaction, events.count)])
            try await database.transaction(within: writeLimit, "writing the history") { connection in
                for event in part {
                    try await apply(event, on: connection)
                }
            }
        }
    }

    private func apply(_ event: JournalEvent, on connection: PostgresConnection) async throws {
        switch event {
        case .fired(let record, let occurrence), .settled(let record, let occurrence):
            try await upsert(record, on: connection)
            if let occurrence {
                try await connection.query("""
                    INSERT INTO jobrunner.jobs (name, first_seen, last_occurrence) VALUES (\(record.job), \(occurrence.microseconds), \(occurrence.microseconds))
                    ON CONFLICT (name) DO UPDATE SET last_occurrence = GREATEST(COALESCE(jobs.last_occurrence, 0), excluded.last_occurrence)
                    """, logger: logger)
            }
        case .started(let id, let pid, let at):
            try await connection.query("""
                UPDATE jobrunner.runs SET started_at = \(at.microseconds), pid = \(pid > 0 ? Int64(pid) : nil)
                WHERE id = \(id.rawValue) AND ended_at IS NULL
                """, logger: logger)
        case .finished(let record):
            try await upsert(record, on: connection)
        case .known(let jobs, let at):
            try await connection.query("""
                INSERT INTO jobrunner.jobs (name, first_seen) SELECT unnest(\(jobs)::text[]), \(at.microseconds)
                ON CONFLICT (name) DO NOTHING
                """, logger: logger)
        case .paused(let job, let paused):
            try await connection.query("""
                INSERT INTO jobrunner.jobs (name, first_seen, paused) VALUES (\(job), \(WallClock.now().microseconds), \(paused))
                ON CONFLICT (name) DO UPDATE SET paused = excluded.paused
                """, logger: logger)
        }
    }

    /// Inserts or updates a run; a run already ended (a survivor marked it `interrupted` when it
    /// declared this node dead) is never overwritten.
    private func upsert(_ record: RunRecord, on connection: PostgresConnection) async throws {
        let outcome = record.outcome
        let output = outcome == nil ? nil : record.output.map { Self.clean(StoredOutput.encode($0.lines)) }
        try await connection.query("""
            INSERT INTO jobrunner.runs (id, fire_id, job, trigger, attempt, scheduled_at, queued_at, started_at, ended_at, outcome,
                                        exit_code, signal, detail, pid, status_text, output, node, cpu_user_us, cpu_system_us,
                                        max_rss_bytes, max_rss_bound_bytes, steps, triggered_by)
            VALUES (\(record.id.rawValue), \(record.fireID.rawValue), \(record.job), \(record.trigger.rawValue), \(Int64(record.attempt)),
                    \(record.scheduledTime.microseconds), \(record.queuedAt.microseconds), \(record.startedAt?.microseconds),
                    \(record.endedAt?.microseconds), \(outcome?.name), \(outcome?.exitCode.map(Int64.init)),
                    \(outcome?.signal.map(Int64.init)), \(outcome?.detail.map(Self.clean)), \(record.pid.map(Int64.init)),
                    \(record.progress.map(Self.clean)), \(output), \(node), \(record.usage?.userMicroseconds),
                    \(record.usage?.systemMicroseconds), \(record.usage?.maxResidentBytes), \(record.usage?.maxResidentBound),
                    \(StoredSteps.encode(record.steps).map(Self.clean)), \(record.triggeredBy))
            ON CONFLICT (id) DO UPDATE SET
                started_at = COALESCE(excluded.started_at, runs.started_at), ended_at = excluded.ended_at,
                outcome = excluded.outcome, exit_code = excluded.exit_code, signal = excluded.signal,
                detail = excluded.detail, pid = COALESCE(excluded.pid, runs.pid), status_text = excluded.status_text,
                output = COALESCE(excluded.output, runs.output), cpu_user_us = excluded.cpu_user_us,
                cpu_system_us = excluded.cpu_system_us, max_rss_bytes = excluded.max_rss_bytes,
                max_rss_bound_bytes = excluded.max_rss_bound_bytes, steps = COALESCE(excluded.steps, runs.steps)
            WHERE runs.ended_at IS NULL
            """, logger: logger)
    }

    /// PostgreSQL text cannot hold NUL.
    static func clean(_ text: String) -> String {
        text.contains("\u{0}") ? String(text.map { $0 == "\u{0}" ? "\u{FFFD}" : $0 }) : text
    }

    // MARK: - Retention

    public func prune(jobs: Set<String>, keepPerJob: Int, endedBefore cutoff: Timestamp) async throws {
        // Bounded like the writes: the history writer waits for it.
        try await database.within(writeLimit, "pruning the history") { [self] in
            try await pruneNow(jobs: jobs, keepPerJob: keepPerJob, endedBefore: cutoff)
        }
    }

    private func pruneNow(jobs: Set<String>, keepPerJob: Int, endedBefore cutoff: Timestamp) async throws {
        for job in jobs {
            try await database.client.query("""
                DELETE FROM jobrunner.runs WHERE job = \(job) AND ended_at IS NOT NULL AND id < (
                    SELECT id FROM jobrunner.runs WHERE job = \(job) ORDER BY id DESC LIMIT 1 OFFSET \(Int64(keepPerJob - 1)))
                """, logger: logger)
        }
        try await database.client.query("""
            DELETE FROM jobrunner.runs WHERE ended_at IS NOT NULL AND ended_at < \(cutoff.microseconds)
            """, logger: logger)
        // Claims are only needed while an occurrence could still be claimed by a late node.
        try await database.client.query("""
            DELETE FROM jobrunner.occurrences WHERE occurrence < \(cutoff.microseconds)
            """, logger: logger)
    }

    public func jobsWithRuns() async throws -> [String] {
        var result: [String] = []
        for try await name in try await database.client.query("SELECT DISTINCT job FROM jobrunner.runs", logger: logger)
            .decode(String.self)
        {
            result.append(name)
        }
        return result
    }

    // MARK: - Recovery

    /// Marks this node's runs left unfinished by its previous incarnation as `interrupted`.
    public func recoverInterrupted(at instant: Timestamp) async throws -> [InterruptedRun] {
        var result: [InterruptedRun] = []
        let rows = try await database.client.query("""
            UPDATE jobrunner.runs SET ended_at = \(instant.microseconds), outcome = 'interrupted',
                detail = CASE WHEN started_at IS NULL THEN 'the daemon stopped before it started' ELSE 'the daemon stopped while it ran' END
            WHERE node = \(node) AND ended_at IS NULL
            RETURNING id, job, pid
            """, logger: logger)
        for try await (id, job, pid) in rows.decode((String, String, Int64?).self) {
            result.append(InterruptedRun(id: RunID(rawValue: id), job: job, pid: pid.map { Int32(truncatingIfNeeded: $0) }))
        }
        return result
    }

    public func jobMemories() async throws -> [String: JobMemory] {
        var result: [String: JobMemory] = [:]
        let rows = try await database.client.query("SELECT name, last_occurrence, first_seen, paused FROM jobrunner.jobs", logger: logger)
        for try await (name, last, first, paused) in rows.decode((String, Int64?, Int64, Bool).self) {
            result[name] = JobMemory(lastOccurrence: last.map { Timestamp(microseconds: $0) }, firstSeen: Timestamp(microseconds: first),
                                     paused: paused)
        }
        return result
    }

    // MARK: - Reads

    static let columns = """
        id, fire_id, job, trigger, attempt, scheduled_at, queued_at, started_at, ended_at, outcome, exit_code, signal, detail, pid,
        status_text, output, node, cpu_user_us, cpu_system_us, max_rss_bytes, max_rss_bound_bytes, steps, triggered_by
        """

    public func runs(_ query: RunQuery) async throws -> [RunRecord] {
        var binds = PostgresBindings()
        var conditions: [String] = []
        func bind(_ value: some PostgresNonThrowingEncodable & Sendable) -> String {
            binds.append(value)
            return "$\(binds.count)"
        }
        if let job = query.job { conditions.append("job = \(bind(job))") }
        if let outcome = query.outcome { conditions.append("outcome = \(bind(outcome))") }
        if let before = query.before { conditions.append("id < \(bind(before))") }
        if let fire = query.fireID { conditions.append("fire_id = \(bind(fire))") }
        if let since = query.since { conditions.append("COALESCE(started_at, queued_at) >= \(bind(since.microseconds))") }
        if let until = query.until { conditions.append("COALESCE(started_at, queued_at) < \(bind(until.microseconds))") }
        if let abbreviation = query.abbreviation {
            let text = bind(abbreviation)
            conditions.append("(starts_with(id, \(text)) OR right(id, length(\(text))) = \(text))")
        }
        let limit = bind(Int64(query.limit))
        let filter = conditions.isEmpty ? "" : "WHERE " + conditions.map { "(\($0))" }.joined(separator: " AND ")
        let sql = PostgresQuery(unsafeSQL: "SELECT \(Self.columns) FROM jobrunner.runs \(filter) ORDER BY id DESC LIMIT \(limit)",
                                binds: binds)
        return try await records(try await database.client.query(sql, logger: logger))
    }

    public func run(id: RunID) async throws -> RunRecord? {
        let query: PostgresQuery = "SELECT \(unescaped: Self.columns) FROM jobrunner.runs WHERE id = \(id.rawValue)"
        return try await records(try await database.client.query(query, logger: logger)).first
    }

    public func count(job: String) async throws -> Int {
        var total = 0
        for try await count in try await database.client.query("SELECT count(*) FROM jobrunner.runs WHERE job = \(job)", logger: logger)
            .decode(Int64.self)
        {
            total = Int(count)
        }
        return total
    }

    private func records(_ rows: PostgresRowSequence) async throws -> [RunRecord] {
        var result: [RunRecord] = []
        typealias Columns = (String, String, String, String, Int64, Int64, Int64, Int64?, Int64?, String?, Int64?, Int64?, String?,
                             Int64?, String?, String?, String, Int64?, Int64?, Int64?, Int64?, String?, String?)
        for try await row in rows.decode(Columns.self) {
            var record = RunRecord(id: RunID(rawValue: row.0), job: row.2, trigger: RunTrigger(rawValue: row.3) ?? .schedule,
                                   scheduledTime: Timestamp(microseconds: row.5), attempt: Int(row.4), fireID: RunID(rawValue: row.1),
                                   queuedAt: Timestamp(microseconds: row.6))
            record.startedAt = row.7.map { Timestamp(microseconds: $0) }
            record.endedAt = row.8.map { Timestamp(microseconds: $0) }
            if let name = row.9 {
                record.outcome = .stored(name: name, exitCode: row.10.map { Int32(truncatingIfNeeded: $0) },
                                         signal: row.11.map { Int32(truncatingIfNeeded: $0) }, detail: row.12)
            }
            record.pid = row.13.map { Int32(truncatingIfNeeded: $0) }
            record.statusText = row.14
            if let output = row.15 {
                record.output = OutputTail(capacity: Int.max, lines: StoredOutput.decode(output))
            }
            record.node = row.16
            record.usage = ResourceUsage.stored(user: row.17, system: row.18, maxResident: row.19, bound: row.20)
            record.steps = StoredSteps.decode(row.21)
            record.triggeredBy = row.22
            result.append(record)
        }
        return result
    }
}
