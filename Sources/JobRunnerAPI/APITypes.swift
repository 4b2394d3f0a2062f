/// The JSON shapes of the control API (`/v1/…`). Fields are snake_case on the wire (the
/// encoder converts), times are RFC 3339 UTC strings, durations are seconds.

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

    public init(name: String, command: [String]?, shell: String?, schedule: String?, timeZone: String, timeoutSeconds: Double?,
                killGraceSeconds: Double, workingDirectory: String?, environment: [String], state: String, nextFire: String?,
                source: String, lastRun: RunInfo?, active: [RunInfo]) {
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
    }
}

/// One run.
public struct RunInfo: Codable, Sendable, Equatable {
    public var id: String
    public var job: String
    /// `schedule`, `manual` or `startup`.
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

    public init(id: String, job: String, trigger: String, attempt: Int, fireId: String, state: String, scheduledTime: String,
                queuedAt: String, startedAt: String?, endedAt: String?, durationSeconds: Double?, pid: Int32?, outcome: String?,
                exitCode: Int32?, signal: Int32?, detail: String?, statusText: String?, waitingFor: String?, node: String? = nil) {
        self.node = node
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

    public init(stream: String, text: String) {
        self.stream = stream
        self.text = text
    }
}

/// `GET /v1/runs`: newest first.
public struct RunsResponse: Codable, Sendable, Equatable {
    public var runs: [RunInfo]

    public init(runs: [RunInfo]) {
        self.runs = runs
    }
}
