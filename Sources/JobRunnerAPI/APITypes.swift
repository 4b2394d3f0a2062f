/// The JSON shapes of the control API (`/v1/…`). Fields are snake_case on the wire (the
/// encoder converts), times are RFC 3339 UTC strings, durations are seconds.

/// The version of jobrunner: what `/v1/status` reports and both binaries print for `--version`.
public enum JobRunnerVersion {
    public static let string = "0.1.0"
}

/// `GET /v1/status`.
public struct StatusResponse: Codable, Sendable, Equatable {
    public var version: String
    public var pid: Int32
    public var startedAt: String
    public var uptimeSeconds: Double
    /// `starting`, `running`, `draining` or `stopped`.
    public var state: String
    public var config: ConfigStatus
    public var jobs: Int
    public var running: Int
    public var waiting: Int
    public var nextFire: NextFire?
    /// Finished runs since start, per outcome.
    public var runTotals: [String: Int]
    /// Why history writes are failing (disk full, read-only), when they are.
    public var historyError: String?
    /// The cluster, when the daemon is a node of one.
    public var cluster: ClusterStatus?

    public init(version: String, pid: Int32, startedAt: String, uptimeSeconds: Double, state: String, config: ConfigStatus,
                jobs: Int, running: Int, waiting: Int, nextFire: NextFire?, runTotals: [String: Int], historyError: String? = nil) {
        self.historyError = historyError
        self.version = version
        self.pid = pid
        self.startedAt = startedAt
        self.uptimeSeconds = uptimeSeconds
        self.state = state
        self.config = config
        self.jobs = jobs
        self.running = running
        self.waiting = waiting
        self.nextFire = nextFire
        self.runTotals = runTotals
    }

    enum CodingKeys: String, CodingKey {
        case version
        case pid
        case startedAt = "started_at"
        case uptimeSeconds = "uptime_seconds"
        case state
        case config
        case jobs
        case running
        case waiting
        case nextFire = "next_fire"
        case runTotals = "run_totals"
        case historyError = "history_error"
        case cluster
    }
}

/// The cluster as one node sees it.
public struct ClusterStatus: Codable, Sendable, Equatable {
    /// The node answering.
    public var node: String
    /// The database, without its password.
    public var database: String
    public var leaseSeconds: Double
    /// Every node the cluster knows (alive, dead or left), by name.
    public var nodes: [ClusterNodeInfo]
    /// Why the node list could not be read, when it could not.
    public var error: String?

    public init(node: String, database: String, leaseSeconds: Double, nodes: [ClusterNodeInfo], error: String? = nil) {
        self.node = node
        self.database = database
        self.leaseSeconds = leaseSeconds
        self.nodes = nodes
        self.error = error
    }

    enum CodingKeys: String, CodingKey {
        case node, database, nodes, error
        case leaseSeconds = "lease_seconds"
    }
}

/// One node of a cluster.
public struct ClusterNodeInfo: Codable, Sendable, Equatable {
    public var name: String
    /// `alive`, `dead` (declared by a survivor) or `left` (stopped cleanly).
    public var state: String
    public var pid: Int64
    public var version: String
    public var startedAt: String
    public var lastHeartbeat: String
    /// Seconds since its last heartbeat (on the database's clock).
    public var heartbeatAgeSeconds: Double
    public var running: Int
    /// A fingerprint of the node's configuration files.
    public var configHash: String
    /// True when it differs from the answering node's.
    public var configDiffers: Bool

    public init(name: String, state: String, pid: Int64, version: String, startedAt: String, lastHeartbeat: String,
                heartbeatAgeSeconds: Double, running: Int, configHash: String, configDiffers: Bool) {
        self.name = name
        self.state = state
        self.pid = pid
        self.version = version
        self.startedAt = startedAt
        self.lastHeartbeat = lastHeartbeat
        self.heartbeatAgeSeconds = heartbeatAgeSeconds
        self.running = running
        self.configHash = configHash
        self.configDiffers = configDiffers
    }

    enum CodingKeys: String, CodingKey {
        case name, state, pid, version, running
        case startedAt = "started_at"
        case lastHeartbeat = "last_heartbeat"
        case heartbeatAgeSeconds = "heartbeat_age_seconds"
        case configHash = "config_hash"
        case configDiffers = "config_differs"
    }
}

/// Which configuration is in force and how the last reload went.
public struct ConfigStatus: Codable, Sendable, Equatable {
    public var path: String
    /// Counts successful loads: 1 at start, +1 per successful reload.
    public var generation: Int
    public var lastReload: ReloadResult?

