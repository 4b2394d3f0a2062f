import JobRunnerConfig
import JobRunnerSchedule
import Logging

/// One run to execute.
public struct RunRequest: Sendable {
    public var id: RunID
    public var job: JobDefinition
    public var scheduledTime: Timestamp
    public var attempt: Int
    /// Every attempt of one fire shares its id (the first attempt's run id).
    public var fireID: RunID
    /// When the run was due to start (the occurrence plus any random delay): lateness is
    /// measured from here.
    public var dueTime: Timestamp
    /// A fire triggered by another (`after:`): `job/run id` of the run whose end fired it (given
    /// to the run as `JOBRUNNER_TRIGGERED_BY`).
    public var triggeredBy: String?

    public init(id: RunID, job: JobDefinition, scheduledTime: Timestamp, attempt: Int = 1, fireID: RunID? = nil, dueTime: Timestamp? = nil,
                triggeredBy: String? = nil) {
        self.triggeredBy = triggeredBy
        self.id = id
        self.job = job
        self.scheduledTime = scheduledTime
        self.attempt = attempt
        self.fireID = fireID ?? id
        self.dueTime = dueTime ?? scheduledTime
    }
}

/// What happened to a run.
public struct RunResult: Sendable {
    public var outcome: RunOutcome
    public var startedAt: Timestamp
    public var endedAt: Timestamp
    public var pid: Int32?
    /// How the process ended, when it started.
    public var exitStatus: ExitStatus?
    /// What the process cost, once it was reaped.
    public var usage: ResourceUsage?
    /// How each step ended, in tree order (empty for a run of one command).
    public var steps: [StepResult]
    /// An HTTP answer's `Retry-After`: when a retry may come (within `max_backoff`).
    public var retryAfter: Duration?

    public init(outcome: RunOutcome, startedAt: Timestamp, endedAt: Timestamp, pid: Int32?, exitStatus: ExitStatus?,
                usage: ResourceUsage? = nil, steps: [StepResult] = []) {
        self.steps = steps
        self.outcome = outcome
        self.startedAt = startedAt
        self.endedAt = endedAt
        self.pid = pid
        self.exitStatus = exitStatus
        self.usage = usage
    }

    /// Logs the end of a run: notice for a success (so `--log-level notice` shows the lifecycle
    /// without job output), warning otherwise. It carries the exit code or signal and what the
    /// run cost.
    public func log(_ logger: Logger, _ what: String) {
        var metadata: Logger.Metadata = ["outcome": "\(outcome.name)", "duration": .seconds(startedAt.duration(to: endedAt))]
        switch exitStatus {
        case .exited(let code)?: metadata["exit_code"] = .number(code)
        case .signalled(let signal, _)?: metadata["signal"] = "\(signalName(signal))"
        case nil: break
        }
        if let usage {
            metadata["cpu_user"] = .seconds(.microseconds(usage.userMicroseconds))
            metadata["cpu_system"] = .seconds(.microseconds(usage.systemMicroseconds))
            if let peak = usage.maxResidentBytes { metadata["max_rss_bytes"] = .number(peak) }
            if let bound = usage.maxResidentBound { metadata["max_rss_at_most_bytes"] = .number(bound) }
        }
        if let failures = steps.failureSummary { metadata["failures"] = "\(failures)" }
        if outcome == .succeeded {
            logger.notice("\(what) finished", metadata: metadata)
        } else {
            if let detail = outcome.detail, exitStatus == nil { metadata["detail"] = "\(detail)" }
            logger.warning("\(what) finished", metadata: metadata)
        }
    }
}
