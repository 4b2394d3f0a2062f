import JobRunnerConfig
import JobRunnerSchedule
import Logging
import DequeModule
import OrderedCollections

/// The engine's rules as one synchronous value: which job fires when, what a fire does under its
/// overlap policy, its pool and `max_concurrent_runs`, retries, reloads, cancels, drains and
/// cluster claims. Clock values come in; actions (``DispatchAction``) come out; nothing here
/// touches a process, a file, a socket or a clock. The ``Scheduler`` feeds it events and carries
/// out what it returns — so every rule is tested with plain values.
///
/// State is two ordered collections: the jobs (in configuration order) with their next fire, and
/// the pending work — every fire between its creation and its end — each entry carrying its
/// stage. Counts (running, waiting, per pool, per job) are derived from the work, never stored
/// beside it.
public struct DispatchMachine: Sendable {
    /// The lifecycle of the engine.
    public enum Phase: String, Sendable {
        case starting, running, draining, stopped
    }

    /// When a job fires next: its occurrence (the instant its schedule names) plus its delay.
    public enum Due: Sendable, Hashable {
        /// A wall-clock occurrence (cron and calendar schedules; intervals in a cluster).
        case wall(occurrence: Timestamp, delay: Duration)
        /// An uptime occurrence (intervals: immune to wall-clock steps).
        case uptime(occurrence: Duration, delay: Duration)
    }

    struct Job: Sendable {
        var definition: JobDefinition
        var due: Due?
    }

    /// Where a fire is in its life.
    public enum Stage: Sendable, Equatable {
        /// Waiting for the cluster to say whether this node runs it (nothing recorded yet).
        case claiming
        /// Recorded ahead of its time (``armLead``), so its start does not wait for the disk;
        /// due at this uptime.
        case armed(until: Duration)
        /// Waiting for a slot under `max_concurrent_runs`, its pool, or a cluster-wide slot.
        case waiting
        /// Waiting behind a running run of its own job (`overlap: queue`/`replace`, catch-up).
        case queued
        /// A retry in its backoff, until this uptime.
        case retrying(until: Duration)
        /// Its process was asked to start (and has not ended).
        case running

        /// The stage without its instant.
        var kind: Kind {
            switch self {
            case .claiming: .claiming
            case .armed: .armed
            case .waiting: .waiting
            case .queued: .queued
            case .retrying: .retrying
            case .running: .running
            }
        }

        enum Kind: Sendable, Hashable, CaseIterable {
            case claiming, armed, waiting, queued, retrying, running
        }
    }

    /// A cluster-wide pool slot a waiting run asked for.
    enum Slot: Sendable, Equatable {
        case asked, granted
    }

    /// What does not change about a fire while it is pending: shared and immutable, so copying a
    /// ``Work`` entry costs one reference, not a job definition.
    final class Fire: Sendable {
        let request: RunRequest
        /// As recorded when it fired (no output tail, no handle: those are the scheduler's).
        let record: RunRecord
        let jobName: String
        let pool: String?
        /// The schedule occurrence the fire handles (journalled with it: never run twice).
        let occurrence: Timestamp?
        /// While claiming: the key claimed, and how the fire goes on once won.
        let claim: ClaimRequest?
        let queueBehind: Bool

        init(request: RunRequest, record: RunRecord, occurrence: Timestamp?, claim: ClaimRequest? = nil, queueBehind: Bool = false) {
            self.request = request
            self.record = record
            self.jobName = request.job.name
            self.pool = request.job.pool
            self.occurrence = occurrence
            self.claim = claim
            self.queueBehind = queueBehind
        }
    }

    /// One fire, from its creation to its end.
    struct Work: Sendable {
        let fire: Fire
        var stage: Stage
        /// Its place in fire order (renewed when it joins the back of the slot queue).
        var order: UInt64
        var waitingFor: String?
        var pid: Int32?
        var startedAt: Timestamp?
        var statusText: String?
        var claimSent = false
        /// Cancelled on purpose (by a person, a reload, a replace, a stand-down): not retried.
        var stopping = false
        var slot: Slot?

        var request: RunRequest { fire.request }
        var job: String { fire.jobName }
        var id: RunID { fire.record.id }

        /// The record as it stands now.
        var record: RunRecord {
            var record = fire.record
            record.waitingFor = waitingFor
            record.pid = pid
            record.startedAt = startedAt
            if let statusText { record.statusText = statusText }
            return record
        }
    }

    /// How long before its time a fire is recorded (single daemon: a cluster claims first), so
    /// its record is on disk — fsynced — by the instant it is due, and its start waits for nothing.
    public static let armLead: Duration = .milliseconds(50)

    // MARK: State