    public init(path: String, generation: Int, lastReload: ReloadResult?) {
        self.path = path
        self.generation = generation
        self.lastReload = lastReload
    }

    enum CodingKeys: String, CodingKey {
        case path
        case generation
        case lastReload = "last_reload"
    }
}

/// The result of one reload: what changed, or why nothing did.
public struct ReloadResult: Codable, Sendable, Equatable {
    public var at: String
    /// `ok` or `failed`.
    public var result: String
    public var generation: Int
    public var added: [String]
    public var changed: [String]
    public var removed: [String]
    /// `file:line:column: message` for each problem of a failed reload.
    public var errors: [String]

    public init(at: String, result: String, generation: Int, added: [String] = [], changed: [String] = [],
                removed: [String] = [], errors: [String] = []) {
        self.at = at
        self.result = result
        self.generation = generation
        self.added = added
        self.changed = changed
        self.removed = removed
        self.errors = errors
    }
}

/// The next automatic fire of any job.
public struct NextFire: Codable, Sendable, Equatable {
    public var job: String
    public var at: String

    public init(job: String, at: String) {
        self.job = job
        self.at = at
    }
}

/// `GET /v1/jobs`.
public struct JobsResponse: Codable, Sendable, Equatable {
    public var jobs: [JobInfo]

    public init(jobs: [JobInfo]) {
        self.jobs = jobs
    }
}

/// One job: its definition in brief, its state, its next fire, its latest runs.
public struct JobInfo: Codable, Sendable, Equatable {
    public var name: String
    /// The argv, for `command:` jobs.
    public var command: [String]?
    /// The command line, for `shell:` jobs.
    public var shell: String?
    /// The schedule as written in normal form (`*/15 * * * *`, `every 30s`, `@reboot`), or nil
    /// for a job that runs only on request.
    public var schedule: String?
    public var timeZone: String
    public var timeoutSeconds: Double?
    public var killGraceSeconds: Double
    public var workingDirectory: String?
    /// Names of the variables set for the job (values are not shown: they may be secrets).
    public var environment: [String]
    /// `enabled`, `paused` or `disabled`.
    public var state: String
    public var nextFire: String?
    /// `file:line` where the job is defined.
    public var source: String
    public var lastRun: RunInfo?
    public var active: [RunInfo]
    /// The rest of the definition, for `jobrunnerctl show` (absent from older daemons).
    public var policies: JobPolicies?
    /// For a job made of steps: its steps in tree order (a group's steps follow it, one deeper).
    public var steps: [JobStepInfo]?
    /// For an http job: `METHOD url` (header values are never shown).
    public var http: String?
    /// The jobs whose final outcomes fire this one (`after:`), as `job outcome`
    /// (`build succeeded`, `test any`).
    public var after: [String]?

    public init(name: String, command: [String]?, shell: String?, schedule: String?, timeZone: String, timeoutSeconds: Double?,
                killGraceSeconds: Double, workingDirectory: String?, environment: [String], state: String, nextFire: String?,
                source: String, lastRun: RunInfo?, active: [RunInfo], policies: JobPolicies? = nil, steps: [JobStepInfo]? = nil,
                after: [String]? = nil, http: String? = nil) {
        self.http = http
        self.after = after
        self.steps = steps
        self.policies = policies
        self.name = name
        self.command = command
        self.shell = shell
        self.schedule = schedule
        self.timeZone = timeZone
        self.timeoutSeconds = timeoutSeconds
        self.killGraceSeconds = killGraceSeconds
        self.workingDirectory = workingDirectory
        self.environment = environment
        self.state = state
        self.nextFire = nextFire
        self.source = source
        self.lastRun = lastRun
        self.active = active
    }

    enum CodingKeys: String, CodingKey {
        case name
        case command
        case shell
        case schedule
        case timeZone = "time_zone"
        case timeoutSeconds = "timeout_seconds"
        case killGraceSeconds = "kill_grace_seconds"
        case workingDirectory = "working_directory"
        case environment
        case state
        case nextFire = "next_fire"
        case source
        case lastRun = "last_run"
        case active
        case policies
        case steps
        case after
        case http
    }
}

/// How a job runs beyond its command and schedule.
public struct JobPolicies: Codable, Sendable, Equatable {
    /// The user it runs as (absent: the daemon's).
    public var user: String?
    /// `skip`, `queue (max N)`, `replace` or `allow (max N)`.
    public var overlap: String
    public var pool: String?
    public var retry: RetryInfo?
    public var randomDelaySeconds: Double?
    public var runOnStart: Bool
    /// `none`, `once` or `all`.
    public var catchUp: String
    /// `on_success` and `on_failure` hooks, as command lines.
    public var onSuccess: String?
    public var onFailure: String?
    /// Resource limits by their config name (`open_files`, `processes`, …).
    public var limits: [String: UInt64]
    public var umask: String?
    public var nice: Int?

