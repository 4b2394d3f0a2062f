import JobRunnerConfig
import JobRunnerSchedule
import Logging

extension Scheduler {
    /// A scheduled fire waiting for its claim.
    struct ClaimedFire: Sendable {
        var job: JobDefinition
        var scheduledTime: Timestamp
        var trigger: RunTrigger
        var occurrence: Timestamp?
        var queueBehind: Bool
        var dueTime: Timestamp?
        var request: ClaimRequest
    }

    /// Fires a scheduled occurrence: at once on a single daemon; in a cluster, once this node
    /// has claimed it. Claims due together go to the database in one statement (`flushClaims`),
    /// off the scheduler's loop; the fires follow when it answers.
    func dispatch(_ job: JobDefinition, scheduledTime: Timestamp, trigger: RunTrigger, occurrence: Timestamp?,
                  queueBehind: Bool = false, dueTime: Timestamp? = nil) {
        guard let cluster else {
            fire(job, scheduledTime: scheduledTime, trigger: trigger, occurrence: occurrence, queueBehind: queueBehind, dueTime: dueTime)
            return
        }
        let key = occurrence ?? (trigger == .startup ? cluster.clusterStart : scheduledTime)
        claimBuffer.append(ClaimedFire(job: job, scheduledTime: scheduledTime, trigger: trigger, occurrence: occurrence,
                                       queueBehind: queueBehind, dueTime: dueTime, request: ClaimRequest(job: job.name, occurrence: key)))
    }

    /// Sends the claims gathered since the last call, as one batch.
    func flushClaims() {
        guard let cluster, !claimBuffer.isEmpty else { return }
        let mine = claimBuffer.filter { cluster.prefers($0.request) }
        let others = claimBuffer.filter { !cluster.prefers($0.request) }
        claimBuffer.removeAll()
        if !mine.isEmpty {
            Task {
                let results = await cluster.claim(mine.map(\.request))
                self.claimed(mine, results)
            }
        }
        if !others.isEmpty {
            Task {
                try? await Task.sleep(for: cluster.handoff)
                let results = await cluster.claim(others.map(\.request))
                self.claimed(others, results)
            }
        }
    }

    private func claimed(_ batch: [ClaimedFire], _ results: [ClaimResult]) {
        for (fire, result) in zip(batch, results) {
            // The job may have been removed or changed by a reload while the claim was out.
            guard state == .running, let current = entries[fire.job.name]?.job else { continue }
            switch result {
            case .won(let busyOn):
                self.fire(current, scheduledTime: fire.scheduledTime, trigger: fire.trigger, occurrence: fire.occurrence,
                          queueBehind: fire.queueBehind, dueTime: fire.dueTime, busyOn: busyOn)
            case .lost:
                break
            case .notMember:
                logger.warning("occurrence not claimed: this node is not a live cluster member", metadata: [
                    "job": "\(fire.job.name)", "occurrence": "\(fire.request.occurrence)",
                ])
            case .unavailable(let reason):
                logger.error("occurrence not claimed: the cluster database is unreachable; other nodes may run it", metadata: [
                    "job": "\(fire.job.name)", "occurrence": "\(fire.request.occurrence)", "error": "\(reason)",
                ])
            }
        }
        onChange()
    }

    /// A run's place in a cluster-wide pool.
    struct ClusterSlot: Sendable {
        var pool: String
        var granted: Bool
    }

    /// Whether a waiting run may start as far as cluster-wide pools go: true when its pool is
    /// not cluster-wide (or there is no cluster) or it holds a slot; otherwise asks the database
    /// for one (once at a time, again half a second after a refusal) and says false for now.
    func holdsClusterSlot(_ pending: Pending) -> Bool {
        guard let cluster, let pool = pending.request.job.pool, settings.clusterWidePools.contains(pool),
            let size = settings.pools[pool]
        else { return true }
        let id = pending.request.id
        if let slot = clusterSlots[id] { return slot.granted }
        clusterSlots[id] = ClusterSlot(pool: pool, granted: false)
        registry.update(id) { $0.waitingFor = "pool '\(pool)' (cluster-wide)" }
        let since = registry.record(id)?.queuedAt ?? clock.now()
        Task {
            let granted = await cluster.acquireSlot(pool: pool, size: size, run: id, since: since)
            if !granted { try? await Task.sleep(for: .milliseconds(500)) }
            self.slotAnswered(id, pool: pool, granted: granted)
        }
        return false
    }