    var jobs: OrderedDictionary<String, Job> = [:] {
        didSet { dueKnown = false }
    }
    /// Every fire between its creation and its end.
    var work: [RunID: Work] = [:]
    /// The order of the fires waiting for a slot (an index into `work`: an entry is current while
    /// its `order` matches and it is still waiting; others are skipped and dropped).
    var slotQueue: Deque<(id: RunID, order: UInt64)> = []
    /// Which entries of `work` belong to each job (an index into `work`, kept by `insert` and
    /// `remove` alone), so the per-job rules — overlap, queues — look at a job's few fires, not
    /// at every pending one.
    var byJob: [String: [RunID]] = [:]
    /// Which entries are in each stage (an index into `work` like `byJob`, kept by `insert`,
    /// `setStage` and `remove` alone): counts and the retries due are read without a scan.
    var byStage: [Stage.Kind: Set<RunID>] = [:]
    var nextOrder: UInt64 = 0
    var paused: Set<String> = []
    /// For each job, the jobs that follow it (`after:`) and on which outcome: rebuilt whenever
    /// the configuration is (a removed job's triggers go with it).
    var followers: [String: [(job: String, outcome: AfterCondition.Outcome)]] = [:]
    public internal(set) var settings: DaemonSettings
    public internal(set) var phase: Phase = .starting
    /// Successful loads of the configuration: 1 at start.
    public internal(set) var generation = 1
    public internal(set) var lastReload: ReloadSummary?
    /// Seeds `fixed_random_delay` offsets (and, in a cluster, occurrence-derived delays).
    let jitterSeed: UInt64
    /// This node, in a cluster (nil: a single daemon).
    public let node: String?
    /// When the cluster started: the key of startup fires, so they run once per cluster start.
    let clusterStart: Timestamp?
    let ids = RunIDGenerator()
    /// Fires the daemon owes from before it started (catch-up, `@reboot`, `run_on_start`).
    var startup: [(job: String, occurrence: Timestamp?, trigger: RunTrigger)] = []
    /// Hooks of ended runs, held until the run's leftovers are swept (the hook carries the run's
    /// id, so a sweep running beside it would take it for a leftover).
    var hooks: [RunID: DispatchAction] = [:]

    /// The earliest due job on each clock, known while no job changed since it was computed: a
    /// tick with nothing due costs O(1), not O(jobs).
    var dueKnown = false
    var earliestWall: (at: Timestamp, job: String)?
    var earliestUptime: (at: Duration, job: String)?

    var out: [DispatchAction] = []

    var clustered: Bool { node != nil }

    // MARK: - Creating

    /// The machine for a configuration, with every job's first fire computed from `now`, and the
    /// fires owed from before (missed occurrences as each job's `catch_up` says, startup fires)
    /// ready for ``start(now:uptime:)``.
    public init(configuration: Configuration, now: Timestamp, uptime: Duration, memories: [String: JobMemory] = [:],
                jitterSeed: UInt64 = 0, node: String? = nil, clusterStart: Timestamp? = nil) {
        self.settings = configuration.daemon
        self.jitterSeed = jitterSeed
        self.node = node
        self.clusterStart = clusterStart
        for job in configuration.jobs {
            jobs[job.name] = Job(definition: job, due: Self.firstDue(of: job, now: now, uptime: uptime, seed: jitterSeed,
                                                                     clustered: node != nil))
            if memories[job.name]?.paused == true { paused.insert(job.name) }
            guard job.enabled else { continue }
            var notices: [DispatchAction] = []
            for occurrence in Self.missedOccurrences(of: job, memory: memories[job.name], now: now, notices: &notices) {
                startup.append((job.name, occurrence, .catchUp))
            }
            out += notices
            if job.trigger == .reboot || job.runOnStart { startup.append((job.name, nil, .startup)) }
        }
        out.append(.journal(.known(jobs: configuration.jobs.map(\.name), at: now)))
        indexFollowers()
    }

    /// Rebuilds ``followers`` from the jobs' `after:`.
    mutating func indexFollowers() {
        followers = [:]
        for job in jobs.values {
            for condition in job.definition.after { followers[condition.job, default: []].append((job.definition.name, condition.outcome)) }
        }
    }

    /// A fire reached its final outcome: the jobs that follow it on that outcome fire, each
    /// told which run fired it. Journalled with the run's end, so a crash loses neither or both.
    mutating func fireFollowers(of job: JobDefinition, run id: RunID, outcome: RunOutcome, now: Timestamp) {
        // The job as it is now (a reload may have changed it while this run went on, or removed it).
        guard phase == .running, jobs[job.name] != nil, let list = followers[job.name] else { return }
        let ended: AfterCondition.Outcome
        if outcome == .succeeded {
            ended = .succeeded
        } else if outcome.isFailure {
            ended = .failed
        } else {
            return
        }
        for (name, wanted) in list where wanted == .any || wanted == ended {
            guard let follower = jobs[name]?.definition, follower.enabled else { continue }
            let record = fire(follower, scheduledTime: now, trigger: .after, triggeredBy: "\(job.name)/\(id)", now: now)
            log(.info, "fired by another job's end", [
                "job": "\(name)", "run_id": "\(record.id)", "after": "\(job.name)", "after_run_id": "\(id)", "outcome": "\(outcome.name)",
            ])
        }
    }

    /// The engine starts: the fires owed from before are dispatched.
    public mutating func start(now: Timestamp, uptime: Duration) -> [DispatchAction] {
        phase = .running
        for owed in startup {
            guard let job = jobs[owed.job]?.definition else { continue }
            // In a cluster a startup fire is claimed and recorded under the cluster's start, so a
            // survivor taking over a dead node's claims finds its run under the same key.
            let scheduled = owed.occurrence ?? (owed.trigger == .startup && clustered ? clusterStart ?? now : now)
            dispatch(job, scheduledTime: scheduled, trigger: owed.trigger, occurrence: owed.occurrence,
                     queueBehind: owed.trigger == .catchUp, now: now)
        }
        startup = []
        startWaiting(now: now)
        return take()
    }

