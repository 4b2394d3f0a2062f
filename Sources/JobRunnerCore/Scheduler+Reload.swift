import JobRunnerConfig
import JobRunnerSchedule
import Logging
import Metrics

/// What a reload changed.
public struct ReloadSummary: Sendable, Hashable {
    /// Counts successful reloads; the configuration loaded at start is generation 1.
    public var generation: Int
    public var added: [String]
    public var changed: [String]
    public var removed: [String]
    public var at: Timestamp
}

extension Scheduler {
    /// Applies a new, already validated configuration by job name:
    /// - unchanged jobs keep their next fire time;
    /// - changed jobs take the new definition from their next fire (the next fire is recomputed
    ///   only if the schedule, zone or `enabled` changed);
    /// - removed jobs stop firing, and their waiting fires are dropped (recorded as cancelled);
    /// - added jobs are scheduled from now.
    /// Running runs are never touched: each keeps the definition it started with.
    public func apply(_ configuration: Configuration) -> ReloadSummary {
        let now = clock.now()
        let uptime = clock.uptime()
        var newEntries: [String: Entry] = [:]
        var newOrder: [String] = []
        var added: [String] = []
        var changed: [String] = []
        for job in configuration.jobs {
            newOrder.append(job.name)
            if let old = entries[job.name] {
                if old.job == job {
                    newEntries[job.name] = Entry(job: job, due: old.due)
                } else if old.job.sameSchedule(as: job) {
                    newEntries[job.name] = Entry(job: job, due: old.due)
                    changed.append(job.name)
                } else {
                    newEntries[job.name] = Entry(job: job, due: Self.firstDue(of: job, now: now, uptime: uptime, seed: jitterSeed, clustered: cluster != nil))
                    changed.append(job.name)
                }
            } else {
                newEntries[job.name] = Entry(job: job, due: Self.firstDue(of: job, now: now, uptime: uptime, seed: jitterSeed, clustered: cluster != nil))
                added.append(job.name)
            }
        }
        let removed = order.filter { newEntries[$0] == nil }
        for name in removed {
            dropPending(ofJob: name, outcome: .cancelled, reason: "job removed by reload")
        }
        // A changed job's pending retries belong to its old definition: they stop.
        let droppedRetries = retries.filter { changed.contains($0.pending.request.job.name) }
        retries.removeAll { changed.contains($0.pending.request.job.name) }
        for retry in droppedRetries {
            registry.update(retry.pending.request.id) { $0.statusText = "retry dropped: job changed by reload" }
            settle(retry.pending.request.id, outcome: .cancelled, at: now)
        }
        // Running runs: a removed job's per its on_remove, a changed job's per its on_reload.
        for name in removed {
            guard let old = entries[name]?.job, old.onRemove == .cancel else { continue }
            for (id, handle) in runs[name]?.running ?? [:] {
                runs[name]?.cancelled.insert(id)
                handle.cancel()
                logger.notice("cancelling the run of a removed job (on_remove: cancel)", metadata: ["job": "\(name)", "run_id": "\(id)"])
            }
        }
        var restarts: [JobDefinition] = []
        for name in changed {
            guard let job = newEntries[name]?.job, job.onReload == .restart, let running = runs[name]?.running, !running.isEmpty else {
                continue
            }
            for (id, handle) in running {
                runs[name]?.cancelled.insert(id)
                handle.cancel()
                logger.notice("restarting the run with the new definition (on_reload: restart)", metadata: ["job": "\(name)", "run_id": "\(id)"])
            }
            restarts.append(job)
        }
        if !added.isEmpty { journal?.record(.known(jobs: added, at: now)) }
        paused.formIntersection(Set(newOrder))
        entries = newEntries
        order = newOrder
        settings = configuration.daemon
        for name in removed { EngineMetrics.forget(job: name) }
        for job in restarts {
            fire(job, scheduledTime: now, trigger: .manual, queueBehind: true)
        }
        generation += 1
        let summary = ReloadSummary(generation: generation, added: added, changed: changed, removed: removed, at: now)
        lastReload = summary
        logger.info("configuration applied", metadata: [
            "generation": "\(generation)", "added": "\(added.count)", "changed": "\(changed.count)", "removed": "\(removed.count)",
        ])
        doorbell.ring()
        onChange()
        return summary
    }

