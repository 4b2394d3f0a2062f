import JobRunnerConfig
import JobRunnerSchedule
import Logging
import OrderedCollections

/// What a reload changed.
public struct ReloadSummary: Sendable, Hashable {
    /// Counts successful reloads; the configuration loaded at start is generation 1.
    public var generation: Int
    public var added: [String]
    public var changed: [String]
    public var removed: [String]
    public var at: Timestamp
}

extension DispatchMachine {
    /// Applies a new, already validated configuration by job name:
    /// - unchanged jobs keep their next fire time;
    /// - changed jobs take the new definition from their next fire (the next fire is recomputed
    ///   only if the schedule, zone, delay or `enabled` changed); their pending retries stop,
    ///   and their running run goes on unless `on_reload: restart`;
    /// - removed jobs stop firing, and their waiting fires and retries are dropped (recorded
    ///   `cancelled`); their running run finishes unless `on_remove: cancel`;
    /// - added jobs are scheduled from now.
    public mutating func apply(_ configuration: Configuration, now: Timestamp, uptime: Duration) -> (ReloadSummary, [DispatchAction]) {
        // Built as two arrays and hashed once at the end. A loaded configuration names each job
        // once; one built otherwise keeps a name's first place and last definition, as before.
        var names: [String] = []
        var newValues: [Job] = []
        names.reserveCapacity(configuration.jobs.count)
        newValues.reserveCapacity(configuration.jobs.count)
        var kept = [Bool](repeating: false, count: jobs.count)
        var added: [String] = []
        var changed: [String] = []
        for job in configuration.jobs {
            names.append(job.name)
            guard let index = jobs.index(forKey: job.name) else {
                newValues.append(Job(definition: job, due: Self.firstDue(of: job, now: now, uptime: uptime, seed: jitterSeed,
                                                                         clustered: clustered)))
                added.append(job.name)
                continue
            }
            kept[index] = true
            let old = jobs.values[index]
            if old.definition == job {
                // Unchanged: the definition already held stays (unless only its place in the
                // file moved), and the loaded copy goes with the loaded file, so reloads of an
                // unchanged file allocate nothing that stays.
                newValues.append(old.definition.location == job.location ? old : Job(definition: job, due: old.due))
            } else if old.definition.sameSchedule(as: job) {
                newValues.append(Job(definition: job, due: old.due))
                changed.append(job.name)
            } else {
                newValues.append(Job(definition: job, due: Self.firstDue(of: job, now: now, uptime: uptime, seed: jitterSeed,
                                                                         clustered: clustered)))
                changed.append(job.name)
            }
        }
        let newJobs = OrderedDictionary(zip(names, newValues), uniquingKeysWith: { _, last in last })
        let removed = kept.indices.filter { !kept[$0] }.map { jobs.keys[$0] }
        for name in removed {
            dropPending(ofJob: name, outcome: .cancelled, reason: "job removed by reload", now: now)
        }
        // A changed job's pending retries belong to its old definition: they stop.
        let changedSet = Set(changed)
        let droppedRetries = ids(where: { entry in
            guard changedSet.contains(entry.job), case .retrying = entry.stage else { return false }
            return true
        })
        for id in droppedRetries {
            settle(id, outcome: .cancelled, reason: "retry dropped: job changed by reload", now: now)
        }
        // Running runs: a removed job's per its on_remove, a changed job's per its on_reload.
        for name in removed {
            guard let old = jobs[name]?.definition, old.onRemove == .cancel else { continue }
            for id in entries(ofJob: name).filter({ $0.stage == .running }).map(\.id) {
                stop(id)
                log(.notice, "cancelling the run of a removed job (on_remove: cancel)", ["job": "\(name)", "run_id": "\(id)"])
            }
        }
        var restarts: [JobDefinition] = []
        for name in changed {
            guard let job = newJobs[name]?.definition, job.onReload == .restart else { continue }
            let running = entries(ofJob: name).filter { $0.stage == .running }.map(\.id)
            guard !running.isEmpty else { continue }
            for id in running {
                stop(id)
                log(.notice, "restarting the run with the new definition (on_reload: restart)", ["job": "\(name)", "run_id": "\(id)"])
            }
            restarts.append(job)
        }
        if !added.isEmpty { out.append(.journal(.known(jobs: added, at: now))) }
        paused = paused.filter { newJobs[$0] != nil }
        jobs = newJobs
        indexFollowers()
        settings = configuration.daemon
        for job in restarts {
            fire(job, scheduledTime: now, trigger: .manual, queueBehind: true, now: now)
        }
        generation += 1
        let summary = ReloadSummary(generation: generation, added: added, changed: changed, removed: removed, at: now)
        lastReload = summary
        log(.info, "configuration applied", [
            "generation": .number(generation), "added": Self.names(added), "changed": Self.names(changed), "removed": Self.names(removed),
        ])
        startWaiting(now: now)
        return (summary, take())
    }