    /// The actions decided since the last call (those `init` made, for one).
    public mutating func take() -> [DispatchAction] {
        defer { out = [] }
        return out
    }

    // MARK: - Time

    /// Fires every job whose time has come, moves retries whose backoff has passed to the slot
    /// queue, sends the claims gathered, and starts what the limits let start.
    public mutating func tick(now: Timestamp, uptime: Duration) -> [DispatchAction] {
        guard phase == .running else { return take() }
        fireDue(now: now, uptime: uptime)
        sendClaims()
        promoteArmed(now: now, uptime: uptime)
        promoteDueRetries(uptime: uptime)
        startWaiting(now: now)
        return take()
    }

    /// When the machine next has something to do on its own (the earliest fire or retry), on the
    /// wall clock; nil when nothing is due ever.
    public mutating func nextDeadline(now: Timestamp, uptime: Duration) -> Timestamp? {
        if !dueKnown { computeEarliest() }
        // A fire is armed `armLead` before its time; once that moment has passed (the job could
        // not be armed), the time itself.
        let lead = clustered ? .zero : Self.armLead
        func armAt(_ due: Timestamp) -> Timestamp { due.advanced(by: .zero - lead) > now ? due.advanced(by: .zero - lead) : due }
        var earliest = earliestWall.map { armAt($0.at) }
        if let due = earliestUptime?.at {
            let instant = armAt(now.advanced(by: due - uptime))
            if earliest == nil || instant < earliest! { earliest = instant }
        }
        for kind in [Stage.Kind.retrying, .armed] {
            for id in byStage[kind] ?? [] {
                guard let stage = work[id]?.stage else { continue }
                let until: Duration
                switch stage {
                case .retrying(let at), .armed(let at): until = at
                default: continue
                }
                let instant = now.advanced(by: until - uptime)
                if earliest == nil || instant < earliest! { earliest = instant }
            }
        }
        return earliest
    }

    /// Fires every job that is due. When several occurrences of one job passed at once (the
    /// clock jumped, the machine slept), they are coalesced into one run for the latest, and the
    /// missed ones are logged (or, with `catch_up: all`, queued).
    mutating func fireDue(now: Timestamp, uptime: Duration) {
        let lead = clustered ? .zero : Self.armLead
        let armBy = now.advanced(by: lead)
        if dueKnown, earliestWall.map({ $0.at > armBy }) ?? true, earliestUptime.map({ $0.at > uptime + lead }) ?? true {
            return
        }
        defer { computeEarliest() }
        for name in jobs.keys {
            guard var entry = jobs[name], let due = entry.due else { continue }
            let job = entry.definition
            switch due {
            case .wall(let occurrence, let delay) where occurrence.advanced(by: delay) > now && occurrence.advanced(by: delay) <= armBy:
                guard mayArm(job), let trigger = job.trigger else { continue }
                let dueTime = occurrence.advanced(by: delay)
                let next = trigger.nextOccurrence(after: occurrence, in: job.timeZone, aligned: clustered)
                entry.due = next.map { .wall(occurrence: $0, delay: nextDelay(for: job, occurrence: $0)) }
                jobs[name] = entry
                arm(job, scheduledTime: occurrence, occurrence: occurrence, dueTime: dueTime, until: uptime + now.duration(to: dueTime), now: now)
            case .uptime(let occurrence, let delay) where occurrence + delay > uptime && occurrence + delay <= uptime + lead:
                guard mayArm(job), case .interval(let interval) = job.trigger else { continue }
                entry.due = .uptime(occurrence: occurrence + interval, delay: nextDelay(for: job, occurrence: nil))
                jobs[name] = entry
                arm(job, scheduledTime: now.advanced(by: occurrence - uptime), occurrence: nil,
                    dueTime: now.advanced(by: occurrence + delay - uptime), until: occurrence + delay, now: now)
            case .wall(let first, let delay) where first.advanced(by: delay) <= now:
                guard let trigger = job.trigger else { continue }
                var occurrence = first
                var skipped: [Timestamp] = []
                var missed = 0
                var next = trigger.nextOccurrence(after: occurrence, in: job.timeZone, aligned: clustered)
                while let candidate = next, candidate.advanced(by: delay) <= now {
                    missed += 1
                    skipped.append(occurrence)
                    if skipped.count > job.catchUpMax { skipped.removeFirst() }
                    occurrence = candidate
                    if missed >= 10_000 {
                        next = trigger.nextOccurrence(after: now, in: job.timeZone, aligned: clustered)
                        break
                    }
                    next = trigger.nextOccurrence(after: candidate, in: job.timeZone, aligned: clustered)
                }
                entry.due = next.map { .wall(occurrence: $0, delay: nextDelay(for: job, occurrence: $0)) }
                jobs[name] = entry
                if missed > 0 {
                    let runsAll = job.catchUp == .all
                    log(.warning, "missed occurrences (clock jump or suspend)", [
                        "job": "\(name)", "missed": .number(missed), "first_missed": "\(first)",
                        "catch_up": "\(runsAll ? "running the \(skipped.count) latest" : "running the latest only")",
                    ])
                    if runsAll {
                        for earlier in skipped {
                            dispatch(job, scheduledTime: earlier, trigger: .catchUp, occurrence: earlier, queueBehind: true, now: now)
                        }
                    }
                }
                dispatch(job, scheduledTime: occurrence, trigger: .schedule, occurrence: occurrence,
                         queueBehind: job.catchUp == .all && missed > 0, dueTime: occurrence.advanced(by: delay), now: now)
            case .uptime(let occurrence, let delay) where occurrence + delay <= uptime:
                guard case .interval(let interval) = job.trigger else { continue }
                var nextOccurrence = occurrence + interval
                if nextOccurrence + delay <= uptime {
                    let behind = (uptime - occurrence - delay).wholeMicroseconds / max(1, interval.wholeMicroseconds)
                    log(.warning, "missed interval fires (suspend or overload); running once", ["job": "\(name)", "missed": .number(behind)])
                    nextOccurrence = occurrence + interval * Int(behind + 1)
                }
                entry.due = .uptime(occurrence: nextOccurrence, delay: nextDelay(for: job, occurrence: nil))
                jobs[name] = entry
                fire(job, scheduledTime: now.advanced(by: occurrence - uptime), trigger: .schedule,
                     dueTime: now.advanced(by: occurrence + delay - uptime), now: now)
            default:
                continue
            }
        }
    }

