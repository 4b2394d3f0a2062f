import JobRunnerConfig
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
    func runs(_ query: RunQuery) async throws -> [RunRecord]
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

/// Which runs to read, newest first.
public struct RunQuery: Sendable, Hashable {
    public var job: String?
    public var outcome: String?
    /// Only runs whose id sorts before this one (paging).
    public var before: String?
    /// Only runs that started (or, not started, were queued) at or after this instant.
    public var since: Timestamp?
    /// Only runs that started (or were queued) before this instant.
    public var until: Timestamp?
    /// Only runs whose id starts or ends with this text (an abbreviated id).
    public var abbreviation: String?
    /// Only the attempts of this fire.
    public var fireID: String?
    public var limit: Int

    public init(job: String? = nil, outcome: String? = nil, before: String? = nil, since: Timestamp? = nil, until: Timestamp? = nil,
                abbreviation: String? = nil, fireID: String? = nil, limit: Int) {
        self.fireID = fireID
        self.job = job
        self.outcome = outcome
        self.before = before
        self.since = since
        self.until = until
        self.abbreviation = abbreviation
        self.limit = limit
    }

    /// Whether a run matches every condition but the limit.
    public func matches(_ record: RunRecord) -> Bool {
        let id = record.id.rawValue
        let start = record.startedAt ?? record.queuedAt
        return (job == nil || record.job == job) && (outcome == nil || outcome == (record.outcome?.name ?? record.phase.rawValue))
            && (before.map { id < $0 } ?? true) && (since.map { start >= $0 } ?? true) && (until.map { start < $0 } ?? true)
            && (abbreviation.map { id.hasPrefix($0) || id.hasSuffix($0) } ?? true) && (fireID.map { record.fireID.rawValue == $0 } ?? true)
    }
}

extension HistoryStore {
    public func runs(job: String? = nil, outcome: String? = nil, before: String? = nil, limit: Int) async throws -> [RunRecord] {
        try await runs(RunQuery(job: job, outcome: outcome, before: before, limit: limit))
    }
}

/// Output lines as stored: one per line, `O<µs> ` (stdout) or `E<µs> ` (stderr) first, where
/// `<µs>` is the microseconds since the previous timed line (the first: since the epoch), so a
/// run printing many lines at once adds 2 bytes a line, not 17; lines stored before they
/// carried a time start with `o ` or `e `. A line a step printed has `@<step>` after the time
/// (step names have no spaces).
public enum StoredOutput {
    public static func encode(_ lines: [OutputLine]) -> String {
        var previous: Int64 = 0
        return lines.map { line in
            let stream = line.stream == .stdout ? "o" : "e"
            guard let at = line.at else { return stream + " " + line.text.replacingNewlines() }
            defer { previous = at.microseconds }
            let step = line.step.map { "@" + $0 } ?? ""
            return stream.uppercased() + String(at.microseconds &- previous) + step + " " + line.text.replacingNewlines()
        }.joined(separator: "\n")
    }

    public static func decode(_ text: String) -> [OutputLine] {
        guard !text.isEmpty else { return [] }
        var previous: Int64 = 0
        return text.split(separator: "\n", omittingEmptySubsequences: false).map { line in
            let stderr = line.hasPrefix("e") || line.hasPrefix("E")
            if line.hasPrefix("O") || line.hasPrefix("E"), let space = line.firstIndex(of: " ") {
                let head = line[line.index(after: line.startIndex)..<space]
                let at = head.firstIndex(of: "@")
                if let delta = Int64(head[..<(at ?? head.endIndex)]) {
                    previous = previous &+ delta
                    return OutputLine(stream: stderr ? .stderr : .stdout, text: String(line[line.index(after: space)...]),
                                      at: Timestamp(microseconds: previous), step: at.map { String(head[head.index(after: $0)...]) })
                }
            }
            return OutputLine(stream: stderr ? .stderr : .stdout, text: String(line.dropFirst(2)))
        }
    }
}

/// Steps as stored: one line per step in tree order, tab-separated fields (empty for none):
/// depth, kind, name, outcome, exit code, signal, started and ended (µs since the epoch), pid,
/// user and system CPU (µs), peak resident bytes, its bound, `1` for continue_on_failure, the
/// outcome's detail (tabs and newlines made spaces), and an HTTP step's status.
public enum StoredSteps {
    public static func encode(_ steps: [StepResult]) -> String? {
        guard !steps.isEmpty else { return nil }
        return steps.map { step in
            func text<T>(_ value: T?) -> String { value.map { "\($0)" } ?? "" }
            let fields: [String] = [
                "\(step.depth)", step.kind.rawValue, step.name, step.outcome.name, text(step.outcome.exitCode), text(step.outcome.signal),
                text(step.startedAt?.microseconds), text(step.endedAt?.microseconds), text(step.pid),
                text(step.usage?.userMicroseconds), text(step.usage?.systemMicroseconds), text(step.usage?.maxResidentBytes),
                text(step.usage?.maxResidentBound), step.continueOnFailure ? "1" : "",
                String((step.outcome.detail ?? "").map { $0 == "\t" || $0.isNewline ? " " : $0 }), text(step.httpStatus),
            ]
            return fields.joined(separator: "\t")
        }.joined(separator: "\n")
    }

    public static func decode(_ text: String?) -> [StepResult] {
        guard let text, !text.isEmpty else { return [] }
        return text.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
            guard fields.count >= 15, let depth = Int(fields[0]), let kind = StepKind(rawValue: fields[1]) else { return nil }
            let detail = fields[14].isEmpty ? nil : fields[14]
            let outcome = RunOutcome.stored(name: fields[3], exitCode: Int32(fields[4]), signal: Int32(fields[5]), detail: detail)
            var step = StepResult(
                name: fields[2], kind: kind, depth: depth, outcome: outcome,
                startedAt: Int64(fields[6]).map { Timestamp(microseconds: $0) }, endedAt: Int64(fields[7]).map { Timestamp(microseconds: $0) },
                pid: Int32(fields[8]),
                usage: ResourceUsage.stored(user: Int64(fields[9]), system: Int64(fields[10]), maxResident: Int64(fields[11]),
                                            bound: Int64(fields[12])),
                continueOnFailure: fields[13] == "1"
            )
            if fields.count > 15 { step.httpStatus = Int(fields[15]) }
            return step
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
        case "http_status": .httpStatus(Int(detail?.split(separator: " ").last ?? "") ?? 0)
        case "request_failed": .requestFailed(reason: detail ?? "", connection: false)
        default: .interrupted
        }
    }
}

extension ResourceUsage {
    /// The usage as stored in nullable columns: nil unless the CPU times are there.
    public static func stored(user: Int64?, system: Int64?, maxResident: Int64?, bound: Int64?) -> ResourceUsage? {
        guard let user, let system else { return nil }
        return ResourceUsage(userMicroseconds: user, systemMicroseconds: system, maxResidentBytes: maxResident, maxResidentBound: bound)
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
