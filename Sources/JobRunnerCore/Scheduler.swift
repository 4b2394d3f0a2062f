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
    /// Seeds `fixed_random_delay` offsets, so they are stable for a machine (its machine id).
    let jitterSeed: UInt64
    private var startupJobs: [String] = []

    /// Creates the scheduler and computes every job's first fire, so the schedule is complete
    /// before the daemon reports itself ready.
    public init(
        configuration: Configuration,
        supervisor: Supervisor,
        registry: RunRegistry,
        clock: any SchedulerClock,
        logger: Logger,
        jitterSeed: UInt64 = 0,
        onChange: @escaping @Sendable () -> Void = {}
    ) {
        self.jitterSeed = jitterSeed
        self.settings = configuration.daemon
        self.supervisor = supervisor
        self.registry = registry
        self.clock = clock
        self.logger = logger
        self.onChange = onChange
        let now = clock.now()
        let uptime = clock.uptime()
        for job in configuration.jobs {
            entries[job.name] = Entry(job: job, due: Self.firstDue(of: job, now: now, uptime: uptime, seed: jitterSeed))
            order.append(job.name)
            if job.enabled, job.trigger == .reboot || job.runOnStart { startupJobs.append(job.name) }
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
            let job = entry.job
            switch due {
            case .wall(let first, let delay) where first.advanced(by: delay) <= now:
                guard let trigger = job.trigger else { continue }
                var occurrence = first
                var missed = 0
                var next = trigger.nextOccurrence(after: occurrence, in: job.timeZone)
                while let candidate = next, candidate.advanced(by: delay) <= now {
                    missed += 1
                    occurrence = candidate
                    if missed >= 10_000 {
                        next = trigger.nextOccurrence(after: now, in: job.timeZone)
                        break
                    }
                    next = trigger.nextOccurrence(after: candidate, in: job.timeZone)
                }
                if missed > 0 {
                    logger.warning("missed occurrences (clock jump or suspend); running the latest once", metadata: [
                        "job": "\(name)", "missed": "\(missed)", "first_missed": "\(first)",
                    ])
                }
                entry.due = next.map { .wall(occurrence: $0, delay: Self.delay(for: job, occurrence: $0, seed: jitterSeed)) }
                entries[name] = entry
                fire(job, scheduledTime: occurrence, trigger: .schedule, group: &group)
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
                fire(job, scheduledTime: now.advanced(by: occurrence - uptime), trigger: .schedule, group: &group)
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
            guard let instant = Self.fireInstant(entry.due, now: now, uptime: uptime) else { continue }
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
    static func firstDue(of job: JobDefinition, now: Timestamp, uptime: Duration, seed: UInt64) -> Due? {
        guard job.enabled, let trigger = job.trigger else { return nil }
        switch trigger {
        case .cron, .calendar:
            return trigger.nextOccurrence(after: now, in: job.timeZone).map {
                .wall(occurrence: $0, delay: delay(for: job, occurrence: $0, seed: seed))
            }
        case .interval(let interval):
            return .uptime(occurrence: uptime + interval, delay: delay(for: job, occurrence: nil, seed: seed))
        case .reboot:
            return nil
        }
    }

    /// The random delay of one fire: fresh and uniform in [0, random_delay), or with
    /// `fixed_random_delay` one stable offset per job and machine (like systemd's
    /// FixedRandomDelay).
    public static func delay(for job: JobDefinition, occurrence: Timestamp?, seed: UInt64) -> Duration {
        guard let range = job.randomDelay, range > .zero else { return .zero }
        let span = UInt64(range.wholeMicroseconds)
        if job.fixedRandomDelay {
            return .microseconds(Int64(stableHash(seed: seed, job.name) % span))
        }
        return .microseconds(Int64(UInt64.random(in: 0..<span)))
    }

    /// The seed for `fixed_random_delay` offsets on a machine (from its /etc/machine-id).
    public static func jitterSeed(machineID: String) -> UInt64 {
        stableHash(seed: 0, machineID)
    }

    /// FNV-1a: stable across processes (Swift's `Hasher` is seeded per process).
    static func stableHash(seed: UInt64, _ text: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325 ^ seed
        for byte in text.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x100_0000_01b3
        }
        // Final avalanche so nearby names spread over the whole range.
        hash ^= hash >> 33
        hash = hash &* 0xff51_afd7_ed55_8ccd
        hash ^= hash >> 33
        return hash
    }
}

/// A one-way flag shared with a shutdown handler (an `Atomic` cannot be captured by a closure).
final class StopFlag: Sendable {
    private let value = Atomic<Bool>(false)
    var isSet: Bool { value.load(ordering: .acquiring) }
    func set() { value.store(true, ordering: .releasing) }
}