    /// Finds the earliest due job on each clock (of jobs due together, the first defined).
    mutating func computeEarliest() {
        earliestWall = nil
        earliestUptime = nil
        for (name, job) in jobs {
            switch job.due {
            case .wall(let occurrence, let delay):
                let instant = occurrence.advanced(by: delay)
                if earliestWall == nil || instant < earliestWall!.at { earliestWall = (instant, name) }
            case .uptime(let occurrence, let delay):
                if earliestUptime == nil || occurrence + delay < earliestUptime!.at { earliestUptime = (occurrence + delay, name) }
            case nil:
                break
            }
        }
        dueKnown = true
    }

    // MARK: - Firing

    /// Fires a scheduled occurrence: at once on a single daemon; in a cluster, once this node
    /// has claimed it (claims due together go out as one batch, from ``tick(now:uptime:)``).
    mutating func dispatch(_ job: JobDefinition, scheduledTime: Timestamp, trigger: RunTrigger, occurrence: Timestamp?,
                           queueBehind: Bool = false, dueTime: Timestamp? = nil, now: Timestamp) {
        guard clustered else {
            fire(job, scheduledTime: scheduledTime, trigger: trigger, occurrence: occurrence, queueBehind: queueBehind,
                 dueTime: dueTime, now: now)
            return
        }
        let key = occurrence ?? (trigger == .startup ? clusterStart ?? scheduledTime : scheduledTime)
        let id = ids.next(at: now)
        var record = RunRecord(id: id, job: job.name, trigger: trigger, scheduledTime: scheduledTime, queuedAt: now)
        record.node = node
        let request = RunRequest(id: id, job: job, scheduledTime: scheduledTime, dueTime: dueTime ?? now)
        insert(Fire(request: request, record: record, occurrence: occurrence, claim: ClaimRequest(job: job.name, occurrence: key),
                    queueBehind: queueBehind), stage: .claiming)
    }

    /// Records a fire and applies the job's overlap policy: wait for a slot, queue behind the
    /// running run, replace it, or record the fire as skipped. Returns its record.
    ///
    /// `occurrence` is the schedule occurrence the fire handles (wall-clock schedules): it is
    /// journalled before the run starts, so a crash never makes it run again. With
    /// `queueBehind`, a fire that cannot start yet waits behind the job's runs whatever the
    /// overlap policy (catch-up runs of every missed occurrence).
    @discardableResult
    mutating func fire(_ job: JobDefinition, scheduledTime: Timestamp, trigger: RunTrigger, occurrence: Timestamp? = nil,
                       queueBehind: Bool = false, dueTime: Timestamp? = nil, busyOn otherNode: String? = nil,
                       id givenID: RunID? = nil, triggeredBy: String? = nil, now: Timestamp) -> RunRecord {
        let id = givenID ?? ids.next(at: now)
        var record = RunRecord(id: id, job: job.name, trigger: trigger, scheduledTime: scheduledTime, queuedAt: now)
        record.node = node
        record.triggeredBy = triggeredBy
        let request = RunRequest(id: id, job: job, scheduledTime: scheduledTime, dueTime: dueTime ?? now, triggeredBy: triggeredBy)

        func skip(_ reason: String) -> RunRecord {
            record.outcome = .skipped(reason: reason)
            record.endedAt = now
            out.append(.journal(.settled(record, occurrence: occurrence)))
            log(.notice, "fire skipped: \(reason)", ["job": "\(job.name)", "run_id": "\(id)"])
            return record
        }
        func enter(_ stage: Stage, waitingFor: String) -> RunRecord {
            insert(Fire(request: request, record: record, occurrence: occurrence), stage: stage, waitingFor: waitingFor)
            record.waitingFor = waitingFor
            out.append(.journal(.fired(record, occurrence: occurrence)))
            return record
        }
        if paused.contains(job.name), trigger != .manual {
            return skip("paused")
        }
        if let otherNode, case .skip = job.overlap, !queueBehind {
            return skip("previous run still running on node \(otherNode)")
        }
        if activeInstances(of: job.name) < job.overlap.maxInstances {
            return enter(.waiting, waitingFor: runningCount >= settings.maxConcurrentRuns ? "a free slot (max_concurrent_runs)" : "a free slot")
        }
        if queueBehind {
            return enter(.queued, waitingFor: "the previous run")
        }
        switch job.overlap {
        case .skip:
            return skip("previous run still running")
        case .allow(let maxInstances):
            return skip("max_instances (\(maxInstances)) reached")
        case .queue(let max):
            guard queued(of: job.name).count < max else { return skip("queue full (max_queue \(max))") }
            return enter(.queued, waitingFor: "the previous run")
        case .replace:
            let superseded = dropPending(ofJob: job.name, outcome: .cancelled, reason: "replaced by a newer fire", now: now)
            stopRunning(ofJob: job.name)
            log(.notice, "replacing the running run", ["job": "\(job.name)", "run_id": "\(id)", "superseded": "\(superseded)"])
            return enter(.queued, waitingFor: "the replaced run to stop")
        }
    }

