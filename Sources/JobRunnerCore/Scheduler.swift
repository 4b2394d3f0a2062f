import JobRunnerConfig
import JobRunnerSchedule
import Logging
import ServiceLifecycle
import Synchronization

/// The engine's heart: knows every job's next fire, sleeps until the earliest one (no polling:
/// an idle scheduler does not wake up), and starts each fire as a child task of its task group,
/// under the job's overlap policy, its pool and `max_concurrent_runs`, retrying failed attempts
/// as the job says.
///
/// Reloads are applied by job name (`Scheduler+Reload.swift`); runs are cancelled through
/// `Scheduler+Control.swift`. A graceful shutdown stops firing, lets running runs finish for
/// `shutdown_grace`, then cancels them, which tears each down with its kill sequence.
public actor Scheduler: Service {
    /// The lifecycle of the scheduler.
    public enum State: String, Sendable {
        case starting, running, draining, stopped
    }

    /// When an entry fires next: its occurrence (the instant its schedule names) plus the
    /// job's random delay.
    enum Due: Sendable, Hashable {
        /// A wall-clock occurrence (cron and calendar schedules).
        case wall(occurrence: Timestamp, delay: Duration)
        /// An uptime occurrence (intervals: immune to wall-clock steps).
        case uptime(occurrence: Duration, delay: Duration)
    }

    struct Entry: Sendable {
        var job: JobDefinition
        var due: Due?
    }

    /// A fire (or a retry) on its way to a slot.
    struct Pending: Sendable {
        var request: RunRequest
        var tail: OutputTail
        var handle: RunHandle
    }

    /// A retry waiting for its backoff to pass.
    struct Retry: Sendable {
        var due: Duration
        var pending: Pending
    }

    /// Per job: its live runs and the fires queued behind them (`overlap: queue` / `replace`).
    struct JobRuns: Sendable {
        var running: [RunID: RunHandle] = [:]
        var queued: [Pending] = []
        /// Runs cancelled on purpose: they are not retried.
        var cancelled: Set<RunID> = []
    }

    // MARK: State

    var entries: [String: Entry] = [:] {
        didSet { dueKnown = false }
    }
    /// The earliest due entry on each clock, known while no entry changed since it was
    /// computed: an iteration of the loop with nothing due costs O(1), not O(jobs).
    var dueKnown = false
    var earliestWall: Timestamp?
    var earliestUptime: Duration?
    var earliestWallJob: String?
    var earliestUptimeJob: String?
    var order: [String] = []
    var waiting: [Pending] = []
    var retries: [Retry] = []
    var runs: [String: JobRuns] = [:]
    var poolUsage: [String: Int] = [:]
    var runningCount = 0
    var settings: DaemonSettings
    var generation = 1
    var state: State = .starting
    var lastReload: ReloadSummary?

    // MARK: Collaborators

    /// Every live and recent run.
    public nonisolated let registry: RunRegistry
    let supervisor: Supervisor
    let clock: any SchedulerClock
    let logger: Logger
    let ids = RunIDGenerator()
    let doorbell = Doorbell()
    let stopRequested = StopFlag()
    let onChange: @Sendable () -> Void
    /// Seeds `fixed_random_delay` offsets, so they are stable for a machine (its machine id).
    let jitterSeed: UInt64
    /// Where history goes (nil: in memory only).
    let journal: (any RunJournal)?
    /// Paused jobs do not fire (their fires are recorded as skipped).
    var paused: Set<String> = []
    /// Called from the loop to show liveness (the watchdog) and, while draining, the time left.
    let heartbeat: Heartbeat?
    /// The other nodes of the cluster (nil: a single daemon).
    let cluster: (any ClusterCoordination)?
    /// Fires due now, waiting to be claimed together.
    var claimBuffer: [ClaimedFire] = []
    /// Runs asking for (or holding) a slot of a cluster-wide pool.
    var clusterSlots: [RunID: ClusterSlot] = [:]
    private var lastBeat: Duration = .zero
    private var startupFires: [(job: String, occurrence: Timestamp?, trigger: RunTrigger)] = []

    /// Creates the scheduler and computes every job's first fire, so the schedule is complete
    /// before the daemon reports itself ready.
    public init(
        configuration: Configuration,
        supervisor: Supervisor,
        registry: RunRegistry,
        clock: any SchedulerClock,
        logger: Logger,
        jitterSeed: UInt64 = 0,
        journal: (any RunJournal)? = nil,
        memories: [String: JobMemory] = [:],
        heartbeat: Heartbeat? = nil,
        cluster: (any ClusterCoordination)? = nil,
        onChange: @escaping @Sendable () -> Void = {}
    ) {
        self.heartbeat = heartbeat
        self.cluster = cluster
        self.jitterSeed = jitterSeed
        self.journal = journal
        self.settings = configuration.daemon
        self.supervisor = supervisor
        self.registry = registry
        self.clock = clock
        self.logger = logger
        self.onChange = onChange
        let now = clock.now()
        let uptime = clock.uptime()
        for job in configuration.jobs {
            entries[job.name] = Entry(job: job, due: Self.firstDue(of: job, now: now, uptime: uptime, seed: jitterSeed,
                                                                  clustered: cluster != nil))
            order.append(job.name)
            if memories[job.name]?.paused == true { paused.insert(job.name) }
            guard job.enabled else { continue }
            for occurrence in Self.missedOccurrences(of: job, memory: memories[job.name], now: now, logger: logger) {
                startupFires.append((job.name, occurrence, .catchUp))
            }
            if job.trigger == .reboot || job.runOnStart { startupFires.append((job.name, nil, .startup)) }
        }
        journal?.record(.known(jobs: configuration.jobs.map(\.name), at: now))
    }

    /// Occurrences a job missed while the daemon was down, as its `catch_up` policy wants them
    /// run: none, the latest, or each (the latest `catch_up_max`). A job never catches up on
    /// time before the daemon first knew it.
    static func missedOccurrences(of job: JobDefinition, memory: JobMemory?, now: Timestamp, logger: Logger) -> [Timestamp] {
        guard let memory, let trigger = job.trigger else { return [] }
        switch trigger {
        case .cron, .calendar: return missed(trigger, job: job, memory: memory, now: now, logger: logger)
        case .interval, .reboot: return []
        }
    }

    private static func missed(_ trigger: JobTrigger, job: JobDefinition, memory: JobMemory, now: Timestamp, logger: Logger) -> [Timestamp] {
        let candidates = [memory.lastOccurrence, memory.firstSeen].compactMap { $0 }
        guard let since = candidates.max() else { return [] }
        var missed: [Timestamp] = []
        var count = 0
        var cursor = since
        while count < 1_000_000, let next = trigger.nextOccurrence(after: cursor, in: job.timeZone), next <= now {
            count += 1
            missed.append(next)
            if missed.count > job.catchUpMax { missed.removeFirst() }
            cursor = next
        }
        guard count > 0 else { return [] }
        switch job.catchUp {
        case .none:
            logger.notice("occurrences missed while the daemon was down are not run (catch_up: none)", metadata: [
                "job": "\(job.name)", "missed": "\(count)", "since": "\(since)",
            ])
            return []
        case .once:
            logger.notice("catching up once for occurrences missed while the daemon was down", metadata: [
                "job": "\(job.name)", "missed": "\(count)", "latest": "\(missed.last!)",
            ])
            return [missed.last!]
        case .all:
            logger.notice("catching up occurrences missed while the daemon was down", metadata: [
                "job": "\(job.name)", "missed": "\(count)", "running": "\(missed.count)",
            ])
            return missed
        }
    }

    // MARK: - Service

    public func run() async {
        state = .running
        logger.info("scheduler started", metadata: ["jobs": "\(entries.count)"])
        await withDiscardingTaskGroup { group in
            await withTaskCancellationOrGracefulShutdownHandler {
                for startup in startupFires {
                    if let entry = entries[startup.job] {
                        dispatch(entry.job, scheduledTime: startup.occurrence ?? clock.now(), trigger: startup.trigger,
                                 occurrence: startup.occurrence, queueBehind: startup.trigger == .catchUp)
                    }
                }
                startupFires = []
                await loop(group: &group)
            } onCancelOrGracefulShutdown: { [doorbell, stopRequested] in
                stopRequested.set()
                doorbell.ring()
            }
            await drain(group: &group)
        }
        state = .stopped
        onChange()
        logger.info("scheduler stopped")
    }

    private func loop(group: inout DiscardingTaskGroup) async {
        while !stopRequested.isSet {
            fireDue()
            flushClaims()
            promoteDueRetries()
            startWaiting(group: &group)
            EngineMetrics.waiting(waiting.count + retries.count + runs.values.reduce(0) { $0 + $1.queued.count })
            onChange()
            let beatAt = beatIfDue(.running, every: heartbeat?.interval)
            _ = await waitForWork(until: Self.earliest(nextDeadline(), beatAt))
        }
    }

    /// Beats if `every` has passed since the last beat; returns when the next beat is due (on
    /// the wall clock, for the sleep), or nil without heartbeat.
    private func beatIfDue(_ phase: Heartbeat.Phase, every interval: Duration?) -> Timestamp? {
        guard let heartbeat, let interval else { return nil }
        let uptime = clock.uptime()
        if uptime - lastBeat >= interval || lastBeat == .zero {
            heartbeat.beat(phase)
            // On a steady cadence (a late wake-up does not push every later beat back), unless
            // the loop fell a whole interval behind.
            lastBeat = lastBeat == .zero || uptime - lastBeat >= interval * 2 ? uptime : lastBeat + interval
        }
        return clock.now().advanced(by: lastBeat + interval - uptime)
    }

    static func earliest(_ first: Timestamp?, _ second: Timestamp?) -> Timestamp? {
        guard let first else { return second }
        guard let second else { return first }
        return min(first, second)
    }

    /// Stops firing, lets runs finish for `shutdown_grace`, then cancels what is left.
    private func drain(group: inout DiscardingTaskGroup) async {
        state = .draining
        let now = clock.now()
        for pending in waiting + retries.map(\.pending) + runs.values.flatMap(\.queued) {
            settle(pending.request.id, outcome: .cancelled, at: now)
        }
        waiting.removeAll()
        retries.removeAll()
        for name in runs.keys { runs[name]?.queued.removeAll() }
        let graceEnd = clock.uptime() + settings.shutdownGrace
        if runningCount > 0 {
            logger.notice("stopping: waiting for running runs", metadata: [
                "running": "\(runningCount)", "shutdown_grace": "\(DurationText.format(settings.shutdownGrace))",
            ])
        }
        onChange()
        let longestKillGrace = runs.keys.compactMap { entries[$0]?.job.killGrace }.max() ?? .zero
        lastBeat = .zero
        while runningCount > 0 {
            let timeLeft = max(.zero, graceEnd - clock.uptime()) + longestKillGrace + Heartbeat.drainMargin
            let beatAt = beatIfDue(.draining(runs: runningCount, timeLeft: timeLeft), every: heartbeat?.drainInterval)
            if clock.uptime() >= graceEnd {
                logger.warning("shutdown_grace over, tearing down running runs", metadata: ["running": "\(runningCount)"])
                for name in runs.keys {
                    for (id, handle) in runs[name]?.running ?? [:] {
                        runs[name]?.cancelled.insert(id)
                        handle.cancel()
                    }
                }
                group.cancelAll()
                return
            }
            _ = await waitForWork(until: Self.earliest(clock.now().advanced(by: graceEnd - clock.uptime()), beatAt))
            onChange()
        }
    }

    // MARK: - Firing

    /// Fires every entry whose time has come. When several occurrences of one job are due at
    /// once (the clock jumped, or the machine slept), they are coalesced into one run for the
    /// latest, and the missed ones are logged.
    private func fireDue() {
        let now = clock.now()
        let uptime = clock.uptime()
        if dueKnown, earliestWall.map({ $0 > now }) ?? true, earliestUptime.map({ $0 > uptime }) ?? true {
            return
        }
        defer { computeEarliest() }
        for name in order {
            guard var entry = entries[name], let due = entry.due else { continue }
            let job = entry.job
            switch due {
            case .wall(let first, let delay) where first.advanced(by: delay) <= now:
                guard let trigger = job.trigger else { continue }
                var occurrence = first
                var skipped: [Timestamp] = []
                var missed = 0
                let aligned = cluster != nil
                var next = trigger.nextOccurrence(after: occurrence, in: job.timeZone, aligned: aligned)
                while let candidate = next, candidate.advanced(by: delay) <= now {
                    missed += 1
                    skipped.append(occurrence)
                    if skipped.count > job.catchUpMax { skipped.removeFirst() }
                    occurrence = candidate
                    if missed >= 10_000 {
                        next = trigger.nextOccurrence(after: now, in: job.timeZone, aligned: aligned)
                        break
                    }
                    next = trigger.nextOccurrence(after: candidate, in: job.timeZone, aligned: aligned)
                }
                entry.due = next.map { .wall(occurrence: $0, delay: Self.delay(for: job, occurrence: $0, seed: jitterSeed, derived: aligned)) }
                entries[name] = entry
                if missed > 0 {
                    // The latest occurrence runs (late); the earlier ones follow catch_up.
                    let runsAll = job.catchUp == .all
                    logger.warning("missed occurrences (clock jump or suspend)", metadata: [
                        "job": "\(name)", "missed": "\(missed)", "first_missed": "\(first)",
                        "catch_up": "\(runsAll ? "running the \(skipped.count) latest" : "running the latest only")",
                    ])
                    if runsAll {
                        for earlier in skipped {
                            dispatch(job, scheduledTime: earlier, trigger: .catchUp, occurrence: earlier, queueBehind: true)
                        }
                    }
                }
                dispatch(job, scheduledTime: occurrence, trigger: .schedule, occurrence: occurrence,
                         queueBehind: job.catchUp == .all && missed > 0, dueTime: occurrence.advanced(by: delay))
            case .uptime(let occurrence, let delay) where occurrence + delay <= uptime:
                guard case .interval(let interval) = job.trigger else { continue }
                var nextOccurrence = occurrence + interval
                var missed = 0
                if nextOccurrence + delay <= uptime {
                    let behind = (uptime - occurrence - delay).wholeMicroseconds / interval.wholeMicroseconds
                    missed = Int(behind)
                    nextOccurrence = occurrence + interval * Int(behind + 1)
                }
                if missed > 0 {
                    logger.warning("missed interval fires (suspend or overload); running once", metadata: [
                        "job": "\(name)", "missed": "\(missed)",
                    ])
                }
                entry.due = .uptime(occurrence: nextOccurrence, delay: Self.delay(for: job, occurrence: nil, seed: jitterSeed))
                entries[name] = entry
                fire(job, scheduledTime: now.advanced(by: occurrence - uptime), trigger: .schedule,
                     dueTime: now.advanced(by: occurrence + delay - uptime))
            default:
                continue
            }
        }
    }

    /// Records a fire and applies the job's overlap policy: start (or wait for a slot), queue
    /// behind the running run, replace it, or record the fire as skipped.
    ///
    /// `occurrence` is the schedule occurrence the fire handles (wall-clock schedules): it is
    /// journalled before the run starts, so a crash never makes it run again. With
    /// `queueBehind`, a fire that cannot start yet waits behind the job's runs whatever the
    /// overlap policy (catch-up runs of every missed occurrence).
    @discardableResult
    func fire(_ job: JobDefinition, scheduledTime: Timestamp, trigger: RunTrigger, occurrence: Timestamp? = nil,
              queueBehind: Bool = false, dueTime: Timestamp? = nil, busyOn otherNode: String? = nil, id givenID: RunID? = nil) -> RunRecord {
        let now = clock.now()
        let id = givenID ?? ids.next(at: now)
        var record = RunRecord(id: id, job: job.name, trigger: trigger, scheduledTime: scheduledTime, queuedAt: now)
        record.node = cluster?.nodeName
        let pending = Pending(request: RunRequest(id: id, job: job, scheduledTime: scheduledTime, dueTime: dueTime ?? now),
                              tail: OutputTail(capacity: settings.outputTail), handle: RunHandle())
        record.output = pending.tail
        record.handle = pending.handle

        func skip(_ reason: String) -> RunRecord {
            record.handle = nil
            record.output = nil
            record.outcome = .skipped(reason: reason)
            record.endedAt = now
            registry.recordFinished(record)
            journal?.record(.settled(record, occurrence: occurrence))
            EngineMetrics.runFinished(job: job.name, outcome: record.outcome!, duration: nil, at: now)
            logger.notice("fire skipped: \(reason)", metadata: ["job": "\(job.name)", "run_id": "\(id)"])
            return record
        }
        if paused.contains(job.name), trigger != .manual {
            return skip("paused")
        }
        if let otherNode, case .skip = job.overlap, !queueBehind {
            return skip("previous run still running on node \(otherNode)")
        }
        if activeInstances(of: job.name) < job.overlap.maxInstances {
            record.waitingFor = runningCount >= settings.maxConcurrentRuns ? "a free slot (max_concurrent_runs)" : "a free slot"
            registry.add(record)
            journal?.record(.fired(record, occurrence: occurrence))
            waiting.append(pending)
            doorbell.ring()
            return record
        }
        if queueBehind {
            record.waitingFor = "the previous run"
            registry.add(record)
            journal?.record(.fired(record, occurrence: occurrence))
            runs[job.name, default: JobRuns()].queued.append(pending)
            return record
        }
        switch job.overlap {
        case .skip:
            return skip("previous run still running")
        case .allow(let maxInstances):
            return skip("max_instances (\(maxInstances)) reached")
        case .queue(let max):
            guard runs[job.name, default: JobRuns()].queued.count < max else {
                return skip("queue full (max_queue \(max))")
            }
            record.waitingFor = "the previous run"
            registry.add(record)
            journal?.record(.fired(record, occurrence: occurrence))
            runs[job.name, default: JobRuns()].queued.append(pending)
            return record
        case .replace:
            let superseded = dropPending(ofJob: job.name, outcome: .cancelled, reason: "replaced by a newer fire")
            for (runID, handle) in runs[job.name]?.running ?? [:] {
                runs[job.name]?.cancelled.insert(runID)
                handle.cancel()
            }
            logger.notice("replacing the running run", metadata: ["job": "\(job.name)", "run_id": "\(id)", "superseded": "\(superseded)"])
            record.waitingFor = "the replaced run to stop"
            registry.add(record)
            journal?.record(.fired(record, occurrence: occurrence))
            runs[job.name, default: JobRuns()].queued = [pending]
            return record
        }
    }

    /// Runs alive, waiting for a slot, or waiting for a retry: each counts against the
    /// job's overlap limit.
    func activeInstances(of job: String) -> Int {
        (runs[job]?.running.count ?? 0) + waiting.count { $0.request.job.name == job } + retries.count { $0.pending.request.job.name == job }
    }

    /// Drops a job's waiting, queued and retrying fires, recording each with `outcome`.
    @discardableResult
    func dropPending(ofJob job: String, outcome: RunOutcome, reason: String) -> Int {
        let now = clock.now()
        var dropped: [Pending] = []
        waiting.removeAll { pending in
            guard pending.request.job.name == job else { return false }
            dropped.append(pending)
            return true
        }
        retries.removeAll { retry in
            guard retry.pending.request.job.name == job else { return false }
            dropped.append(retry.pending)
            return true
        }
        dropped += runs[job]?.queued ?? []
        runs[job]?.queued.removeAll()
        for pending in dropped {
            registry.update(pending.request.id) { $0.statusText = reason }
            settle(pending.request.id, outcome: outcome, at: now)
        }
        return dropped.count
    }

    /// Ends a live record (in memory and in the journal) and returns it.
    @discardableResult
    func settle(_ id: RunID, outcome: RunOutcome, at instant: Timestamp) -> RunRecord? {
        releaseClusterSlot(of: id)
        let record = registry.finish(id, outcome: outcome, at: instant)
        if let record { journal?.record(.finished(record)) }
        return record
    }

    /// Moves retries whose backoff has passed to the slot queue.
    private func promoteDueRetries() {
        let uptime = clock.uptime()
        retries.removeAll { retry in
            guard retry.due <= uptime else { return false }
            registry.update(retry.pending.request.id) { $0.waitingFor = "a free slot" }
            waiting.append(retry.pending)
            return true
        }
    }

    /// Starts waiting fires, in fire order, while there is room under `max_concurrent_runs`
    /// and in each fire's pool (a fire whose pool is full does not hold up the others).
    private func startWaiting(group: inout DiscardingTaskGroup) {
        guard state == .running else { return }
        var index = 0
        while index < waiting.count, runningCount < settings.maxConcurrentRuns {
            let pending = waiting[index]
            if let pool = pending.request.job.pool, let size = settings.pools[pool], poolUsage[pool, default: 0] >= size {
                registry.update(pending.request.id) { $0.waitingFor = "pool '\(pool)'" }
                index += 1
                continue
            }
            if !holdsClusterSlot(pending) {
                index += 1
                continue
            }
            waiting.remove(at: index)
            start(pending, group: &group)
        }
    }

    private func start(_ pending: Pending, group: inout DiscardingTaskGroup) {
        let request = pending.request
        runningCount += 1
        if let pool = request.job.pool { poolUsage[pool, default: 0] += 1 }
        runs[request.job.name, default: JobRuns()].running[request.id] = pending.handle
        registry.update(request.id) { $0.waitingFor = nil }
        let supervisor = self.supervisor
        let registry = self.registry
        let onChange = self.onChange
        let journal = self.journal
        let logger = self.logger
        group.addTask {
            let id = request.id
            // The fire is on disk before its process exists: a crash cannot run it twice.
            await journal?.flush()
            let result = await supervisor.run(request, handle: pending.handle, output: pending.tail, onStarted: { pid, startedAt in
                registry.update(id) { record in
                    record.pid = pid
                    record.startedAt = startedAt
                }
                journal?.record(.started(id: id, pid: pid, at: startedAt))
                EngineMetrics.lateness(request.dueTime.duration(to: startedAt))
                onChange()
            })
            registry.update(id) { record in
                if record.startedAt == nil { record.startedAt = result.startedAt }
            }
            let final = registry.finish(id, outcome: result.outcome, at: result.endedAt)
            if let final { journal?.record(.finished(final)) }
            EngineMetrics.runFinished(job: request.job.name, outcome: result.outcome,
                                      duration: result.startedAt.duration(to: result.endedAt), at: result.endedAt)
            // Logged once the record is final, so whoever reads the log line can read the run.
            var runLogger = logger
            runLogger[metadataKey: "job"] = "\(request.job.name)"
            runLogger[metadataKey: "run_id"] = "\(id)"
            if let pid = result.pid { runLogger[metadataKey: "pid"] = "\(pid)" }
            result.log(runLogger, "run")
            let hook = await self.runEnded(request, result: result)
            if result.pid != nil {
                await supervisor.sweepLeftovers(of: request)
            }
            if let hook {
                _ = await supervisor.runHook(hook.command, kind: hook.kind, for: request, result: result,
                                             output: final?.output?.text ?? pending.tail.text)
            }
        }
    }

    /// Bookkeeping when a run ends: frees its slot, schedules a retry if the job's policy asks,
    /// starts the fire queued behind it. Returns the hook to run, if any.
    private func runEnded(_ request: RunRequest, result: RunResult) -> (command: JobCommand, kind: String)? {
        let job = request.job
        releaseClusterSlot(of: request.id)
        runningCount -= 1
        if let pool = job.pool { poolUsage[pool, default: 1] -= 1 }
        runs[job.name]?.running.removeValue(forKey: request.id)
        let cancelledOnPurpose = runs[job.name]?.cancelled.remove(request.id) != nil
        defer {
            if runs[job.name]?.running.isEmpty == true, let next = runs[job.name]?.queued.first,
                activeInstances(of: job.name) < job.overlap.maxInstances
            {
                runs[job.name]?.queued.removeFirst()
                registry.update(next.request.id) { $0.waitingFor = "a free slot" }
                waiting.append(next)
            }
            doorbell.ring()
        }

        if !cancelledOnPurpose, state == .running, let retry = job.retry, request.attempt < retry.attempts,
            Self.isRetried(result.outcome, by: retry), entries[job.name]?.job == job
        {
            scheduleRetry(of: job, scheduledTime: request.scheduledTime, after: request.attempt, fireID: request.fireID,
                          previous: result.outcome.name)
            return nil
        }
        switch result.outcome {
        case .succeeded:
            return job.onSuccess.map { ($0, "on_success") }
        case .failed, .signalled, .timedOut, .spawnFailed:
            return job.onFailure.map { ($0, "on_failure") }
        case .cancelled, .skipped, .interrupted:
            return nil
        }
    }

    /// Queues attempt `attempt + 1` of a fire behind the job's backoff.
    func scheduleRetry(of job: JobDefinition, scheduledTime: Timestamp, after attempt: Int, fireID: RunID, previous: String) {
        guard let retry = job.retry else { return }
        var delay = retry.delay(beforeAttempt: attempt + 1)
        if retry.jitter, delay > .zero {
            delay = .microseconds(Int64.random(in: 0..<delay.wholeMicroseconds))
        }
        let now = clock.now()
        let id = ids.next(at: now)
        let next = RunRequest(id: id, job: job, scheduledTime: scheduledTime, attempt: attempt + 1, fireID: fireID)
        let pending = Pending(request: next, tail: OutputTail(capacity: settings.outputTail), handle: RunHandle())
        var record = RunRecord(id: id, job: job.name, trigger: .schedule, scheduledTime: scheduledTime,
                               attempt: next.attempt, fireID: fireID, queuedAt: now)
        record.node = cluster?.nodeName
        record.output = pending.tail
        record.handle = pending.handle
        record.waitingFor = "retry backoff (\(DurationText.format(delay)))"
        registry.add(record)
        journal?.record(.fired(record, occurrence: nil))
        retries.append(Retry(due: clock.uptime() + delay, pending: pending))
        doorbell.ring()
        logger.notice("retrying", metadata: [
            "job": "\(job.name)", "run_id": "\(id)", "attempt": "\(next.attempt)", "of": "\(retry.attempts)",
            "after": "\(DurationText.format(delay))", "previous_outcome": "\(previous)",
        ])
    }

    static func isRetried(_ outcome: RunOutcome, by policy: RetryPolicy) -> Bool {
        switch outcome {
        case .failed, .spawnFailed: policy.on.contains(.failure)
        case .timedOut: policy.on.contains(.timeout)
        case .signalled: policy.on.contains(.signal)
        default: false
        }
    }

    // MARK: - Waiting

    /// Finds the earliest due entry on each clock.
    func computeEarliest() {
        var wall: Timestamp?
        var uptime: Duration?
        earliestWallJob = nil
        earliestUptimeJob = nil
        // In configuration order, so that of jobs due together the first defined is named.
        for name in order {
            switch entries[name]?.due {
            case .wall(let occurrence, let delay):
                let instant = occurrence.advanced(by: delay)
                if wall == nil || instant < wall! {
                    wall = instant
                    earliestWallJob = name
                }
            case .uptime(let occurrence, let delay):
                if uptime == nil || occurrence + delay < uptime! {
                    uptime = occurrence + delay
                    earliestUptimeJob = name
                }
            case nil:
                break
            }
        }
        earliestWall = wall
        earliestUptime = uptime
        dueKnown = true
    }

    /// The wall-clock instant of the earliest due entry or retry.
    func nextDeadline() -> Timestamp? {
        let now = clock.now()
        let uptime = clock.uptime()
        if !dueKnown { computeEarliest() }
        var earliest = earliestWall
        if let due = earliestUptime {
            let instant = now.advanced(by: due - uptime)
            if earliest == nil || instant < earliest! { earliest = instant }
        }
        for retry in retries {
            let instant = now.advanced(by: retry.due - uptime)
            if earliest == nil || instant < earliest! { earliest = instant }
        }
        return earliest
    }

    /// When a due entry fires, on the wall clock.
    static func fireInstant(_ due: Due?, now: Timestamp, uptime: Duration) -> Timestamp? {
        switch due {
        case .wall(let occurrence, let delay): occurrence.advanced(by: delay)
        case .uptime(let occurrence, let delay): now.advanced(by: occurrence + delay - uptime)
        case nil: nil
        }
    }

    /// Sleeps until `deadline`, a doorbell ring or a clock change, whichever is first.
    private func waitForWork(until deadline: Timestamp?) async -> WakeReason {
        if doorbell.consume() { return .interrupted }
        let clock = self.clock
        let doorbell = self.doorbell
        return await withTaskGroup(of: WakeReason.self) { group in
            group.addTask { await clock.sleep(until: deadline) }
            group.addTask {
                await doorbell.wait()
                return .interrupted
            }
            let first = await group.next() ?? .interrupted
            group.cancelAll()
            return first
        }
    }

    /// The first fire of a job from now (nil when it only runs on request or at startup).
    /// In a cluster (`clustered`), intervals are aligned to the Unix epoch and random delays
    /// derive from the occurrence, so every node names the same instants.
    static func firstDue(of job: JobDefinition, now: Timestamp, uptime: Duration, seed: UInt64, clustered: Bool = false) -> Due? {
        guard job.enabled, let trigger = job.trigger else { return nil }
        switch trigger {
        case .cron, .calendar:
            return trigger.nextOccurrence(after: now, in: job.timeZone).map {
                .wall(occurrence: $0, delay: delay(for: job, occurrence: $0, seed: seed, derived: clustered))
            }
        case .interval where clustered:
            return trigger.nextOccurrence(after: now, in: job.timeZone, aligned: true).map {
                .wall(occurrence: $0, delay: delay(for: job, occurrence: $0, seed: seed, derived: true))
            }
        case .interval(let interval):
            return .uptime(occurrence: uptime + interval, delay: delay(for: job, occurrence: nil, seed: seed))
        case .reboot:
            return nil
        }
    }

    /// The random delay of one fire: fresh and uniform in [0, random_delay), or with
    /// `fixed_random_delay` one stable offset per job and machine (like systemd's
    /// FixedRandomDelay). With `derived` (a cluster), the delay is a hash of the occurrence, the
    /// same on every node.
    public static func delay(for job: JobDefinition, occurrence: Timestamp?, seed: UInt64, derived: Bool = false) -> Duration {
        guard let range = job.randomDelay, range > .zero else { return .zero }
        let span = UInt64(range.wholeMicroseconds)
        if job.fixedRandomDelay {
            return .microseconds(Int64(stableHash(seed: seed, job.name) % span))
        }
        if derived, let occurrence {
            return .microseconds(Int64(stableHash(seed: seed, "\(job.name)@\(occurrence.microseconds)") % span))
        }
        return .microseconds(Int64(UInt64.random(in: 0..<span)))
    }

    /// The seed for `fixed_random_delay` offsets on a machine (from its /etc/machine-id).
    public static func jitterSeed(machineID: String) -> UInt64 {
        stableHash(seed: 0, machineID)
    }

    /// Stable across processes and machines (Swift's `Hasher` is seeded per process).
    static func stableHash(seed: UInt64, _ text: String) -> UInt64 {
        StableHash.of(text, seed: seed)
    }
}

/// A one-way flag shared with a shutdown handler (an `Atomic` cannot be captured by a closure).
final class StopFlag: Sendable {
    private let value = Atomic<Bool>(false)
    var isSet: Bool { value.load(ordering: .acquiring) }
    func set() { value.store(true, ordering: .releasing) }
}