    public init(user: String?, overlap: String, pool: String?, retry: RetryInfo?, randomDelaySeconds: Double?, runOnStart: Bool,
                catchUp: String, onSuccess: String?, onFailure: String?, limits: [String: UInt64], umask: String?, nice: Int?) {
        self.user = user
        self.overlap = overlap
        self.pool = pool
        self.retry = retry
        self.randomDelaySeconds = randomDelaySeconds
        self.runOnStart = runOnStart
        self.catchUp = catchUp
        self.onSuccess = onSuccess
        self.onFailure = onFailure
        self.limits = limits
        self.umask = umask
        self.nice = nice
    }

    enum CodingKeys: String, CodingKey {
        case user, overlap, pool, retry, limits, umask, nice
        case randomDelaySeconds = "random_delay_seconds"
        case runOnStart = "run_on_start"
        case catchUp = "catch_up"
        case onSuccess = "on_success"
        case onFailure = "on_failure"
    }
}

/// A job's retry policy.
public struct RetryInfo: Codable, Sendable, Equatable {
    public var attempts: Int
    public var backoffSeconds: Double
    public var maxBackoffSeconds: Double
    /// `failure`, `timeout`, `signal`.
    public var on: [String]

    public init(attempts: Int, backoffSeconds: Double, maxBackoffSeconds: Double, on: [String]) {
        self.attempts = attempts
        self.backoffSeconds = backoffSeconds
        self.maxBackoffSeconds = maxBackoffSeconds
        self.on = on
    }

    enum CodingKeys: String, CodingKey {
        case attempts, on
        case backoffSeconds = "backoff_seconds"
        case maxBackoffSeconds = "max_backoff_seconds"
    }
}

/// One run.
public struct RunInfo: Codable, Sendable, Equatable {
    public var id: String
    public var job: String
    /// `schedule`, `manual`, `startup`, `catch_up` or `after`.
    public var trigger: String
    public var attempt: Int
    /// Shared by every attempt of one fire.
    public var fireId: String
    /// `waiting`, `running` or `finished`.
    public var state: String
    public var scheduledTime: String
    public var queuedAt: String
    public var startedAt: String?
    public var endedAt: String?
    public var durationSeconds: Double?
    public var pid: Int32?
    /// `succeeded`, `failed`, `signalled`, `timed_out`, `cancelled`, `spawn_failed`, `skipped`,
    /// `interrupted`; nil while the run is live.
    public var outcome: String?
    public var exitCode: Int32?
    public var signal: Int32?
    /// The reason of a skip or a spawn failure, or a readable exit description.
    public var detail: String?
    /// The run's own progress text (`STATUS=` on its notify socket).
    public var statusText: String?
    /// While waiting: what for.
    public var waitingFor: String?
    /// The cluster node that holds (or held) the run; absent without a cluster.
    public var node: String?
    /// What the finished run's process tree cost (`wait4`'s accounting): CPU seconds in user
    /// and kernel mode, and the peak resident memory of its largest process. Absent for a run
    /// that did not start or is still running.
    public var cpuUserSeconds: Double?
    public var cpuSystemSeconds: Double?
    public var maxRssBytes: Int64?
    /// When the kernel's peak cannot be told from the daemon's own memory (a process the daemon
    /// starts shares it until it executes the job): what the run's peak was at most.
    public var maxRssAtMostBytes: Int64?
    /// A run made of steps: how each step ended, in tree order.
    public var steps: [StepInfo]?
    /// A run made of steps: every failure of its steps, for a person (`upload-a exit 3; upload-b cancelled`).
    public var failures: String?
    /// Trigger `after`: `job/run id` of the run whose end fired this one.
    public var triggeredBy: String?
    /// Outcome `http_status`: the status the request got.
    public var httpStatus: Int?

