import JobRunnerConfig
import JobRunnerSchedule
import Logging

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

extension Scheduler {
    /// Cancels one run: a live one with its job's kill sequence, a waiting one at once. Pending
    /// retries of the same fire stop too.
    public func cancel(run id: RunID) -> CancelResult {
        let now = clock.now()
        for (name, jobRuns) in runs {
            if let handle = jobRuns.running[id] {
                runs[name]?.cancelled.insert(id)
                dropRetries(ofFire: registry.record(id)?.fireID ?? id)
                handle.cancel()
                return registry.record(id).map { .stopping($0) } ?? .notFound
            }
        }
        if let record = dropWaiting(id, at: now) {
            return .dropped(record)
        }
        guard let record = registry.record(id) else { return .notFound }
        // A finished attempt whose fire still has a retry pending: cancelling it stops the retry.
        if let retry = retries.first(where: { $0.pending.request.fireID == record.fireID }),
            let dropped = dropWaiting(retry.pending.request.id, at: now)
        {
            return .dropped(dropped)
        }
        return .alreadyFinished(record)
    }

    /// Cancels every live or waiting run of a job; returns their ids.
    public func cancel(job name: String) -> [RunID] {
        let ids = registry.active(job: name).map(\.id)
        for id in ids { _ = cancel(run: id) }
        return ids
    }

    /// Fires a job now, as if its schedule said so (overlap policy and limits apply). Returns
    /// the run's record, or nil when there is no such job.
    /// `id` is the run's id when another node chose it (a run asked for across the cluster).
    public func runNow(job name: String, id: RunID? = nil) -> RunRecord? {
        guard let entry = entries[name] else { return nil }
        let record = fire(entry.job, scheduledTime: clock.now(), trigger: .manual, id: id)
        onChange()
        return record
    }

    /// Pauses a job: its fires are recorded as skipped until it is resumed (kept across
    /// restarts). Returns false when there is no such job.
    public func pause(job name: String) -> Bool {
        guard entries[name] != nil else { return false }
        if paused.insert(name).inserted {
            journal?.record(.paused(job: name, true))
            logger.notice("job paused", metadata: ["job": "\(name)"])
            onChange()
        }
        return true
    }

    /// Resumes a paused job. Returns false when there is no such job.
    public func resume(job name: String) -> Bool {
        guard entries[name] != nil else { return false }
        if paused.remove(name) != nil {
            journal?.record(.paused(job: name, false))
            logger.notice("job resumed", metadata: ["job": "\(name)"])
            onChange()
        }
        return true
    }

    /// Whether a job is paused.
    public func isPaused(_ name: String) -> Bool {
        paused.contains(name)
    }

    /// Removes a not-yet-started run (waiting for a slot, queued, or in backoff) and records it.
    private func dropWaiting(_ id: RunID, at now: Timestamp) -> RunRecord? {
        var found = false
        waiting.removeAll { pending in
            guard pending.request.id == id else { return false }
            found = true
            return true
        }
        retries.removeAll { retry in
            guard retry.pending.request.id == id else { return false }
            found = true
            return true
        }
        for name in runs.keys {
            runs[name]?.queued.removeAll { pending in
                guard pending.request.id == id else { return false }
                found = true
                return true
            }
        }
        guard found else { return nil }
        let record = settle(id, outcome: .cancelled, at: now)
        doorbell.ring()
        onChange()
        return record
    }

    private func dropRetries(ofFire fireID: RunID) {
        let now = clock.now()
        for retry in retries where retry.pending.request.fireID == fireID {
            settle(retry.pending.request.id, outcome: .cancelled, at: now)
        }
        retries.removeAll { $0.pending.request.fireID == fireID }
    }
}