    /// Whether a job's next fire may be recorded ahead of its time: only when, as things
    /// stand, it would simply wait for a slot (not skipped, queued or replacing), on a single
    /// daemon.
    func mayArm(_ job: JobDefinition) -> Bool {
        !clustered && phase == .running && !paused.contains(job.name) && activeInstances(of: job.name) < job.overlap.maxInstances
    }

    /// Records a fire ahead of its time (see ``armLead``).
    mutating func arm(_ job: JobDefinition, scheduledTime: Timestamp, occurrence: Timestamp?, dueTime: Timestamp, until: Duration,
                      now: Timestamp) {
        let id = ids.next(at: now)
        var record = RunRecord(id: id, job: job.name, trigger: .schedule, scheduledTime: scheduledTime, queuedAt: now)
        record.waitingFor = "its time"
        let request = RunRequest(id: id, job: job, scheduledTime: scheduledTime, dueTime: dueTime)
        insert(Fire(request: request, record: record, occurrence: occurrence), stage: .armed(until: until), waitingFor: "its time")
        out.append(.journal(.fired(record, occurrence: occurrence)))
    }

    /// Armed fires whose time has come take their place in the slot queue — or, if meanwhile
    /// the job was paused or another of its runs started, what its overlap policy says.
    mutating func promoteArmed(now: Timestamp, uptime: Duration) {
        let due = ids(in: .armed).filter { if case .armed(let until) = work[$0]?.stage { until <= uptime } else { false } }
        for id in due {
            guard let entry = work[id] else { continue }
            let job = entry.request.job
            if paused.contains(job.name) {
                settle(id, outcome: .skipped(reason: "paused"), now: now)
                log(.notice, "fire skipped: paused", ["job": "\(job.name)", "run_id": "\(id)"])
                continue
            }
            // May it run beside what the job has now?
            if activeInstances(of: job.name) < job.overlap.maxInstances {
                moveToBack(id, stage: .waiting, waitingFor: "a free slot")
                continue
            }
            switch job.overlap {
            case .skip:
                settle(id, outcome: .skipped(reason: "previous run still running"), now: now)
            case .allow(let maxInstances):
                settle(id, outcome: .skipped(reason: "max_instances (\(maxInstances)) reached"), now: now)
            case .queue(let max):
                if queued(of: job.name).count < max {
                    moveToBack(id, stage: .queued, waitingFor: "the previous run")
                } else {
                    settle(id, outcome: .skipped(reason: "queue full (max_queue \(max))"), now: now)
                }
            case .replace:
                for other in entries(ofJob: job.name) where other.id != id && other.stage != .running && other.stage != .claiming {
                    settle(other.id, outcome: .cancelled, reason: "replaced by a newer fire", now: now)
                }
                stopRunning(ofJob: job.name)
                moveToBack(id, stage: .queued, waitingFor: "the replaced run to stop")
            }
        }
    }

    // MARK: - Starting