    public init(id: String, job: String, trigger: String, attempt: Int, fireId: String, state: String, scheduledTime: String,
                queuedAt: String, startedAt: String?, endedAt: String?, durationSeconds: Double?, pid: Int32?, outcome: String?,
                exitCode: Int32?, signal: Int32?, detail: String?, statusText: String?, waitingFor: String?, node: String? = nil,
                cpuUserSeconds: Double? = nil, cpuSystemSeconds: Double? = nil, maxRssBytes: Int64? = nil,
                maxRssAtMostBytes: Int64? = nil, steps: [StepInfo]? = nil, failures: String? = nil, triggeredBy: String? = nil,
                httpStatus: Int? = nil) {
        self.httpStatus = httpStatus
        self.triggeredBy = triggeredBy
        self.steps = steps
        self.failures = failures
        self.maxRssAtMostBytes = maxRssAtMostBytes
        self.node = node
        self.cpuUserSeconds = cpuUserSeconds
        self.cpuSystemSeconds = cpuSystemSeconds
        self.maxRssBytes = maxRssBytes
        self.id = id
        self.job = job
        self.trigger = trigger
        self.attempt = attempt
        self.fireId = fireId
        self.statusText = statusText
        self.waitingFor = waitingFor
        self.state = state
        self.scheduledTime = scheduledTime
        self.queuedAt = queuedAt
        self.startedAt = startedAt
        self.endedAt = endedAt
        self.durationSeconds = durationSeconds
        self.pid = pid
        self.outcome = outcome
        self.exitCode = exitCode
        self.signal = signal
        self.detail = detail
    }

    enum CodingKeys: String, CodingKey {
        case id
        case job
        case trigger
        case attempt
        case fireId = "fire_id"
        case state
        case scheduledTime = "scheduled_time"
        case queuedAt = "queued_at"
        case startedAt = "started_at"
        case endedAt = "ended_at"
        case durationSeconds = "duration_seconds"
        case pid
        case outcome
        case exitCode = "exit_code"
        case signal
        case detail
        case statusText = "status_text"
        case waitingFor = "waiting_for"
        case node
        case cpuUserSeconds = "cpu_user_seconds"
        case cpuSystemSeconds = "cpu_system_seconds"
        case maxRssBytes = "max_rss_bytes"
        case maxRssAtMostBytes = "max_rss_at_most_bytes"
        case steps
        case failures
        case triggeredBy = "triggered_by"
        case httpStatus = "http_status"
    }
}

/// A step of a job's definition (`GET /v1/jobs/{name}`).
public struct JobStepInfo: Codable, Sendable, Equatable {
    public var name: String
    /// `command`, `shell`, `http` or `parallel`.
    public var kind: String
    /// 0 for the job's own steps, one more inside each group.
    public var depth: Int
    /// What it runs: the argv or command line (absent for a group).
    public var command: String?
    public var timeoutSeconds: Double?
    /// A group's most steps at once (absent: all).
    public var max: Int?
    public var continueOnFailure: Bool

    public init(name: String, kind: String, depth: Int, command: String? = nil, timeoutSeconds: Double? = nil, max: Int? = nil,
                continueOnFailure: Bool = false) {
        self.name = name
        self.kind = kind
        self.depth = depth
        self.command = command
        self.timeoutSeconds = timeoutSeconds
        self.max = max
        self.continueOnFailure = continueOnFailure
    }

    enum CodingKeys: String, CodingKey {
        case name, kind, depth, command, max
        case timeoutSeconds = "timeout_seconds"
        case continueOnFailure = "continue_on_failure"
    }
}

/// How one step of a run ended.
public struct StepInfo: Codable, Sendable, Equatable {
    public var name: String
    /// `command`, `shell`, `http` or `parallel`.
    public var kind: String
    /// 0 for the run's own steps, one more inside each group.
    public var depth: Int
    /// As a run's; `skipped` (detail `not started`) for a step that never started.
    public var outcome: String
    public var exitCode: Int32?
    public var signal: Int32?
    public var detail: String?
    public var startedAt: String?
    public var endedAt: String?
    public var durationSeconds: Double?
    public var pid: Int32?
    public var cpuUserSeconds: Double?
    public var cpuSystemSeconds: Double?
    /// Its failure was recorded, not the run's.
    public var continueOnFailure: Bool
    /// An HTTP step's answer's status.
    public var httpStatus: Int?

    public init(name: String, kind: String, depth: Int, outcome: String, exitCode: Int32? = nil, signal: Int32? = nil, detail: String? = nil,
                startedAt: String? = nil, endedAt: String? = nil, durationSeconds: Double? = nil, pid: Int32? = nil,
                cpuUserSeconds: Double? = nil, cpuSystemSeconds: Double? = nil, continueOnFailure: Bool = false, httpStatus: Int? = nil) {
        self.httpStatus = httpStatus
        self.name = name
        self.kind = kind
        self.depth = depth
        self.outcome = outcome
        self.exitCode = exitCode
        self.signal = signal
        self.detail = detail
        self.startedAt = startedAt
        self.endedAt = endedAt
        self.durationSeconds = durationSeconds
        self.pid = pid
        self.cpuUserSeconds = cpuUserSeconds
        self.cpuSystemSeconds = cpuSystemSeconds
        self.continueOnFailure = continueOnFailure
    }

