import JobRunnerConfig
import JobRunnerSchedule
import Logging

/// What the dispatch machine decided; the scheduler carries it out, in order.
public enum DispatchAction: Sendable {
    /// Record this in the run registry and the history. A run's fire is always journalled
    /// before its `start`.
    case journal(JournalEvent)
    /// What a run that is not running yet waits for (shown in status); nil once it runs.
    case waitingFor(RunID, String?)
    /// Start the run's process.
    case start(RunRequest)
    /// Start the kill sequence of a running run (it then ends as `cancelled`).
    case stop(RunID)
    /// Claim these occurrences for this node (one statement); the answer comes back to
    /// ``DispatchMachine/claimed(_:)``.
    case claim([ClaimRequest])
    /// Ask for one slot of a cluster-wide pool; the answer comes back to
    /// ``DispatchMachine/slotAnswered(run:granted:)``.
    case acquireSlot(pool: String, size: Int, run: RunID, since: Timestamp)
    /// Give occurrences this node claimed but will not run back to the cluster (a draining
    /// node), so another node claims and runs them.
    case releaseClaims([ClaimRequest])
    /// Give a cluster-wide pool slot back (or stop waiting for one).
    case releaseSlot(pool: String, run: RunID)
    /// Run a job's `on_failure`/`on_success` hook for a fire's final result.
    case runHook(JobCommand, kind: String, request: RunRequest, result: RunResult)
    /// Something an operator should read.
    case log(Logger.Level, String, Logger.Metadata)
}

extension DispatchAction: CustomStringConvertible {
    public var description: String {
        switch self {
        case .journal(let event): "journal(\(event))"
        case .waitingFor(let id, let text): "waitingFor(\(id), \(text ?? "nil"))"
        case .start(let request): "start(\(request.job.name) \(request.id) attempt \(request.attempt))"
        case .stop(let id): "stop(\(id))"
        case .claim(let requests): "claim(\(requests.map { "\($0.job)@\($0.occurrence)" }))"
        case .acquireSlot(let pool, _, let run, _): "acquireSlot(\(pool), \(run))"
        case .releaseClaims(let claims): "releaseClaims(\(claims.map { "\($0.job)@\($0.occurrence)" }))"
        case .releaseSlot(let pool, let run): "releaseSlot(\(pool), \(run))"
        case .runHook(_, let kind, let request, _): "runHook(\(kind), \(request.id))"
        case .log(let level, let message, _): "log(\(level), \(message))"
        }
    }
}

/// What happened outside the machine that it must know: fed to it by the scheduler.
public enum DispatchEvent: Sendable {
    /// A run's process started.
    case started(RunID, pid: Int32, at: Timestamp)
    /// A run ended (its process exited, or it never started).
    case ended(RunID, RunResult)
    /// What the run left outside its process group has been killed (after `ended`): its hook
    /// may run now without being taken for a leftover.
    case swept(RunID)
    /// The cluster answered a claim.
    case claimed([ClaimRequest], [ClaimResult])
    /// The cluster answered a request for a slot of a cluster-wide pool.
    case slot(RunID, pool: String, granted: Bool)
}