    /// Starts waiting fires, in fire order, while there is room under `max_concurrent_runs`
    /// and in each fire's pool (a fire whose pool is full does not hold up the others).
    mutating func startWaiting(now: Timestamp) {
        guard phase == .running else { return }
        var running = runningCount
        guard running < settings.maxConcurrentRuns, !slotQueue.isEmpty else { return }
        var poolUsage: [String: Int] = [:]
        if !settings.pools.isEmpty {
            for id in byStage[.running] ?? [] {
                if let pool = work[id]?.fire.pool { poolUsage[pool, default: 0] += 1 }
            }
        }
        // In fire order; a fire whose pool is full (or whose cluster-wide slot is not granted yet)
        // keeps its place and does not hold up those behind it.
        var kept: Deque<(id: RunID, order: UInt64)> = []
        while let next = slotQueue.popFirst() {
            guard var entry = work[next.id], entry.order == next.order, entry.stage == .waiting else { continue }
            guard running < settings.maxConcurrentRuns else {
                // Back in front, where it was: a run's end costs O(1), not a copy of the queue.
                slotQueue.prepend(next)
                break
            }
            if let pool = entry.fire.pool, let size = settings.pools[pool] {
                if poolUsage[pool, default: 0] >= size {
                    if entry.waitingFor != "pool '\(pool)'" {
                        entry.waitingFor = "pool '\(pool)'"
                        work[next.id] = entry
                        out.append(.waitingFor(next.id, "pool '\(pool)'"))
                    }
                    kept.append(next)
                    continue
                }
                if clustered, settings.clusterWidePools.contains(pool), entry.slot != .granted {
                    if entry.slot == nil {
                        entry.slot = .asked
                        entry.waitingFor = "pool '\(pool)' (cluster-wide)"
                        work[next.id] = entry
                        out.append(.waitingFor(next.id, "pool '\(pool)' (cluster-wide)"))
                        out.append(.acquireSlot(pool: pool, size: size, run: next.id, since: entry.fire.record.queuedAt))
                    }
                    kept.append(next)
                    continue
                }
                poolUsage[pool, default: 0] += 1
            }
            entry.waitingFor = nil
            work[next.id] = entry
            setStage(next.id, .running)
            running += 1
            out.append(.waitingFor(next.id, nil))
            out.append(.start(entry.request))
        }
        slotQueue.prepend(contentsOf: kept)
    }

    // MARK: - Events

    /// Feeds one event from outside; returns what follows from it.
    public mutating func handle(_ event: DispatchEvent, now: Timestamp, uptime: Duration) -> [DispatchAction] {
        switch event {
        case .started(let id, let pid, let at): runStarted(id, pid: pid, at: at)
        case .ended(let id, let result): runEnded(id, result: result, now: now, uptime: uptime)
        case .swept(let id): if let hook = hooks.removeValue(forKey: id) { out.append(hook) }
        case .claimed(let requests, let results): claimed(requests, results, now: now)
        case .slot(let id, let pool, let granted): slotAnswered(run: id, pool: pool, granted: granted)
        }
        startWaiting(now: now)
        return take()
    }

    /// A run's process started.
    mutating func runStarted(_ id: RunID, pid: Int32, at: Timestamp) {
        guard var entry = work[id] else { return }
        entry.pid = pid > 0 ? pid : nil
        entry.startedAt = at
        work[id] = entry
        out.append(.journal(.started(id: id, pid: pid, at: at)))
    }

    /// A run ended: its record is final, its slot is free, a retry is scheduled if the job's
    /// policy asks (else its hook runs), and the fire queued behind it may go.
    mutating func runEnded(_ id: RunID, result: RunResult, now: Timestamp, uptime: Duration) {
        guard let entry = remove(id) else { return }
        let request = entry.request
        let job = request.job
        if let pool = entry.fire.pool, entry.slot != nil { out.append(.releaseSlot(pool: pool, run: id)) }
        var record = entry.record
        if record.startedAt == nil { record.startedAt = result.startedAt }
        if record.pid == nil { record.pid = result.pid }
        record.outcome = result.outcome
        record.endedAt = result.endedAt
        record.usage = result.usage
        record.steps = result.steps
        record.waitingFor = nil

        // The retry is on record before the attempt's end, so whoever waits for the fire's
        // final outcome finds the next attempt the moment this one ends.
        let current = jobs[job.name]?.definition
        if !entry.stopping, phase == .running, let retry = job.retry, request.attempt < retry.attempts,
            Self.isRetried(result.outcome, by: retry), current == job
        {
            scheduleRetry(of: job, scheduledTime: request.scheduledTime, after: request.attempt, fireID: request.fireID,
                          previous: result.outcome.name, trigger: record.trigger, triggeredBy: request.triggeredBy,
                          retryAfter: result.retryAfter, now: now, uptime: uptime)
            out.append(.journal(.finished(record)))
        } else {
            out.append(.journal(.finished(record)))
            if !entry.stopping { fireFollowers(of: job, run: id, outcome: result.outcome, now: now) }
            // The hook runs once what the run left behind is swept (``DispatchEvent/swept(_:)``).
            if result.outcome == .succeeded {
                if let hook = job.onSuccess { hooks[id] = .runHook(hook, kind: "on_success", request: request, result: result) }
            } else if result.outcome.isFailure {
                if let hook = job.onFailure { hooks[id] = .runHook(hook, kind: "on_failure", request: request, result: result) }
            }
        }
        // The fire queued behind it, if the job has room now.
        if !entries(ofJob: job.name).contains(where: { $0.stage == .running }),
            let next = queued(of: job.name).first, activeInstances(of: job.name) < job.overlap.maxInstances
        {
            moveToBack(next, stage: .waiting, waitingFor: "a free slot")
        }
    }