    enum CodingKeys: String, CodingKey {
        case name, kind, depth, outcome, signal, detail, pid
        case exitCode = "exit_code"
        case startedAt = "started_at"
        case endedAt = "ended_at"
        case durationSeconds = "duration_seconds"
        case cpuUserSeconds = "cpu_user_seconds"
        case cpuSystemSeconds = "cpu_system_seconds"
        case continueOnFailure = "continue_on_failure"
        case httpStatus = "http_status"
    }
}

/// The body of every error response.
public struct ErrorBody: Codable, Sendable, Equatable {
    /// A stable code: `bad_request`, `forbidden`, `not_found`, `conflict`, `internal`.
    public var error: String
    public var message: String

    public init(error: String, message: String) {
        self.error = error
        self.message = message
    }
}

/// `GET /v1/jobs/{name}/next` and `jobrunnerctl next --json`.
public struct NextResponse: Codable, Sendable, Equatable {
    /// The schedule in normal form.
    public var normalized: String
    /// The zone the times are computed in.
    public var timeZone: String
    /// Fire times, RFC 3339 with the zone's offset.
    public var next: [String]

    public init(normalized: String, timeZone: String, next: [String]) {
        self.normalized = normalized
        self.timeZone = timeZone
        self.next = next
    }

    enum CodingKeys: String, CodingKey {
        case normalized
        case timeZone = "time_zone"
        case next
    }
}

/// `POST /v1/runs/{id}/cancel`.
public struct CancelResponse: Codable, Sendable, Equatable {
    /// `stopping` (the kill sequence has started) or `dropped` (it had not started).
    public var result: String
    public var run: RunInfo

    public init(result: String, run: RunInfo) {
        self.result = result
        self.run = run
    }
}

/// `GET /v1/runs/{id}`: one run with the tail of its output.
public struct RunDetail: Codable, Sendable, Equatable {
    public var run: RunInfo
    /// The last lines the run printed (bounded by `daemon.history.output_tail`).
    public var output: [OutputLineInfo]

    public init(run: RunInfo, output: [OutputLineInfo]) {
        self.run = run
        self.output = output
    }
}

/// What `GET /v1/runs/{id}/output?follow=true` streams, one JSON object per line: a line of
/// output (`{"stream": "stdout", "text": "…"}`), or how many lines a client that fell behind
/// missed (`{"dropped": 12}`).
public enum OutputEvent: Sendable, Equatable {
    case line(OutputLineInfo)
    case dropped(Int)
    /// Nothing printed for a while: the stream carries an empty line, so a client that went
    /// away is noticed (clients skip empty lines).
    case idle
}

/// The `{"dropped": N}` line of a followed output stream.
public struct DroppedLinesInfo: Codable, Sendable, Equatable {
    public var dropped: Int

    public init(dropped: Int) {
        self.dropped = dropped
    }
}

/// One line of a run's output.
public struct OutputLineInfo: Codable, Sendable, Equatable {
    /// `stdout` or `stderr`.
    public var stream: String
    public var text: String
    /// When the daemon read it (RFC 3339); absent for lines kept by older daemons.
    public var at: String?
    /// In `GET /v1/output?follow=true` (every run's output): whose line it is.
    public var job: String?
    public var run: String?
    /// In a run made of steps: the step that printed it.
    public var step: String?

    public init(stream: String, text: String, at: String? = nil, job: String? = nil, run: String? = nil, step: String? = nil) {
        self.step = step
        self.stream = stream
        self.text = text
        self.at = at
        self.job = job
        self.run = run
    }
}

/// The filters of `GET /v1/runs`.
public struct RunsQuery: Sendable, Equatable {
    public var job: String?
    public var outcome: String?
    /// A run id: only runs before it (paging).
    public var before: String?
    /// RFC 3339: only runs that started (or were queued) at or after it.
    public var since: String?
    /// RFC 3339: only runs that started (or were queued) before it.
    public var until: String?
    public var limit: Int

    public init(job: String? = nil, outcome: String? = nil, before: String? = nil, since: String? = nil, until: String? = nil,
                limit: Int = 50) {
        self.job = job
        self.outcome = outcome
        self.before = before
        self.since = since
        self.until = until
        self.limit = limit
    }
}

/// `GET /v1/runs`: newest first.
public struct RunsResponse: Codable, Sendable, Equatable {
    public var runs: [RunInfo]

    public init(runs: [RunInfo]) {
        self.runs = runs
    }
}
