import JobRunnerConfig
import JobRunnerSchedule
import Logging
import ServiceLifecycle
import Synchronization

/// The engine's loop: it feeds the ``DispatchMachine`` the time and what happened, and carries
/// out what the machine decides — journal events, process starts and stops, claims, hooks —
/// every effect a child task of its own task group, so a drain awaits all of them.
///
/// It sleeps until the earliest fire (no polling: an idle scheduler does not wake up, except to
/// beat for systemd's watchdog). Calls from outside (a reload, a cancel, a manual run) change the
/// machine here and leave their actions to the loop, which runs them in order.
public actor Scheduler: Service {
    public typealias State = DispatchMachine.Phase
    public typealias JobState = DispatchMachine.JobState
    public typealias Summary = DispatchMachine.Summary

    /// What the scheduler keeps of a fire that the machine does not: its output and its handle.
    struct Live {
        var tail: OutputTail
        var handle: RunHandle
        var request: RunRequest?
        /// Where its fire is in the journal: its start waits until that is written.
        var fired: UInt64 = 0
    }

    var machine: DispatchMachine
    /// Actions decided outside the loop (API calls), run by the loop in order.
    var outbox: [DispatchAction] = []
    var live: [RunID: Live] = [:]
    private var lastBeat: Duration = .zero

    // MARK: Collaborators

    /// Every live and recent run.
    public nonisolated let registry: RunRegistry
    let executor: any RunExecutor
    let clock: any SchedulerClock
    let logger: Logger
    let journal: (any RunJournal)?
    let heartbeat: Heartbeat?
    let cluster: (any ClusterCoordination)?
    let onChange: @Sendable () -> Void
    let inbox = Inbox()

    /// Creates the scheduler and computes every job's first fire, so the schedule is complete
    /// before the daemon reports itself ready.
    public init(
        configuration: Configuration,
        executor: any RunExecutor,
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
        self.executor = executor
        self.registry = registry
        self.clock = clock
        self.logger = logger
        self.journal = journal
        self.heartbeat = heartbeat
        self.cluster = cluster
        self.onChange = onChange
        var machine = DispatchMachine(configuration: configuration, now: clock.now(), uptime: clock.uptime(), memories: memories,
                                      jitterSeed: jitterSeed, node: cluster?.nodeName, clusterStart: cluster?.clusterStart)
        outbox = machine.take()
        self.machine = machine
    }

    // MARK: - Service

    public func run() async {
        logger.info("scheduler started", metadata: ["jobs": .number(machine.jobStates(now: clock.now(), uptime: clock.uptime()).count)])
        await withDiscardingTaskGroup { group in
            await withTaskCancellationOrGracefulShutdownHandler {
                outbox += machine.start(now: clock.now(), uptime: clock.uptime())
                await loop(group: &group)
            } onCancelOrGracefulShutdown: { [inbox] in
                inbox.stop()
            }
            await drain(group: &group)
        }
        machine.stopped()
        onChange()
        logger.info("scheduler stopped")
    }

    private func loop(group: inout DiscardingTaskGroup) async {
        while !inbox.isStopped {
            catchUp(group: &group)
            perform(machine.tick(now: clock.now(), uptime: clock.uptime()), group: &group)
            EngineMetrics.waiting(machine.waitingCount)
            onChange()
            let beatAt = beatIfDue(.running, every: heartbeat?.interval)
            await waitForWork(until: Self.earliest(machine.nextDeadline(now: clock.now(), uptime: clock.uptime()), beatAt))
        }
    }

    /// Runs the outbox and every event that arrived, then what they led to.
    private func catchUp(group: inout DiscardingTaskGroup) {
        let queued = outbox
        outbox = []
        perform(queued, group: &group)
        for event in inbox.take() {
            perform(machine.handle(event, now: clock.now(), uptime: clock.uptime()), group: &group)
            // Logged once the record is final, so whoever reads the log line can read the run.
            if case .ended(let id, let result) = event, let record = registry.record(id) {
                var runLogger = logger
                runLogger[metadataKey: "job"] = "\(record.job)"
                runLogger[metadataKey: "run_id"] = "\(id)"
                if let pid = result.pid { runLogger[metadataKey: "pid"] = .number(pid) }
                result.log(runLogger, "run")
            }
        }
    }

    /// Stops firing, lets runs finish for `shutdown_grace`, then stops what is left with its kill
    /// sequence, and waits for every effect (runs, hooks, claims, slot releases) to end.
    private func drain(group: inout DiscardingTaskGroup) async {
        catchUp(group: &group)
        perform(machine.drain(now: clock.now()), group: &group)
        onChange()
        let graceEnd = clock.uptime() + machine.settings.shutdownGrace
        lastBeat = .zero
        var stopped = false
        // Runs still alive, or ended runs whose hooks wait for their sweep.
        while machine.runningCount > 0 || machine.hasHeldHooks {
            let timeLeft = max(.zero, graceEnd - clock.uptime()) + machine.longestRunningKillGrace + Heartbeat.drainMargin
            let beatAt = beatIfDue(.draining(runs: machine.runningCount, timeLeft: timeLeft), every: heartbeat?.drainInterval)
            if !stopped, clock.uptime() >= graceEnd {
                perform(machine.stopAll(), group: &group)
                stopped = true
            }
            let graceAt = stopped ? nil : clock.now().advanced(by: graceEnd - clock.uptime())
            await waitForWork(until: Self.earliest(graceAt, beatAt), draining: true)
            catchUp(group: &group)
            onChange()
        }
        catchUp(group: &group)
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

    /// Sleeps until `deadline`, an event or a call from outside, or a clock change, whichever is
    /// first.
    private func waitForWork(until deadline: Timestamp?, draining: Bool = false) async {
        if inbox.isEmpty && outbox.isEmpty {
            let clock = self.clock
            let inbox = self.inbox
            await withTaskGroup(of: Void.self) { sleepers in
                sleepers.addTask { _ = await clock.sleep(until: deadline) }
                sleepers.addTask { await inbox.wait(ignoringStop: draining) }
                await sleepers.next()
                sleepers.cancelAll()
            }
        }
    }

    // MARK: - Carrying out

    private func perform(_ actions: [DispatchAction], group: inout DiscardingTaskGroup) {
        for action in actions where !performNow(action) {
            performInGroup(action, group: &group)
        }
    }

    /// Carries out an action that needs no task of its own; false for those that do.
    private func performNow(_ action: DispatchAction) -> Bool {
        switch action {
        case .journal(let event):
            record(event)
        case .waitingFor(let id, let text):
            registry.update(id) { $0.waitingFor = text }
        case .stop(let id):
            live[id]?.handle.cancel()
        case .log(let level, let message, let metadata):
            logger.log(level: level, "\(message)", metadata: metadata)
        case .start, .claim, .acquireSlot, .releaseSlot, .releaseClaims, .runHook:
            return false
        }
        return true
    }

    /// Starts the child task an action needs.
    private func performInGroup(_ action: DispatchAction, group: inout DiscardingTaskGroup) {
        switch action {
        case .start(let request):
            start(request, group: &group)
        case .claim(let requests):
            claim(requests, group: &group)
        case .acquireSlot(let pool, let size, let run, let since):
            guard let cluster else { return }
            let inbox = self.inbox
            group.addTask {
                let granted = await cluster.acquireSlot(pool: pool, size: size, run: run, since: since)
                // A refused slot is asked for again half a second later.
                if !granted { try? await Pause.sleep(for: .milliseconds(500)) }
                inbox.post(.slot(run, pool: pool, granted: granted))
            }
        case .releaseSlot(let pool, let run):
            guard let cluster else { return }
            group.addTask { await cluster.releaseSlot(pool: pool, run: run) }
        case .releaseClaims(let claims):
            guard let cluster else { return }
            group.addTask { await cluster.release(claims) }
        case .runHook(let command, let kind, let request, let result):
            let executor = self.executor
            let output = registry.record(request.id)?.output?.text ?? ""
            group.addTask {
                _ = await executor.runHook(command, kind: kind, for: request, result: result, output: output)
            }
        case .journal, .waitingFor, .stop, .log:
            _ = performNow(action)
        }
    }

    /// Journals an event: the registry (what the API shows) and the history, with what only the
    /// scheduler holds (a run's output and what it reported) added to its record.
    private func record(_ event: JournalEvent) {
        switch event {
        case .fired(var record, let occurrence):
            let tail = OutputTail(capacity: machine.settings.outputTail)
            let handle = RunHandle()
            record.output = tail
            record.handle = handle
            registry.add(record)
            let place = journal?.record(.fired(record, occurrence: occurrence)) ?? 0
            live[record.id] = Live(tail: tail, handle: handle, fired: place)
        case .settled(let record, _):
            registry.recordFinished(record)
            journal?.record(event)
            EngineMetrics.runFinished(job: record.job, outcome: record.outcome ?? .interrupted, duration: nil, at: record.endedAt ?? clock.now())
        case .started(let id, let pid, let at):
            registry.update(id) { record in
                record.pid = pid > 0 ? pid : nil
                record.startedAt = at
            }
            journal?.record(event)
            if let due = live[id]?.request?.dueTime { EngineMetrics.lateness(due.duration(to: at)) }
        case .finished(var record):
            let kept = live.removeValue(forKey: record.id)
            record.output = kept?.tail
            record.statusText = kept?.handle.statusText ?? record.statusText
            let final = registry.finish(record.id, as: record) ?? record
            journal?.record(.finished(final))
            let duration = final.startedAt.flatMap { started in final.endedAt.map { started.duration(to: $0) } }
            EngineMetrics.runFinished(job: final.job, outcome: final.outcome ?? .interrupted, duration: duration,
                                      at: final.endedAt ?? clock.now(), usage: final.usage)
        case .paused, .known:
            journal?.record(event)
        }
    }

    /// Starts a run as a child task: its fire is on disk before its process exists (a crash
    /// cannot run it twice), then the executor runs it to its end. In a cluster the database
    /// also records that the run may have started, and only while this node's lease holds, so
    /// a survivor taking over this node's work never starts it a second time.
    private func start(_ request: RunRequest, group: inout DiscardingTaskGroup) {
        guard let kept = live[request.id] else { return }
        live[request.id]?.request = request
        let executor = self.executor
        let journal = self.journal
        let inbox = self.inbox
        let cluster = self.cluster
        let clock = self.clock
        let fired = kept.fired
        group.addTask {
            await journal?.flush(through: fired)
            if let cluster, case .refused = await cluster.dispatch(request.id) {
                // Not started, and not retried here: recorded first (the job's other fires wait
                // on it), then a first attempt's occurrence goes back to the cluster (unless a
                // survivor took it already), for a node whose lease holds.
                let now = clock.now()
                inbox.post(.ended(request.id, RunResult(outcome: .interrupted, startedAt: now, endedAt: now, pid: nil, exitStatus: nil)))
                inbox.post(.swept(request.id))
                if request.attempt == 1 {
                    await cluster.release([ClaimRequest(job: request.job.name, occurrence: request.scheduledTime)])
                }
                return
            }
            let result = await executor.run(request, handle: kept.handle, output: kept.tail) { pid, at in
                inbox.post(.started(request.id, pid: pid, at: at))
            }
            inbox.post(.ended(request.id, result))
            if result.pid != nil { await executor.sweepLeftovers(of: request) }
            inbox.post(.swept(request.id))
        }
    }

    /// Claims a batch of occurrences: this node's preferred ones at once, the others after the
    /// handoff (so the load spreads and a silent node's share is still claimed).
    private func claim(_ requests: [ClaimRequest], group: inout DiscardingTaskGroup) {
        guard let cluster else { return }
        let inbox = self.inbox
        let mine = requests.filter { cluster.prefers($0) }
        let others = requests.filter { !cluster.prefers($0) }
        if !mine.isEmpty {
            group.addTask { inbox.post(.claimed(mine, await cluster.claim(mine))) }
        }
        if !others.isEmpty {
            group.addTask {
                try? await Pause.sleep(for: cluster.handoff)
                inbox.post(.claimed(others, await cluster.claim(others)))
            }
        }
    }

    // MARK: - From outside

    /// Applies a new, already validated configuration (see ``DispatchMachine/apply(_:now:uptime:)``).
    public func apply(_ configuration: Configuration) -> ReloadSummary {
        let (summary, actions) = machine.apply(configuration, now: clock.now(), uptime: clock.uptime())
        for name in summary.removed { EngineMetrics.forget(job: name) }
        enqueue(actions)
        return summary
    }

    /// Cancels one run: a live one with its job's kill sequence, a waiting one at once. Pending
    /// retries of the same fire stop too.
    public func cancel(run id: RunID) -> CancelResult {
        let finished = registry.record(id).flatMap { $0.outcome == nil ? nil : $0 }
        let (result, actions) = machine.cancel(run: id, finished: finished, now: clock.now())
        enqueue(actions)
        switch result {
        case .stopping(let record), .dropped(let record):
            return registry.record(record.id).map { record.outcome == nil ? .stopping($0) : .dropped($0) } ?? result
        default:
            return result
        }
    }

    /// Cancels every live or waiting run of a job; returns their ids.
    public func cancel(job name: String) -> [RunID] {
        let ids = machine.activeRuns(ofJob: name)
        for id in ids { _ = cancel(run: id) }
        return ids
    }

    /// Fires a job now, as if its schedule said so (overlap policy and limits apply). Returns
    /// the run's record, or nil when there is no such job.
    public func runNow(job name: String, id: RunID? = nil) -> RunRecord? {
        let (record, actions) = machine.runNow(job: name, id: id, now: clock.now())
        enqueue(actions)
        return record.flatMap { registry.record($0.id) } ?? record
    }

    /// Pauses a job: its fires are recorded as skipped until it is resumed (kept across
    /// restarts). Returns false when there is no such job.
    public func pause(job name: String) -> Bool {
        setPaused(name, true)
    }

    /// Resumes a paused job. Returns false when there is no such job.
    public func resume(job name: String) -> Bool {
        setPaused(name, false)
    }

    private func setPaused(_ name: String, _ paused: Bool, remote: Bool = false) -> Bool {
        let (found, actions) = machine.setPaused(job: name, paused, remote: remote)
        enqueue(actions)
        return found
    }

    /// Applies a pause or resume made on another node (already stored there).
    public func applyRemotePause(job name: String, _ isPaused: Bool) {
        _ = setPaused(name, isPaused, remote: true)
    }

    /// Whether the engine takes new work (not starting, draining or stopped): a cluster node
    /// that drains takes nothing over.
    public var isRunning: Bool { machine.phase == .running }

    /// Whether a job is paused.
    public func isPaused(_ name: String) -> Bool {
        machine.isPaused(name)
    }

    /// This node lost its cluster lease: every run stops with its kill sequence and whatever
    /// waits is dropped, all recorded as `interrupted`.
    public func standDown(reason: String) {
        enqueue(machine.standDown(reason: reason, now: clock.now()))
    }

    /// Takes over the unfinished runs of a node declared dead; returns how many this node holds.
    @discardableResult
    public func takeOver(_ orphans: [OrphanedRun]) -> Int {
        let (taken, actions) = machine.takeOver(orphans, now: clock.now(), uptime: clock.uptime())
        enqueue(actions)
        return taken
    }

    /// How many runs this node has alive (for its heartbeat row).
    public var liveRunCount: Int { machine.runningCount }

    /// Carries out at once what needs no task (the registry then shows a new record the moment
    /// the call returns); the rest waits for the loop, in order.
    private func enqueue(_ actions: [DispatchAction]) {
        for action in actions where !performNow(action) {
            outbox.append(action)
        }
        if !outbox.isEmpty { inbox.ring() }
        onChange()
    }

    // MARK: - Snapshots

    /// Every job in file order with its next fire.
    public func jobStates() -> [JobState] {
        machine.jobStates(now: clock.now(), uptime: clock.uptime())
    }

    /// One job's state, or nil when there is no such job.
    public func jobState(_ name: String) -> JobState? {
        machine.jobState(name, now: clock.now(), uptime: clock.uptime())
    }

    /// Every job's next fire and live runs, for the metrics scrape.
    public func jobGauges() -> [(job: String, nextFire: Timestamp?, running: Int)] {
        machine.jobGauges(now: clock.now(), uptime: clock.uptime())
    }

    /// A summary for status lines and `GET /v1/status`.
    public func summary() -> Summary {
        machine.summary(now: clock.now(), uptime: clock.uptime())
    }

    /// The next `count` fire times of a job (nil when there is no such job).
    public func upcoming(job name: String, count: Int) -> [Timestamp]? {
        machine.upcoming(job: name, count: count, now: clock.now(), uptime: clock.uptime())
    }

    /// The random delay of one fire (see ``DispatchMachine/randomDelay(for:occurrence:seed:derived:)``).
    public static func delay(for job: JobDefinition, occurrence: Timestamp?, seed: UInt64, derived: Bool = false) -> Duration {
        DispatchMachine.randomDelay(for: job, occurrence: occurrence, seed: seed, derived: derived)
    }

    /// The seed for `fixed_random_delay` offsets on a machine (from its /etc/machine-id).
    public static func jitterSeed(machineID: String) -> UInt64 {
        DispatchMachine.jitterSeed(machineID: machineID)
    }
}
