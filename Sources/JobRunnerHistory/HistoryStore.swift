import JobRunnerCore
import JobRunnerSchedule

/// Where the run history and job state live: the embedded SQLite file (`SQLiteHistory`), or
/// the cluster's PostgreSQL (`PostgresHistory`, in JobRunnerCluster). `HistoryWriter` writes
/// to either in batches; the control API reads from either.
public protocol HistoryStore: Sendable {
    /// Where the history is (a path, or a database URL without its password), for messages.
    var location: String { get }

    /// Writes `events` in order, in one transaction.
    func write(_ events: [JournalEvent]) async throws
    /// Deletes finished runs of `jobs` beyond the newest `keepPerJob`, and any finished runs
    /// that ended before `cutoff`, in small transactions.
    func prune(jobs: Set<String>, keepPerJob: Int, endedBefore cutoff: Timestamp) async throws
    /// Every job that has runs.
    func jobsWithRuns() async throws -> [String]
    /// A short reason for a failed write ("disk full"), for the log and status.
    func describe(_ error: any Error) -> String

    /// Marks the runs this daemon left unfinished as `interrupted` and returns them.
    func recoverInterrupted(at instant: Timestamp) async throws -> [InterruptedRun]
    /// What the history remembers of every job.
    func jobMemories() async throws -> [String: JobMemory]

    /// Runs newest first.
    func runs(job: String?, outcome: String?, before: String?, limit: Int) async throws -> [RunRecord]
    /// One run.
    func run(id: RunID) async throws -> RunRecord?
    /// How many runs a job has.
    func count(job: String) async throws -> Int
}

/// A run that was alive when its daemon (or node) stopped.
public struct InterruptedRun: Sendable, Hashable {
    public var id: RunID
    public var job: String
    public var pid: Int32?

    public init(id: RunID, job: String, pid: Int32?) {
        self.id = id
        self.job = job
        self.pid = pid
    }
}

extension HistoryStore {
    public func runs(job: String? = nil, outcome: String? = nil, before: String? = nil, limit: Int) async throws -> [RunRecord] {
        try await runs(job: job, outcome: outcome, before: before, limit: limit)
    }
}

/// Output lines as stored: one per line, `o ` or `e ` first.
public enum StoredOutput {
    public static func encode(_ lines: [OutputLine]) -> String {
        lines.map { ($0.stream == .stdout ? "o " : "e ") + $0.text.replacingNewlines() }.joined(separator: "\n")
    }

    public static func decode(_ text: String) -> [OutputLine] {
        guard !text.isEmpty else { return [] }
        return text.split(separator: "\n", omittingEmptySubsequences: false).map { line in
            OutputLine(stream: line.hasPrefix("e ") ? .stderr : .stdout, text: String(line.dropFirst(2)))
        }
    }
}

extension RunOutcome {
    /// The outcome stored as `name` with its details.
    public static func stored(name: String, exitCode: Int32?, signal: Int32?, detail: String?) -> RunOutcome {
        switch name {
        case "succeeded": .succeeded
        case "failed": .failed(exitCode: exitCode ?? 1)
        case "signalled": .signalled(signal ?? 0)
        case "timed_out": .timedOut
        case "cancelled": .cancelled
        case "spawn_failed": .spawnFailed(reason: detail ?? "")
        case "skipped": .skipped(reason: detail ?? "")
        default: .interrupted
        }
    }
}

extension JournalEvent {
    /// The job an event concerns, when it is about a run.
    var job: String? {
        switch self {
        case .fired(let record, _), .settled(let record, _), .finished(let record): record.job
        case .started, .paused, .known: nil
        }
    }
}

extension String {
    fileprivate func replacingNewlines() -> String {
        String(map { $0.isNewline ? " " : $0 })
    }
}