    /// Queues attempt `attempt + 1` of a fire behind the job's backoff.
    mutating func scheduleRetry(of job: JobDefinition, scheduledTime: Timestamp, after attempt: Int, fireID: RunID, previous: String,
                                trigger: RunTrigger, triggeredBy: String? = nil, retryAfter: Duration? = nil, now: Timestamp,
                                uptime: Duration) {
        guard let retry = job.retry else { return }
        var delay = retry.delay(beforeAttempt: attempt + 1)
        if retry.jitter, delay > .zero {
            delay = .microseconds(Int64.random(in: 0..<delay.wholeMicroseconds))
        }
        // The server said when to come back (`Retry-After`): then, within max_backoff.
        if let retryAfter { delay = min(max(retryAfter, .zero), retry.maxBackoff) }
        let id = ids.next(at: now)
        let request = RunRequest(id: id, job: job, scheduledTime: scheduledTime, attempt: attempt + 1, fireID: fireID,
                                 triggeredBy: triggeredBy)
        var record = RunRecord(id: id, job: job.name, trigger: trigger, scheduledTime: scheduledTime, attempt: request.attempt,
                               fireID: fireID, queuedAt: now)
        record.node = node
        record.triggeredBy = triggeredBy
        let waitingFor = "retry backoff (\(DurationText.format(delay)))"
        insert(Fire(request: request, record: record, occurrence: nil), stage: .retrying(until: uptime + delay), waitingFor: waitingFor)
        record.waitingFor = waitingFor
        out.append(.journal(.fired(record, occurrence: nil)))
        log(.notice, "retrying", [
            "job": "\(job.name)", "run_id": "\(id)", "attempt": .number(request.attempt), "of": .number(retry.attempts),
            "after": .seconds(delay), "previous_outcome": "\(previous)",
        ])
    }

    /// Moves retries whose backoff has passed to the back of the slot queue.
    mutating func promoteDueRetries(uptime: Duration) {
        let due = ids(in: .retrying).filter { if case .retrying(let until) = work[$0]?.stage { until <= uptime } else { false } }
        for id in due { moveToBack(id, stage: .waiting, waitingFor: "a free slot") }
    }

    static func isRetried(_ outcome: RunOutcome, by policy: RetryPolicy) -> Bool {
        switch outcome {
        case .failed, .spawnFailed: policy.on.contains(.failure)
        case .timedOut: policy.on.contains(.timeout)
        case .signalled: policy.on.contains(.signal)
        // A server error or "too many requests" may pass; another status will not.
        case .httpStatus(let status): policy.on.contains(.status) && (status >= 500 || status == 429)
        case .requestFailed(_, let connection): connection && policy.on.contains(.connect)
        default: false
        }
    }

    // MARK: - Draining

    /// Stops firing: every fire not running is dropped (recorded `cancelled`); running runs go
    /// on until ``stopAll()``.
    public mutating func drain(now: Timestamp) -> [DispatchAction] {
        phase = .draining
        var released: [ClaimRequest] = []
        for id in ids(where: { $0.stage != .running }) {
            if let claim = work[id].flatMap(releasableClaim) { released.append(claim) }
            settle(id, outcome: .cancelled, now: now)
        }
        // Occurrences this node claimed but will not run go back to the cluster, so another
        // node runs them now.
        if !released.isEmpty { out.append(.releaseClaims(released)) }
        if runningCount > 0 {
            log(.notice, "stopping: waiting for running runs", [
                "running": .number(runningCount), "shutdown_grace": .seconds(settings.shutdownGrace),
            ])
        }
        return take()
    }

    /// `shutdown_grace` is over: every running run gets its kill sequence.
    public mutating func stopAll() -> [DispatchAction] {
        log(.warning, "shutdown_grace over, tearing down running runs", ["running": .number(runningCount)])
        for id in ids(in: .running) where work[id]?.stopping == false {
            stop(id)
        }
        return take()
    }

    /// The occurrence a won, never started fire holds in the cluster (nil for a single daemon,
    /// a claim still in flight, a retry or a run on request).
    func releasableClaim(_ entry: Work) -> ClaimRequest? {
        guard clustered, entry.fire.request.attempt == 1 else { return nil }
        switch entry.stage.kind {
        case .armed, .waiting, .queued: break
        case .claiming, .retrying, .running: return nil
        }
        switch entry.fire.record.trigger {
        case .schedule, .catchUp, .startup:
            return ClaimRequest(job: entry.fire.jobName, occurrence: entry.fire.occurrence ?? entry.fire.request.scheduledTime)
        case .manual, .after:
            return nil
        }
    }

    /// Draining is over: nothing runs.
    public mutating func stopped() {
        phase = .stopped
    }

    // MARK: - Helpers

    /// Runs alive, waiting for a slot, or in a retry's backoff: each counts against the job's
    /// overlap limit.
    func activeInstances(of job: String) -> Int {
        entries(ofJob: job).count { entry in
            // An armed fire counts from its time (when it is promoted), not before.
            switch entry.stage {
            case .waiting, .running, .retrying: return true
            case .armed, .queued, .claiming: return false
            }
        }
    }

    /// Fires queued behind a job's runs, oldest first.
    func queued(of job: String) -> [RunID] {
        entries(ofJob: job).filter { $0.stage == .queued }.map(\.id)
    }

    /// The ids of the entries that satisfy `predicate`, in fire order.
    func ids(where predicate: (Work) -> Bool) -> [RunID] {
        work.values.filter(predicate).sorted { $0.order < $1.order }.map(\.id)
    }