    // MARK: - Snapshots

    /// One job as status shows it.
    public struct JobState: Sendable {
        public var definition: JobDefinition
        /// The next automatic fire, if any.
        public var nextFire: Timestamp?
        /// Paused jobs do not fire.
        public var paused: Bool
    }

    /// A summary for status lines and `GET /v1/status`.
    public struct Summary: Sendable {
        public var state: State
        public var jobCount: Int
        public var runningCount: Int
        public var waitingCount: Int
        public var generation: Int
        public var nextFire: (job: String, at: Timestamp)?
        public var lastReload: ReloadSummary?
    }

    /// Every job in file order with its next fire.
    public func jobStates() -> [JobState] {
        let now = clock.now()
        let uptime = clock.uptime()
        return order.compactMap { name in
            guard let entry = entries[name] else { return nil }
            return JobState(definition: entry.job, nextFire: wallInstant(entry.due, now: now, uptime: uptime), paused: paused.contains(name))
        }
    }

    /// One job's state, or nil when there is no such job.
    public func jobState(_ name: String) -> JobState? {
        guard let entry = entries[name] else { return nil }
        return JobState(definition: entry.job, nextFire: wallInstant(entry.due, now: clock.now(), uptime: clock.uptime()),
                        paused: paused.contains(name))
    }

    /// Every job's next fire and live runs, for the metrics scrape.
    public func jobGauges() -> [(job: String, nextFire: Timestamp?, running: Int)] {
        let now = clock.now()
        let uptime = clock.uptime()
        return order.compactMap { name in
            guard let entry = entries[name] else { return nil }
            return (name, Self.fireInstant(entry.due, now: now, uptime: uptime), runs[name]?.running.count ?? 0)
        }
    }

    public func summary() -> Summary {
        let now = clock.now()
        let uptime = clock.uptime()
        if !dueKnown { computeEarliest() }
        var next: (job: String, at: Timestamp)?
        if let job = earliestWallJob, let at = earliestWall { next = (job, at) }
        if let job = earliestUptimeJob, let due = earliestUptime {
            let at = now.advanced(by: due - uptime)
            if next == nil || at < next!.at { next = (job, at) }
        }
        return Summary(state: state, jobCount: entries.count, runningCount: runningCount, waitingCount: waiting.count,
                       generation: generation, nextFire: next, lastReload: lastReload)
    }

    func wallInstant(_ due: Due?, now: Timestamp, uptime: Duration) -> Timestamp? {
        Self.fireInstant(due, now: now, uptime: uptime)
    }

    /// The next `count` fire times of a job (nil when there is no such job). Random delays are
    /// not included: they are drawn per fire.
    public func upcoming(job name: String, count: Int) -> [Timestamp]? {
        guard let entry = entries[name] else { return nil }
        guard entry.job.enabled, let trigger = entry.job.trigger else { return [] }
        let now = clock.now()
        switch (trigger, entry.due) {
        case (.interval, .wall(let occurrence, _)):
            // A cluster's aligned interval.
            return trigger.upcoming(after: occurrence.advanced(by: .microseconds(-1)), in: entry.job.timeZone, count: count)
        case (.interval(let interval), .uptime(let occurrence, _)):
            let first = now.advanced(by: occurrence - clock.uptime())
            return (0..<max(0, count)).map { first.advanced(by: interval * $0) }
        default:
            return trigger.upcoming(after: now, in: entry.job.timeZone, count: count)
        }
    }
}