    private func slotAnswered(_ id: RunID, pool: String, granted: Bool) {
        let stillWaiting = waiting.contains { $0.request.id == id }
        guard granted else {
            clusterSlots[id] = nil
            if stillWaiting { doorbell.ring() }
            return
        }
        guard stillWaiting, clusterSlots[id] != nil else {
            // Dropped meanwhile: give the slot back.
            clusterSlots[id] = nil
            if let cluster { Task { await cluster.releaseSlot(pool: pool, run: id) } }
            return
        }
        clusterSlots[id]?.granted = true
        doorbell.ring()
    }

    /// Frees a run's cluster-wide pool slot (when it ends or is dropped).
    func releaseClusterSlot(of id: RunID) {
        guard let slot = clusterSlots.removeValue(forKey: id), let cluster else { return }
        Task { await cluster.releaseSlot(pool: slot.pool, run: id) }
    }

    /// This node lost its cluster lease (it was silent too long and a survivor took its work
    /// over): every run stops with its kill sequence and whatever waits is dropped, all
    /// recorded as `interrupted`, so nothing this node held runs twice.
    public func standDown(reason: String) {
        let now = clock.now()
        let dropped = waiting + retries.map(\.pending) + runs.values.flatMap(\.queued)
        waiting.removeAll()
        retries.removeAll()
        for name in runs.keys { runs[name]?.queued.removeAll() }
        for pending in dropped {
            registry.update(pending.request.id) { $0.statusText = reason }
            settle(pending.request.id, outcome: .interrupted, at: now)
        }
        var stopped = 0
        for name in runs.keys {
            for (id, handle) in runs[name]?.running ?? [:] {
                runs[name]?.cancelled.insert(id)
                registry.update(id) { $0.statusText = reason }
                handle.cancel()
                stopped += 1
            }
        }
        logger.warning("standing down: \(reason)", metadata: ["stopped_runs": "\(stopped)", "dropped_fires": "\(dropped.count)"])
        onChange()
    }

    /// Takes over the unfinished runs of a node declared dead: a fire that had not started
    /// runs here; a run that had started is retried here if its job's retry policy has
    /// attempts left. Returns how many runs (or retries) this node now holds.
    @discardableResult
    public func takeOver(_ orphans: [OrphanedRun]) -> Int {
        guard state == .running else { return 0 }
        var taken = 0
        for orphan in orphans {
            guard let job = entries[orphan.job]?.job else {
                logger.warning("cannot take over a run of a job this node does not define", metadata: [
                    "job": "\(orphan.job)", "run_id": "\(orphan.id)", "node": "\(orphan.node)",
                ])
                continue
            }
            if !orphan.started {
                fire(job, scheduledTime: orphan.scheduledTime, trigger: orphan.trigger, queueBehind: true)
                taken += 1
            } else if let retry = job.retry, orphan.attempt < retry.attempts {
                scheduleRetry(of: job, scheduledTime: orphan.scheduledTime, after: orphan.attempt, fireID: orphan.fireID,
                              previous: "interrupted on node \(orphan.node)")
                taken += 1
            } else {
                logger.notice("run of a dead node stays interrupted (no retry attempts left)", metadata: [
                    "job": "\(orphan.job)", "run_id": "\(orphan.id)", "node": "\(orphan.node)",
                ])
            }
        }
        if taken > 0 {
            logger.notice("took over runs of a dead node", metadata: ["runs": "\(taken)"])
            doorbell.ring()
            onChange()
        }
        return taken
    }

    /// Applies a pause or resume made on another node (already stored there).
    public func applyRemotePause(job name: String, _ isPaused: Bool) {
        guard entries[name] != nil else { return }
        let changed = isPaused ? paused.insert(name).inserted : paused.remove(name) != nil
        if changed {
            logger.notice(isPaused ? "job paused on another node" : "job resumed on another node", metadata: ["job": "\(name)"])
            onChange()
        }
    }

    /// How many runs this node has alive (for its heartbeat row).
    public var liveRunCount: Int { runningCount }
}
