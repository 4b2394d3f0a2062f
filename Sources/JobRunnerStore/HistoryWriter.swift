import Foundation
import GRDB
import JobRunnerCore
import JobRunnerSchedule
import Logging
import ServiceLifecycle
import Synchronization

/// Writes the engine's journal to SQLite: in order, in batches (one transaction for whatever
/// accumulated while the previous one was written), never blocking the scheduler.
///
/// When the disk is full or read-only, runs go on: the failure is logged once a minute and shown
/// in status, events wait in a bounded backlog, and writing resumes by itself when it can.
public final class HistoryWriter: RunJournal, Service {
    /// Retention: kept per job, and no older than.
    public struct Retention: Sendable, Hashable {
        public var keepPerJob: Int
        public var maxAge: Duration

        public init(keepPerJob: Int, maxAge: Duration) {
            self.keepPerJob = keepPerJob
            self.maxAge = maxAge
        }
    }

    /// Events waiting beyond this are dropped (oldest first) while writing fails.
    static let backlogLimit = 50_000
    static let retryInterval: Duration = .seconds(5)

    private struct State {
        var pending: [JournalEvent] = []
        var recorded: UInt64 = 0
        var settled: UInt64 = 0
        var waiters: [(target: UInt64, continuation: CheckedContinuation<Void, Never>)] = []
        var failure: String?
        var lastFailureLog: ContinuousClock.Instant?
        var dropped = 0
        var retention: Retention
        var touchedJobs: Set<String> = []
        var lastPrune = ContinuousClock.now
    }

    private let history: SQLiteHistory
    private let state: Mutex<State>
    private let onHealthChange: @Sendable (String?) -> Void
    private let wake = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
    private let logger: Logger

    /// `onHealthChange` is called with the failure when writes start failing and with nil when
    /// they resume.
    public init(history: SQLiteHistory, retention: Retention, logger: Logger, onHealthChange: @escaping @Sendable (String?) -> Void = { _ in }) {
        self.onHealthChange = onHealthChange
        self.history = history
        self.state = Mutex(State(retention: retention))
        self.logger = logger
    }

    /// Why history writes are failing right now, if they are.
    public var failure: String? { state.withLock { $0.failure } }

    public func setRetention(_ retention: Retention) {
        state.withLock { $0.retention = retention }
    }

    // MARK: - RunJournal

    public func record(_ event: JournalEvent) {
        state.withLock { state in
            state.pending.append(event)
            state.recorded += 1
            if state.pending.count > Self.backlogLimit {
                let excess = state.pending.count - Self.backlogLimit
                state.pending.removeFirst(excess)
                state.settled += UInt64(excess)
                state.dropped += excess
            }
        }
        wake.continuation.yield()
    }

    public func flush() async {
        await withCheckedContinuation { continuation in
            let done = state.withLock { state -> Bool in
                if state.settled >= state.recorded || state.failure != nil { return true }
                state.waiters.append((state.recorded, continuation))
                return false
            }
            if done { continuation.resume() }
        }
    }

    // MARK: - Service

    public func run() async {
        let wakes = wake.stream
        var iterator = wakes.makeAsyncIterator()
        await withGracefulShutdownHandler {
            while true {
                let failing = state.withLock { $0.failure != nil }
                if failing {
                    // Retry after a pause, or sooner if more events arrive.
                    try? await Task.sleep(for: Self.retryInterval)
                } else if await iterator.next() == nil {
                    break
                }
                await writePending()
                if Task.isShuttingDownGracefully { break }
            }
        } onGracefulShutdown: { [wake] in
            wake.continuation.finish()
        }
        // Shutdown: write what is left (one attempt).
        await writePending()
        releaseAllWaiters()
    }

    /// Writes everything pending in one transaction; on failure keeps it for the next attempt.
    func writePending() async {
        let (batch, retention, prune) = state.withLock { state -> ([JournalEvent], Retention, Set<String>?) in
            let batch = state.pending
            state.pending.removeAll(keepingCapacity: true)
            var prune: Set<String>?
            if ContinuousClock.now - state.lastPrune > .seconds(30) || state.touchedJobs.count > 200 {
                prune = state.touchedJobs
            }
            return (batch, state.retention, prune)
        }
        guard !batch.isEmpty || prune != nil else { return }
        do {
            try await history.database.write { db in
                for event in batch { try Self.apply(event, in: db) }
            }
            let recovered = state.withLock { state -> (String?, Int) in
                let previous = state.failure
                state.failure = nil
                state.settled += UInt64(batch.count)
                for event in batch { if let job = event.job { state.touchedJobs.insert(job) } }
                let dropped = state.dropped
                state.dropped = 0
                return (previous, dropped)
            }
            if let previous = recovered.0 {
                logger.notice("history writes resumed", metadata: ["after": "\(previous)", "dropped_events": "\(recovered.1)"])
                onHealthChange(nil)
            }
            releaseWaiters()
            if let prune {
                await self.prune(jobs: prune, retention: retention)
            }
        } catch {
            let reason = Self.describe(error)
            let (shouldLog, changed) = state.withLock { state -> (Bool, Bool) in
                // Put the batch back in front of anything recorded meanwhile.
                state.pending = batch + state.pending
                let changed = state.failure != reason
                state.failure = reason
                let now = ContinuousClock.now
                if let last = state.lastFailureLog, now - last < .seconds(60) { return (false, changed) }
                state.lastFailureLog = now
                return (true, changed)
            }
            if changed { onHealthChange(reason) }
            if shouldLog {
                logger.error("cannot write history, runs go on; retrying every 5s", metadata: [
                    "error": "\(reason)", "path": "\(history.path)", "pending": "\(batch.count)",
                ])
            }
            // Nobody waits on a failing disk.
            releaseAllWaiters()
        }
    }