    /// How many runs are running now.
    public var runningCount: Int {
        byStage[.running]?.count ?? 0
    }

    /// How many fires wait (for a slot, behind a run, or in a retry's backoff).
    public var waitingCount: Int {
        (byStage[.armed]?.count ?? 0) + (byStage[.waiting]?.count ?? 0) + (byStage[.queued]?.count ?? 0) + (byStage[.retrying]?.count ?? 0)
    }

    /// Whether hooks of ended runs wait for their runs' sweeps.
    public var hasHeldHooks: Bool { !hooks.isEmpty }

    /// How many fires wait for a slot.
    public var waitingForSlotCount: Int {
        byStage[.waiting]?.count ?? 0
    }

    /// The entries in one stage, in fire order.
    func ids(in kind: Stage.Kind) -> [RunID] {
        (byStage[kind] ?? []).compactMap { work[$0] }.sorted { $0.order < $1.order }.map(\.id)
    }

    /// Moves an entry to another stage (the one way a stage changes).
    mutating func setStage(_ id: RunID, _ stage: Stage) {
        guard let old = work[id]?.stage else { return }
        byStage[old.kind]?.remove(id)
        work[id]?.stage = stage
        byStage[stage.kind, default: []].insert(id)
    }

    /// Whether the indexes agree with the entries (for tests).
    public var indexesAreConsistent: Bool {
        for kind in Stage.Kind.allCases where Set(work.values.filter { $0.stage.kind == kind }.map(\.id)) != (byStage[kind] ?? []) {
            return false
        }
        let jobs = Dictionary(grouping: work.values, by: \.job).mapValues { Set($0.map(\.id)) }
        return jobs == byJob.mapValues(Set.init)
    }

    /// Adds a fire in `stage` (at the back of fire order).
    mutating func insert(_ fire: Fire, stage: Stage, waitingFor: String? = nil) {
        nextOrder += 1
        work[fire.record.id] = Work(fire: fire, stage: stage, order: nextOrder, waitingFor: waitingFor)
        byJob[fire.jobName, default: []].append(fire.record.id)
        byStage[stage.kind, default: []].insert(fire.record.id)
        if stage == .waiting { slotQueue.append((fire.record.id, nextOrder)) }
    }

    /// Removes an entry (it ended, was dropped, or lost its claim).
    @discardableResult
    mutating func remove(_ id: RunID) -> Work? {
        guard let entry = work.removeValue(forKey: id) else { return nil }
        byStage[entry.stage.kind]?.remove(id)
        byJob[entry.job]?.removeAll { $0 == id }
        if byJob[entry.job]?.isEmpty == true { byJob.removeValue(forKey: entry.job) }
        return entry
    }

    /// A job's entries, in fire order.
    func entries(ofJob job: String) -> [Work] {
        (byJob[job] ?? []).compactMap { work[$0] }.sorted { $0.order < $1.order }
    }

    /// Moves an entry to the back of fire order (the end of the slot queue) in a new stage.
    mutating func moveToBack(_ id: RunID, stage: Stage, waitingFor: String) {
        guard var entry = work[id] else { return }
        nextOrder += 1
        entry.order = nextOrder
        entry.waitingFor = waitingFor
        work[id] = entry
        setStage(id, stage)
        if stage == .waiting { slotQueue.append((id, nextOrder)) }
        out.append(.waitingFor(id, waitingFor))
    }

    /// Starts the kill sequence of a running run; it will not be retried.
    mutating func stop(_ id: RunID) {
        guard var entry = work[id], entry.stage == .running else { return }
        entry.stopping = true
        work[id] = entry
        out.append(.stop(id))
    }

    /// Stops every running run of a job.
    mutating func stopRunning(ofJob job: String) {
        for id in entries(ofJob: job).filter({ $0.stage == .running }).map(\.id) {
            stop(id)
        }
    }

    /// Ends a fire that is not running (dropped while waiting, queued, retrying or claiming):
    /// recorded with `outcome` unless it was only being claimed (then nothing was recorded).
    @discardableResult
    mutating func settle(_ id: RunID, outcome: RunOutcome, reason: String? = nil, now: Timestamp) -> RunRecord? {
        guard let entry = work[id], entry.stage != .running else { return nil }
        remove(id)
        if let pool = entry.fire.pool, entry.slot != nil { out.append(.releaseSlot(pool: pool, run: id)) }
        guard entry.stage != .claiming else { return nil }
        var record = entry.record
        record.outcome = outcome
        record.endedAt = now
        record.waitingFor = nil
        if let reason { record.statusText = reason }
        out.append(.journal(.finished(record)))
        return record
    }

    /// Drops a job's fires that are not running, recording each with `outcome`.
    @discardableResult
    mutating func dropPending(ofJob job: String, outcome: RunOutcome, reason: String, now: Timestamp) -> Int {
        let ids = entries(ofJob: job).filter { $0.stage != .running && $0.stage != .claiming }.map(\.id)
        for id in ids { settle(id, outcome: outcome, reason: reason, now: now) }
        return ids.count
    }

    mutating func log(_ level: Logger.Level, _ message: String, _ metadata: Logger.Metadata = [:]) {
        out.append(.log(level, message, metadata))
    }
}
