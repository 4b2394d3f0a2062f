import JobRunnerSchedule

/// Why a run exists.
public enum RunTrigger: String, Sendable, Hashable, Codable {
    /// Its job's schedule came due.
    case schedule
    /// Someone asked for it (API or CLI).
    case manual
    /// `@reboot` or `run_on_start`: once when the daemon started.
    case startup
    /// An occurrence missed while the daemon was down, run by the job's `catch_up` policy.
    case catchUp = "catch_up"
    /// A fire of a job it follows (`after:`) reached its final outcome.
    case after
}

/// Where a run is in its life.
public enum RunPhase: String, Sendable, Hashable, Codable {
    /// Due, waiting for a free slot under the concurrency limits.
    case waiting
    /// Its process is alive.
    case running
    /// Ended (see its outcome).
    case finished
}

/// Everything known about one run: what it is, when it happened, how it ended.
public struct RunRecord: Sendable, Identifiable {
    public var id: RunID
    public var job: String
    public var trigger: RunTrigger
    /// The occurrence this run serves (for scheduled runs), or when it was asked for.
    public var scheduledTime: Timestamp
    public var attempt: Int
    /// Shared by every attempt of one fire (the first attempt's id).
    public var fireID: RunID
    public var queuedAt: Timestamp
    /// While waiting: what for (a free slot, a pool, the previous run, a retry's backoff).
    public var waitingFor: String?
    public var startedAt: Timestamp?
    public var endedAt: Timestamp?
    public var pid: Int32?
    public var outcome: RunOutcome?
    /// The last lines of output (bounded).
    public var output: OutputTail?
    /// The live run's handle (its notify messages); nil once finished.
    public var handle: RunHandle?
    /// The last `STATUS=` the run sent.
    public var statusText: String?
    /// The cluster node that ran it (nil without a cluster).
    public var node: String?
    /// What the run's processes cost (nil for a run that did not start, and in older history).
    public var usage: ResourceUsage?
    /// How each step ended, in tree order (empty for a run of one command).
    public var steps: [StepResult] = []
    /// A fire triggered by another (`after:`): `job/run id` of the run whose end fired it.
    public var triggeredBy: String?

    public init(id: RunID, job: String, trigger: RunTrigger, scheduledTime: Timestamp, attempt: Int = 1, fireID: RunID? = nil,
                queuedAt: Timestamp) {
        self.id = id
        self.job = job
        self.trigger = trigger
        self.scheduledTime = scheduledTime
        self.attempt = attempt
        self.fireID = fireID ?? id
        self.queuedAt = queuedAt
    }

    /// The run's progress text: live from its handle, or as it last was.
    public var progress: String? { handle?.statusText ?? statusText }

    public var phase: RunPhase {
        if outcome != nil { return .finished }
        return startedAt == nil ? .waiting : .running
    }

    /// How long the run has taken (so far, when `now` is given for a live run).
    public func duration(now: Timestamp? = nil) -> Duration? {
        guard let startedAt else { return nil }
        guard let end = endedAt ?? now else { return nil }
        return startedAt.duration(to: end)
    }
}