    /// Job names for a log line: the first 20, then how many more.
    static func names(_ names: [String]) -> Logger.MetadataValue {
        guard !names.isEmpty else { return "none" }
        let shown = names.prefix(20).joined(separator: ",")
        return "\(names.count > 20 ? shown + " (+\(names.count - 20) more)" : shown)"
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
        public var state: Phase
        public var jobCount: Int
        public var runningCount: Int
        public var waitingCount: Int
        public var generation: Int
        public var nextFire: (job: String, at: Timestamp)?
        public var lastReload: ReloadSummary?
    }

    /// Every job in file order with its next fire.
    public func jobStates(now: Timestamp, uptime: Duration) -> [JobState] {
        jobs.values.map { job in
            JobState(definition: job.definition, nextFire: Self.fireInstant(job.due, now: now, uptime: uptime),
                     paused: paused.contains(job.definition.name))
        }
    }

    /// One job's state, or nil when there is no such job.
    public func jobState(_ name: String, now: Timestamp, uptime: Duration) -> JobState? {
        guard let job = jobs[name] else { return nil }
        return JobState(definition: job.definition, nextFire: Self.fireInstant(job.due, now: now, uptime: uptime), paused: paused.contains(name))
    }

    /// Every job's next fire and live runs, for the metrics scrape.
    public func jobGauges(now: Timestamp, uptime: Duration) -> [(job: String, nextFire: Timestamp?, running: Int)] {
        var running: [String: Int] = [:]
        for id in byStage[.running] ?? [] {
            if let job = work[id]?.job { running[job, default: 0] += 1 }
        }
        return jobs.values.map { job in
            (job.definition.name, Self.fireInstant(job.due, now: now, uptime: uptime), running[job.definition.name] ?? 0)
        }
    }

    public mutating func summary(now: Timestamp, uptime: Duration) -> Summary {
        if !dueKnown { computeEarliest() }
        var next: (job: String, at: Timestamp)?
        if let wall = earliestWall { next = (wall.job, wall.at) }
        if let due = earliestUptime {
            let at = now.advanced(by: due.at - uptime)
            if next == nil || at < next!.at { next = (due.job, at) }
        }
        return Summary(state: phase, jobCount: jobs.count, runningCount: runningCount, waitingCount: waitingForSlotCount,
                       generation: generation, nextFire: next, lastReload: lastReload)
    }

    /// The next `count` fire times of a job (nil when there is no such job). Random delays are
    /// not included: they are drawn per fire.
    public func upcoming(job name: String, count: Int, now: Timestamp, uptime: Duration) -> [Timestamp]? {
        guard let job = jobs[name] else { return nil }
        guard job.definition.enabled, let trigger = job.definition.trigger else { return [] }
        switch (trigger, job.due) {
        case (.interval, .wall(let occurrence, _)):
            // A cluster's aligned interval.
            return trigger.upcoming(after: occurrence.advanced(by: .microseconds(-1)), in: job.definition.timeZone, count: count)
        case (.interval(let interval), .uptime(let occurrence, _)):
            let first = now.advanced(by: occurrence - uptime)
            return (0..<max(0, count)).map { first.advanced(by: interval * $0) }
        default:
            return trigger.upcoming(after: now, in: job.definition.timeZone, count: count)
        }
    }

    /// Whether the machine knows a job.
    public func hasJob(_ name: String) -> Bool {
        jobs[name] != nil
    }

    /// A job's definition.
    public func definition(of name: String) -> JobDefinition? {
        jobs[name]?.definition
    }

    /// The longest `kill_grace` of the jobs with running runs (for how long a drain may take).
    public var longestRunningKillGrace: Duration {
        (byStage[.running] ?? []).compactMap { work[$0]?.request.job.killGrace }.max() ?? .zero
    }
}
