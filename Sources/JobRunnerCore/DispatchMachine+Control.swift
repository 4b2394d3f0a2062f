import JobRunnerConfig
import JobRunnerSchedule
import Logging
import OrderedCollections

/// What a cancel request did.
public enum CancelResult: Sendable {
    /// The run was alive: its kill sequence has started; it ends as `cancelled`.
    case stopping(RunRecord)
    /// The run had not started (waiting, queued or in a retry's backoff): it is dropped and
    /// recorded as `cancelled`.
    case dropped(RunRecord)
    /// The run had already finished.
    case alreadyFinished(RunRecord)
    /// No run has this id.
    case notFound
}

extension DispatchMachine {
    /// Cancels one run: a live one with its job's kill sequence, a waiting one at once. Pending
    /// retries of the same fire stop too. `finished` is the record of a run that has already
    /// ended (from the registry), so cancelling it stops a retry of its fire still in its backoff.
    public mutating func cancel(run id: RunID, finished: RunRecord? = nil, now: Timestamp) -> (CancelResult, [DispatchAction]) {
        if let entry = work[id] {
            switch entry.stage {
            case .running:
                dropRetries(ofFire: entry.request.fireID, now: now)
                stop(id)
                return (.stopping(entry.record), take())
            case .claiming:
                return (.notFound, take())
            case .armed, .waiting, .queued, .retrying:
                let record = settle(id, outcome: .cancelled, now: now)
                startWaiting(now: now)
                return (record.map { .dropped($0) } ?? .notFound, take())
            }
        }
        guard let finished else { return (.notFound, take()) }
        if let retry = ids(where: { $0.request.fireID == finished.fireID && $0.id != id && $0.stage != .running }).first,
            let record = settle(retry, outcome: .cancelled, now: now)
        {
            return (.dropped(record), take())
        }
        return (.alreadyFinished(finished), take())
    }

    /// The ids of a job's live and waiting runs.
    public func activeRuns(ofJob name: String) -> [RunID] {
        entries(ofJob: name).filter { $0.stage != .claiming }.map(\.id)
    }

    /// Fires a job now, as if its schedule said so (overlap policy and limits apply). Returns
    /// the run's record, or nil when there is no such job. `id` is the run's id when another
    /// node chose it (a run asked for across the cluster).
    public mutating func runNow(job name: String, id: RunID? = nil, now: Timestamp) -> (RunRecord?, [DispatchAction]) {
        guard let job = jobs[name]?.definition else { return (nil, take()) }
        let record = fire(job, scheduledTime: now, trigger: .manual, id: id, now: now)
        startWaiting(now: now)
        return (record, take())
    }

    /// Pauses or resumes a job (kept across restarts: journalled); false when there is no such
    /// job. A paused job's fires are recorded as skipped.
    public mutating func setPaused(job name: String, _ isPaused: Bool, remote: Bool = false) -> (Bool, [DispatchAction]) {
        guard jobs[name] != nil else { return (false, take()) }
        let changed = isPaused ? paused.insert(name).inserted : paused.remove(name) != nil
        if changed {
            if !remote { out.append(.journal(.paused(job: name, isPaused))) }
            let message = remote ? (isPaused ? "job paused on another node" : "job resumed on another node") : (isPaused ? "job paused" : "job resumed")
            log(.notice, message, ["job": "\(name)"])
        }
        return (true, take())
    }

    /// Whether a job is paused.
    public func isPaused(_ name: String) -> Bool {
        paused.contains(name)
    }

    /// Drops the pending retries of a fire (recorded `cancelled`).
    mutating func dropRetries(ofFire fireID: RunID, now: Timestamp) {
        let retries = ids(where: { entry in
            guard entry.request.fireID == fireID, case .retrying = entry.stage else { return false }
            return true
        })
        for id in retries { settle(id, outcome: .cancelled, now: now) }
    }
}