    private func releaseWaiters() {
        let ready = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            let ready = state.waiters.filter { $0.target <= state.settled }.map(\.continuation)
            state.waiters.removeAll { $0.target <= state.settled }
            return ready
        }
        ready.forEach { $0.resume() }
    }

    private func releaseAllWaiters() {
        let all = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            defer { state.waiters.removeAll() }
            return state.waiters.map(\.continuation)
        }
        all.forEach { $0.resume() }
    }

    // MARK: - Retention

    /// Deletes beyond `keep_per_job` for the jobs written since the last prune, and anything
    /// older than `max_age`, in small transactions so no write lock is held for long.
    func prune(jobs: Set<String>, retention: Retention) async {
        state.withLock { state in
            state.touchedJobs.subtract(jobs)
            state.lastPrune = .now
        }
        do {
            for job in jobs {
                try await history.database.write { db in
                    try db.execute(sql: """
                        DELETE FROM runs WHERE job = ? AND ended_at IS NOT NULL AND id < (
                            SELECT id FROM runs WHERE job = ? ORDER BY id DESC LIMIT 1 OFFSET ?)
                        """, arguments: [job, job, retention.keepPerJob - 1])
                }
            }
            let cutoff = Int64(Date().timeIntervalSince1970 * 1_000_000) - retention.maxAge.wholeMicroseconds
            while true {
                let deleted = try await history.database.write { db -> Int in
                    try db.execute(sql: """
                        DELETE FROM runs WHERE rowid IN (
                            SELECT rowid FROM runs WHERE ended_at IS NOT NULL AND ended_at < ? LIMIT 1000)
                        """, arguments: [cutoff])
                    return db.changesCount
                }
                if deleted < 1000 { break }
            }
        } catch {
            logger.warning("history pruning failed, will retry", metadata: ["error": "\(Self.describe(error))"])
        }
    }

    /// Runs retention now for every job (tests and start-up).
    public func pruneAll() async {
        let jobs = (try? await history.database.read { db in try String.fetchAll(db, sql: "SELECT DISTINCT job FROM runs") }) ?? []
        await prune(jobs: Set(jobs), retention: state.withLock { $0.retention })
    }

    // MARK: - Events → rows

    static func apply(_ event: JournalEvent, in db: Database) throws {
        switch event {
        case .fired(let record, let occurrence):
            try upsert(record, in: db)
            if let occurrence { try handled(job: record.job, occurrence: occurrence, in: db) }
        case .settled(let record, let occurrence):
            try upsert(record, in: db)
            if let occurrence { try handled(job: record.job, occurrence: occurrence, in: db) }
        case .started(let id, let pid, let at):
            try db.execute(sql: "UPDATE runs SET started_at = ?, pid = ? WHERE id = ?", arguments: [at.microseconds, pid, id.rawValue])
        case .finished(let record):
            try upsert(record, in: db)
        case .known(let jobs, let at):
            for job in jobs {
                try db.execute(sql: "INSERT INTO jobs (name, first_seen) VALUES (?, ?) ON CONFLICT(name) DO NOTHING",
                               arguments: [job, at.microseconds])
            }
        case .paused(let job, let paused):
            try db.execute(sql: """
                INSERT INTO jobs (name, first_seen, paused) VALUES (?, ?, ?)
                ON CONFLICT(name) DO UPDATE SET paused = excluded.paused
                """, arguments: [job, Int64(Date().timeIntervalSince1970 * 1_000_000), paused])
        }
    }

    static func handled(job: String, occurrence: Timestamp, in db: Database) throws {
        try db.execute(sql: """
            INSERT INTO jobs (name, first_seen, last_occurrence) VALUES (?, ?, ?)
            ON CONFLICT(name) DO UPDATE SET last_occurrence = MAX(COALESCE(last_occurrence, 0), excluded.last_occurrence)
            """, arguments: [job, occurrence.microseconds, occurrence.microseconds])
    }

    static func upsert(_ record: RunRecord, in db: Database) throws {
        let outcome = record.outcome
        try db.execute(sql: """
            INSERT INTO runs (id, fire_id, job, trigger, attempt, scheduled_at, queued_at, started_at, ended_at, outcome,
                              exit_code, signal, detail, pid, status_text, output)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT(id) DO UPDATE SET
                started_at = COALESCE(excluded.started_at, started_at), ended_at = excluded.ended_at,
                outcome = excluded.outcome, exit_code = excluded.exit_code, signal = excluded.signal,
                detail = excluded.detail, pid = COALESCE(excluded.pid, pid), status_text = excluded.status_text,
                output = COALESCE(excluded.output, output)
            """, arguments: [
                record.id.rawValue, record.fireID.rawValue, record.job, record.trigger.rawValue, record.attempt,
                record.scheduledTime.microseconds, record.queuedAt.microseconds, record.startedAt?.microseconds,
                record.endedAt?.microseconds, outcome?.name, outcome?.exitCode, outcome?.signal, outcome?.detail, record.pid,
                record.progress, record.outcome == nil ? nil : record.output.map { SQLiteHistory.encodeOutput($0.lines) },
            ])
    }

    static func describe(_ error: any Error) -> String {
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

extension JournalEvent {
    var job: String? {
        switch self {
        case .fired(let record, _), .settled(let record, _), .finished(let record): record.job
        case .started, .paused, .known: nil
        }
    }
}
