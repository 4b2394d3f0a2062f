import JobRunnerConfig
import JobRunnerSchedule
import Logging
import OrderedCollections

extension DispatchMachine {
    /// Sends the claims gathered since the last tick, as one batch.
    mutating func sendClaims() {
        var batch: [ClaimRequest] = []
        for id in ids(in: .claiming) where work[id]?.claimSent == false {
            guard let claim = work[id]?.fire.claim else { continue }
            work[id]?.claimSent = true
            batch.append(claim)
        }
        if !batch.isEmpty { out.append(.claim(batch)) }
    }

    /// The cluster answered a claim: a won occurrence fires here (under its overlap policy; if
    /// another node runs the job now, `overlap: skip` skips it), a lost one is forgotten.
    mutating func claimed(_ requests: [ClaimRequest], _ results: [ClaimResult], now: Timestamp) {
        let answers = Dictionary(zip(requests, results), uniquingKeysWith: { first, _ in first })
        let claiming = ids(in: .claiming).compactMap { work[$0] }.filter(\.claimSent)
        var released: [ClaimRequest] = []
        defer { if !released.isEmpty { out.append(.releaseClaims(released)) } }
        // Claims won after the fire was dropped (a drain): given back, so another node runs them.
        for (request, result) in answers where !claiming.contains(where: { $0.fire.claim == request }) {
            if case .won = result { released.append(request) }
        }
        for entry in claiming {
            guard let claim = entry.fire.claim, let result = answers[claim] else { continue }
            remove(entry.id)
            // The job may have been removed or changed by a reload while the claim was out.
            guard phase == .running, let current = jobs[entry.request.job.name]?.definition else {
                if case .won = result { released.append(claim) }
                continue
            }
            switch result {
            case .won(let busyOn):
                fire(current, scheduledTime: entry.request.scheduledTime, trigger: entry.fire.record.trigger, occurrence: entry.fire.occurrence,
                     queueBehind: entry.fire.queueBehind, dueTime: entry.request.dueTime, busyOn: busyOn, id: entry.id, now: now)
            case .lost:
                break
            case .notMember:
                log(.warning, "occurrence not claimed: this node is not a live cluster member", [
                    "job": "\(claim.job)", "occurrence": "\(claim.occurrence)",
                ])
            case .unavailable(let reason):
                log(.error, "occurrence not claimed: the cluster database is unreachable; other nodes may run it", [
                    "job": "\(claim.job)", "occurrence": "\(claim.occurrence)", "error": "\(reason)",
                ])
                // A claim given up on may still land: given back, so that it does not hold the
                // occurrence for a node that will not run it.
                released.append(claim)
            }
        }
    }

    /// The cluster answered a request for a cluster-wide pool slot. Refused: asked again on a
    /// later tick. Granted for a run no longer waiting: given back.
    mutating func slotAnswered(run id: RunID, pool: String, granted: Bool) {
        guard var entry = work[id], entry.stage == .waiting, entry.slot == .asked else {
            // Dropped (or started) meanwhile: a slot granted now is given back.
            if granted { out.append(.releaseSlot(pool: pool, run: id)) }
            return
        }
        entry.slot = granted ? .granted : nil
        work[id] = entry
    }

    /// This node lost its cluster lease (it was silent too long and a survivor took its work
    /// over): every run stops with its kill sequence and whatever waits is dropped, all
    /// recorded as `interrupted`, so nothing this node held runs twice.
    public mutating func standDown(reason: String, now: Timestamp) -> [DispatchAction] {
        var dropped = 0
        var released: [ClaimRequest] = []
        for id in ids(where: { $0.stage != .running }) {
            if let claim = work[id].flatMap(releasableClaim) { released.append(claim) }
            if settle(id, outcome: .interrupted, reason: reason, now: now) != nil { dropped += 1 }
        }
        // Occurrences claimed here and never dispatched go back to the cluster: a survivor that
        // has not swept this node yet would otherwise find them ended and run them nowhere.
        if !released.isEmpty { out.append(.releaseClaims(released)) }
        var stopped = 0
        for id in ids(in: .running) {
            work[id]?.statusText = reason
            if work[id]?.stopping == false { stop(id) }
            stopped += 1
        }
        log(.warning, "standing down: \(reason)", ["stopped_runs": .number(stopped), "dropped_fires": .number(dropped)])
        return take()
    }

    /// Takes over the unfinished runs of a node declared dead: a fire that had not started
    /// runs here; a run that had started is retried here if its job's retry policy has
    /// attempts left. Returns how many this node now holds.
    public mutating func takeOver(_ orphans: [OrphanedRun], now: Timestamp, uptime: Duration) -> (Int, [DispatchAction]) {
        guard phase == .running else {
            // A draining node runs nothing more: what it was handed that never started goes
            // back to the cluster for another node.
            let released = orphans.filter { !$0.started && $0.attempt == 1 }.map { ClaimRequest(job: $0.job, occurrence: $0.scheduledTime) }
            if !released.isEmpty { out.append(.releaseClaims(released)) }
            return (0, take())
        }
        var taken = 0
        // Of one fire, only its latest attempt carries on: a node that stopped between writing
        // a retry and writing the end of the attempt before it leaves both unfinished, and
        // taking over both would run the retry twice.
        var latest: [RunID: OrphanedRun] = [:]
        for orphan in orphans where (latest[orphan.fireID]?.attempt ?? 0) < orphan.attempt { latest[orphan.fireID] = orphan }
        for orphan in orphans where latest[orphan.fireID] == orphan {
            guard let job = jobs[orphan.job]?.definition else {
                log(.warning, "cannot take over a run of a job this node does not define", [
                    "job": "\(orphan.job)", "run_id": "\(orphan.id)", "node": "\(orphan.node)",
                ])
                continue
            }
            if !orphan.started && orphan.attempt > 1 {
                // A retry that never started runs here as the same attempt of the same fire.
                scheduleRetry(of: job, scheduledTime: orphan.scheduledTime, after: orphan.attempt - 1, fireID: orphan.fireID,
                              previous: "not started on node \(orphan.node)", trigger: orphan.trigger, triggeredBy: orphan.triggeredBy,
                              now: now, uptime: uptime)
                taken += 1
            } else if !orphan.started {
                fire(job, scheduledTime: orphan.scheduledTime, trigger: orphan.trigger, queueBehind: true, triggeredBy: orphan.triggeredBy,
                     now: now)
                taken += 1
            } else if let retry = job.retry, orphan.attempt < retry.attempts {
                scheduleRetry(of: job, scheduledTime: orphan.scheduledTime, after: orphan.attempt, fireID: orphan.fireID,
                              previous: "interrupted on node \(orphan.node)", trigger: orphan.trigger, triggeredBy: orphan.triggeredBy,
                              now: now, uptime: uptime)
                taken += 1
            } else {
                log(.notice, "run of a dead node stays interrupted (no retry attempts left)", [
                    "job": "\(orphan.job)", "run_id": "\(orphan.id)", "node": "\(orphan.node)",
                ])
            }
        }
        if taken > 0 { log(.notice, "took over runs of a dead node", ["runs": .number(taken)]) }
        startWaiting(now: now)
        return (taken, take())
    }
}
