import JobRunnerConfig
import JobRunnerSchedule
import Logging
import ServiceLifecycle
import Synchronization

/// The engine's heart: knows every job's next fire, sleeps until the earliest one (no polling:
/// an idle scheduler does not wake up), and starts each fire as a child task of its task group,
/// within the concurrency limit and the overlap rule.
///
/// Reloads are applied by job name (see `Scheduler+Reload.swift`); a graceful shutdown stops
/// firing, lets running runs finish for `shutdown_grace`, then cancels them, which tears each
/// down with its kill sequence.
public actor Scheduler: Service {
    /// The lifecycle of the scheduler.
    public enum State: String, Sendable {
        case starting, running, draining, stopped
    }

    enum Due: Sendable, Hashable {
        /// A wall-clock instant (cron schedules).
        case wall(Timestamp)
        /// An uptime instant (intervals: immune to wall-clock steps).
        case uptime(Duration)
    }

    struct Entry: Sendable {
        var job: JobDefinition
        var due: Due?
    }

    struct Pending: Sendable {
        var request: RunRequest
        var tail: OutputTail
    }

    // MARK: State

    var entries: [String: Entry] = [:]
    var order: [String] = []
    var waiting: [Pending] = []
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
    private var startupJobs: [String] = []

    /// Creates the scheduler and computes every job's first fire, so the schedule is complete
    /// before the daemon reports itself ready.
    public init(
        configuration: Configuration,
        supervisor: Supervisor,
        registry: RunRegistry,
        clock: any SchedulerClock,
        logger: Logger,
        onChange: @escaping @Sendable () -> Void = {}
    ) {
        self.settings = configuration.daemon
        self.supervisor = supervisor
        self.registry = registry
        self.clock = clock
        self.logger = logger
        self.onChange = onChange
        let now = clock.now()
        let uptime = clock.uptime()
        for job in configuration.jobs {
            entries[job.name] = Entry(job: job, due: Self.firstDue(of: job, now: now, uptime: uptime))
            order.append(job.name)
            if job.enabled, job.trigger == .reboot { startupJobs.append(job.name) }
        }
    }

    // MARK: - Service

    public func run() async {
        state = .running
        logger.info("scheduler started", metadata: ["jobs": "\(entries.count)"])
        await withDiscardingTaskGroup { group in
            await withTaskCancellationOrGracefulShutdownHandler {
                for name in startupJobs {
                    if let entry = entries[name] {
                        fire(entry.job, scheduledTime: clock.now(), trigger: .startup, group: &group)
                    }
                }
                startupJobs = []
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
            fireDue(group: &group)
            startWaiting(group: &group)
            onChange()
            let deadline = nextDeadline()
            _ = await waitForWork(until: deadline)
        }
    }

    /// Stops firing, lets runs finish for `shutdown_grace`, then cancels what is left.
    private func drain(group: inout DiscardingTaskGroup) async {
        state = .draining
        let now = clock.now()
        for pending in waiting {
            registry.finish(pending.request.id, outcome: .cancelled, at: now)
        }
        waiting.removeAll()
        let graceEnd = clock.uptime() + settings.shutdownGrace
        if runningCount > 0 {
            logger.notice("stopping: waiting for running runs", metadata: [
                "running": "\(runningCount)", "shutdown_grace": "\(DurationText.format(settings.shutdownGrace))",
            ])
        }
        onChange()
        while runningCount > 0 {
            let remaining = clock.uptime() - graceEnd
            if remaining >= .zero {
                logger.warning("shutdown_grace over, tearing down running runs", metadata: ["running": "\(runningCount)"])
                group.cancelAll()
                return
            }
            _ = await waitForWork(until: clock.now().advanced(by: graceEnd - clock.uptime()))
            onChange()
        }
    }

    // MARK: - Firing

    /// Fires every entry whose time has come. When several occurrences of one job are due at
    /// once (the clock jumped, or the machine slept), they are coalesced into one run for the
    /// latest, and the missed ones are logged.
    private func fireDue(group: inout DiscardingTaskGroup) {
        let now = clock.now()
        let uptime = clock.uptime()
        for name in order {
            guard var entry = entries[name], let due = entry.due else { continue }
            switch due {
            case .wall(let instant) where instant <= now:
                guard case .cron(let expression) = entry.job.trigger else { continue }
                var occurrence = instant
                var missed = 0
                var next = expression.next(after: occurrence, in: entry.job.timeZone)
                while let candidate = next, candidate <= now {
                    missed += 1
                    occurrence = candidate
                    if missed >= 10_000 {
                        next = expression.next(after: now, in: entry.job.timeZone)
                        break
                    }
                    next = expression.next(after: candidate, in: entry.job.timeZone)
                }
                if missed > 0 {
                    logger.warning("missed occurrences (clock jump or suspend); running the latest once", metadata: [
                        "job": "\(name)", "missed": "\(missed)", "first_missed": "\(instant)",
                    ])
                }
                entry.due = next.map { .wall($0) }
                entries[name] = entry
                fire(entry.job, scheduledTime: occurrence, trigger: .schedule, group: &group)
            case .uptime(let dueUptime) where dueUptime <= uptime:
                guard case .interval(let interval) = entry.job.trigger else { continue }
                var nextUptime = dueUptime + interval
                var missed = 0
                if nextUptime <= uptime {
                    let behind = (uptime - dueUptime).wholeMicroseconds / interval.wholeMicroseconds
                    missed = Int(behind)
                    nextUptime = dueUptime + interval * Int(behind + 1)
                }
                if missed > 0 {
                    logger.warning("missed interval fires (suspend or overload); running once", metadata: [
                        "job": "\(name)", "missed": "\(missed)",
                    ])
                }
                entry.due = .uptime(nextUptime)
                entries[name] = entry
                let scheduled = now.advanced(by: dueUptime - uptime)
                fire(entry.job, scheduledTime: scheduled, trigger: .schedule, group: &group)
            default:
                continue
            }
        }
    }

    /// Records a fire: skipped if the job's previous run is still alive, else queued for a slot.
    @discardableResult
    func fire(_ job: JobDefinition, scheduledTime: Timestamp, trigger: RunTrigger, group: inout DiscardingTaskGroup) -> RunRecord {
        let now = clock.now()
        let id = ids.next(at: now)
        var record = RunRecord(id: id, job: job.name, trigger: trigger, scheduledTime: scheduledTime, queuedAt: now)
        if !registry.active(job: job.name).isEmpty {
            record.outcome = .skipped(reason: "previous run still running")
            record.endedAt = now
            registry.recordFinished(record)
            logger.notice("fire skipped: previous run still running", metadata: ["job": "\(job.name)", "run_id": "\(id)"])
            return record
        }
        let tail = OutputTail(capacity: RunOutput.defaultTailCapacity)
        record.output = tail
        registry.add(record)
        waiting.append(Pending(request: RunRequest(id: id, job: job, scheduledTime: scheduledTime), tail: tail))
        startWaiting(group: &group)
        return record
    }

    /// Starts waiting fires, in fire order, while there is room under `max_concurrent_runs`.
    private func startWaiting(group: inout DiscardingTaskGroup) {
        while !waiting.isEmpty, runningCount < settings.maxConcurrentRuns, state == .running {
            let pending = waiting.removeFirst()
            runningCount += 1
            let supervisor = self.supervisor
            let registry = self.registry
            let onChange = self.onChange
            group.addTask {
                let id = pending.request.id
                let result = await supervisor.run(pending.request, output: pending.tail, onStarted: { pid, startedAt in
                    registry.update(id) { record in
                        record.pid = pid
                        record.startedAt = startedAt
                    }
                    onChange()
                })
                registry.update(id) { record in
                    if record.startedAt == nil { record.startedAt = result.startedAt }
                }
                registry.finish(id, outcome: result.outcome, at: result.endedAt)
                await self.runEnded()
            }
        }
    }

    private func runEnded() {
        runningCount -= 1
        doorbell.ring()
    }

    // MARK: - Waiting

    /// The wall-clock instant of the earliest due entry (intervals converted from uptime).
    func nextDeadline() -> Timestamp? {
        let now = clock.now()
        let uptime = clock.uptime()
        var earliest: Timestamp?
        for entry in entries.values {
            guard let due = entry.due else { continue }
            let instant: Timestamp
            switch due {
            case .wall(let wall): instant = wall
            case .uptime(let dueUptime): instant = now.advanced(by: dueUptime - uptime)
            }
            if earliest == nil || instant < earliest! { earliest = instant }
        }
        return earliest
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
    static func firstDue(of job: JobDefinition, now: Timestamp, uptime: Duration) -> Due? {
        guard job.enabled, let trigger = job.trigger else { return nil }
        switch trigger {
        case .cron(let expression):
            return expression.next(after: now, in: job.timeZone).map { .wall($0) }
        case .interval(let interval):
            return .uptime(uptime + interval)
        case .reboot:
            return nil
        }
    }
}

/// A one-way flag shared with a shutdown handler (an `Atomic` cannot be captured by a closure).
final class StopFlag: Sendable {
    private let value = Atomic<Bool>(false)
    var isSet: Bool { value.load(ordering: .acquiring) }
    func set() { value.store(true, ordering: .releasing) }
}
