import JobRunnerSchedule

/// A validated configuration: daemon settings and job definitions, ready for the engine.
public struct Configuration: Sendable {
    /// The main configuration file, as given.
    public var path: String
    public var daemon: DaemonSettings
    /// Jobs in the order they appear in the file.
    public var jobs: [JobDefinition]
    /// A fingerprint of the files read (the main file and its includes): nodes of a cluster
    /// compare theirs to spot a node running a different configuration.
    public var contentHash: String

    public init(path: String, daemon: DaemonSettings, jobs: [JobDefinition], contentHash: String = "") {
        self.path = path
        self.daemon = daemon
        self.jobs = jobs
        self.contentHash = contentHash
    }
}

/// `daemon.control`: the control socket's group and who may change things through it.
public struct ControlSettings: Sendable, Hashable {
    /// The socket's group (mode 0660): its members may connect.
    public var group: String?
    public var groupID: UInt32?
    /// Besides root and the daemon's own user, these uids may run, cancel, pause, resume, reload.
    public var allowedUIDs: [UInt32] = []
    /// …and members of these groups.
    public var allowedGroups: [String] = []
    public var allowedGIDs: [UInt32] = []
    /// Most connections served at once; further ones wait in the listen backlog.
    public var maxConnections = 256

    public init() {}
}

/// The `daemon:` section.
public struct DaemonSettings: Sendable, Equatable {
    /// Zone that schedules are computed in unless a job says otherwise.
    public var timeZone: TimeZoneRules
    /// Most runs alive at once, across all jobs; further due runs wait in fire order.
    public var maxConcurrentRuns: Int
    /// Threads of the pool for blocking work (file reads, process-tree sweeps, user lookups).
    public var blockingThreads: Int
    /// On SIGTERM, how long running runs may finish before their kill sequence starts.
    public var shutdownGrace: Duration
    /// Named concurrency pools and their sizes (`pools: {db: 2}`).
    public var pools: [String: Int]
    /// Pools whose size holds across a cluster (`{size: 2, cluster_wide: true}`); outside a
    /// cluster they are ordinary pools.
    public var clusterWidePools: Set<String> = []
    /// Bytes of output kept per run for status (`history.output_tail`).
    public var outputTail: Int
    /// Finished runs kept per job in the history (`history.keep_per_job`).
    public var keepPerJob: Int
    /// Finished runs older than this are deleted (`history.max_age`).
    public var maxHistoryAge: Duration
    /// Who may use the control socket (`control:`).
    public var control: ControlSettings
    /// `metrics.listen`: a TCP address serving only `/metrics`, if set.
    public var metricsListen: (host: String, port: Int)?
    /// `cluster:`: share the schedule with other nodes through PostgreSQL.
    public var cluster: ClusterSettings?

    public static let defaultMaxConcurrentRuns = 64
    public static let defaultBlockingThreads = 4
    public static func == (lhs: DaemonSettings, rhs: DaemonSettings) -> Bool {
        lhs.timeZone == rhs.timeZone && lhs.maxConcurrentRuns == rhs.maxConcurrentRuns && lhs.blockingThreads == rhs.blockingThreads
            && lhs.shutdownGrace == rhs.shutdownGrace && lhs.pools == rhs.pools && lhs.clusterWidePools == rhs.clusterWidePools && lhs.outputTail == rhs.outputTail
            && lhs.keepPerJob == rhs.keepPerJob && lhs.maxHistoryAge == rhs.maxHistoryAge && lhs.control == rhs.control
            && lhs.metricsListen?.host == rhs.metricsListen?.host && lhs.metricsListen?.port == rhs.metricsListen?.port
            && lhs.cluster == rhs.cluster
    }

    public static let defaultShutdownGrace: Duration = .seconds(30)
    public static let defaultOutputTail = 64 * 1024
    public static let defaultKeepPerJob = 100
    public static let defaultMaxHistoryAge: Duration = .seconds(30 * 86_400)

    public init(
        timeZone: TimeZoneRules,
        maxConcurrentRuns: Int = Self.defaultMaxConcurrentRuns,
        blockingThreads: Int = Self.defaultBlockingThreads,
        shutdownGrace: Duration = Self.defaultShutdownGrace,
        pools: [String: Int] = [:],
        outputTail: Int = Self.defaultOutputTail,
        keepPerJob: Int = Self.defaultKeepPerJob,
        maxHistoryAge: Duration = Self.defaultMaxHistoryAge
    ) {
        self.keepPerJob = keepPerJob
        self.maxHistoryAge = maxHistoryAge
        self.control = ControlSettings()
        self.metricsListen = nil
        self.timeZone = timeZone
        self.maxConcurrentRuns = maxConcurrentRuns
        self.blockingThreads = blockingThreads
        self.shutdownGrace = shutdownGrace
        self.pools = pools
        self.outputTail = outputTail
    }
}

/// What a run executes.
public enum JobCommand: Sendable, Hashable, CustomStringConvertible {
    /// An argument vector, executed directly (no shell).
    case argv([String])
    /// A command line for `/bin/sh -c`.
    case shell(String)

    /// The argument vector to execute.
    public var arguments: [String] {
        switch self {
        case .argv(let arguments): arguments
        case .shell(let line): ["/bin/sh", "-c", line]
        }
    }

    public var description: String {
        switch self {
        case .argv(let arguments): arguments.joined(separator: " ")
        case .shell(let line): line
        }
    }
}

/// When a job fires on its own (a job without one runs only when asked).
public enum JobTrigger: Sendable, Hashable, CustomStringConvertible {
    /// A cron expression in the job's zone.
    case cron(CronExpression)
    /// One or more systemd calendar events (`on_calendar:`); the job fires at their union.
    case calendar([CalendarEvent])
    /// Once when the daemon starts (`@reboot`), not on reload.
    case reboot
    /// A fixed interval on the monotonic clock (`every:` or `@every`).
    case interval(Duration)

    public var description: String {
        switch self {
        case .cron(let expression): expression.text
        case .calendar(let events): events.map(\.normalized).joined(separator: "; ")
        case .reboot: "@reboot"
        case .interval(let duration): "every \(DurationText.format(duration))"
        }
    }
}

extension JobTrigger {
    /// The first wall-clock occurrence strictly after `instant` (cron and calendar triggers).
    public func nextOccurrence(after instant: Timestamp, in zone: TimeZoneRules) -> Timestamp? {
        switch self {
        case .cron(let expression):
            return expression.next(after: instant, in: zone)
        case .calendar(let events):
            return events.compactMap { $0.next(after: instant, in: zone) }.min()
        case .reboot, .interval:
            return nil
        }
    }

    /// The next `count` occurrences after `instant` (an interval counts from `instant`).
    public func upcoming(after instant: Timestamp, in zone: TimeZoneRules, count: Int) -> [Timestamp] {
        switch self {
        case .interval(let interval):
            return (0..<max(0, count)).map { instant.advanced(by: interval * ($0 + 1)) }
        case .reboot:
            return []
        case .cron, .calendar:
            var result: [Timestamp] = []
            var cursor = instant
            while result.count < count, let next = nextOccurrence(after: cursor, in: zone) {
                result.append(next)
                cursor = next
            }
            return result
        }
    }
}

/// A value most jobs do not set, kept on the heap: absent, it costs a job 8 bytes where the
/// value inline would cost its whole size.
enum Rare<Value: Sendable>: Sendable {
    indirect case some(Value)

    init(_ value: Value) { self = .some(value) }

    var value: Value {
        switch self { case .some(let value): value }
    }
}

/// One job, validated.
public struct JobDefinition: Sendable, Hashable {
    /// The definition's values, shared by copies of it until one is changed (copy on write):
    /// the engine, the registry and the API hold a job's definition several times over.
    struct Fields: Sendable {
        var name: String
        var command: JobCommand
        var steps: [JobStep]
        var http: Rare<HTTPCall>? = nil
        var trigger: JobTrigger?
        var after: [AfterCondition] = []
        var timeZone: TimeZoneRules
        var timeout: Duration?
        var killGrace: Duration
        var environment: [String: String]
        var workingDirectory: String?
        var enabled: Bool
        var randomDelay: Duration?
        var fixedRandomDelay: Bool
        var runOnStart: Bool
        var overlap: OverlapPolicy
        var pool: String?
        var retry: Rare<RetryPolicy>?
        var identity: Rare<RunIdentity>?
        var umask: UInt32?
        var nice: Int?
        /// Nil when no limit is set.
        var limits: Rare<ResourceLimits>?
        var inheritEnvironment: [String]
        var onFailure: JobCommand?
        var onSuccess: JobCommand?
        var hookTimeout: Duration
        var catchUp: CatchUpPolicy
        var catchUpMax: Int
        var onReload: ReloadPolicy
        var onRemove: RemovalPolicy
        var location: SourceLocation
    }

    /// Mutated only while uniquely referenced (``mutate(_:)``), so sharing it is safe.
    final class Box: @unchecked Sendable {
        var fields: Fields
        init(_ fields: Fields) { self.fields = fields }
    }

    private var box: Box

    private mutating func mutate(_ change: (inout Fields) -> Void) {
        if !isKnownUniquelyReferenced(&box) { box = Box(box.fields) }
        change(&box.fields)
    }

    /// The job's name (its key under `jobs:`), `[A-Za-z0-9_.-]+`.
    public var name: String {
        get { box.fields.name }
        set { mutate { $0.name = newValue } }
    }
    /// The process a run executes; unused when the job has ``steps``.
    public var command: JobCommand {
        get { box.fields.command }
        set { mutate { $0.command = newValue } }
    }
    /// A run made of steps (in sequence, groups at once); empty when the run is ``command``.
    public var steps: [JobStep] {
        get { box.fields.steps }
        set { mutate { $0.steps = newValue } }
    }
    /// A run that is one HTTP request, made in-process (`http:` in place of `command`).
    public var http: HTTPCall? {
        get { box.fields.http?.value }
        set { mutate { $0.http = newValue.map(Rare.init) } }
    }
    public var trigger: JobTrigger? {
        get { box.fields.trigger }
        set { mutate { $0.trigger = newValue } }
    }
    /// Jobs whose final outcomes fire this one (`after:`), besides its own trigger.
    public var after: [AfterCondition] {
        get { box.fields.after }
        set { mutate { $0.after = newValue } }
    }
    /// Zone the job's wall-clock schedule is computed in.
    public var timeZone: TimeZoneRules {
        get { box.fields.timeZone }
        set { mutate { $0.timeZone = newValue } }
    }
    /// After this long a run is sent SIGTERM (its whole process group); nil means no limit.
    public var timeout: Duration? {
        get { box.fields.timeout }
        set { mutate { $0.timeout = newValue } }
    }
    /// After SIGTERM, how long before SIGKILL reaches whatever is left of the run's processes.
    public var killGrace: Duration {
        get { box.fields.killGrace }
        set { mutate { $0.killGrace = newValue } }
    }
    /// Variables set for the run, on top of the inherited PATH, LANG and LC_ALL.
    public var environment: [String: String] {
        get { box.fields.environment }
        set { mutate { $0.environment = newValue } }
    }
    /// Where the run starts; nil means the daemon's working directory.
    public var workingDirectory: String? {
        get { box.fields.workingDirectory }
        set { mutate { $0.workingDirectory = newValue } }
    }
    /// A disabled job never fires on its own.
    public var enabled: Bool {
        get { box.fields.enabled }
        set { mutate { $0.enabled = newValue } }
    }
    /// Each fire is delayed by a random amount in [0, randomDelay): spreads load.
    public var randomDelay: Duration? {
        get { box.fields.randomDelay }
        set { mutate { $0.randomDelay = newValue } }
    }
    /// With `randomDelay`: one stable delay per job (and machine) instead of a fresh one per fire.
    public var fixedRandomDelay: Bool {
        get { box.fields.fixedRandomDelay }
        set { mutate { $0.fixedRandomDelay = newValue } }
    }
    /// Also fire once when the daemon starts (not on reload).
    public var runOnStart: Bool {
        get { box.fields.runOnStart }
        set { mutate { $0.runOnStart = newValue } }
    }
    /// What a fire does while the job's previous run is alive.
    public var overlap: OverlapPolicy {
        get { box.fields.overlap }
        set { mutate { $0.overlap = newValue } }
    }
    /// The named pool whose slots this job's runs take, if any.
    public var pool: String? {
        get { box.fields.pool }
        set { mutate { $0.pool = newValue } }
    }
    /// Whether and how failed attempts are retried.
    public var retry: RetryPolicy? {
        get { box.fields.retry?.value }
        set { mutate { $0.retry = newValue.map(Rare.init) } }
    }
    /// The user (and groups) runs execute as; nil means the daemon's own.
    public var identity: RunIdentity? {
        get { box.fields.identity?.value }
        set { mutate { $0.identity = newValue.map(Rare.init) } }
    }
    /// File mode creation mask for runs.
    public var umask: UInt32? {
        get { box.fields.umask }
        set { mutate { $0.umask = newValue } }
    }
    /// Scheduling priority for runs (-20…19).
    public var nice: Int? {
        get { box.fields.nice }
        set { mutate { $0.nice = newValue } }
    }
    /// Resource limits for runs.
    public var limits: ResourceLimits {
        get { box.fields.limits?.value ?? ResourceLimits() }
        set { mutate { $0.limits = newValue.isEmpty ? nil : Rare(newValue) } }
    }
    /// Variables copied from the daemon's environment (default PATH, LANG, LC_ALL).
    public var inheritEnvironment: [String] {
        get { box.fields.inheritEnvironment }
        set { mutate { $0.inheritEnvironment = newValue } }
    }
    /// Run after a fire fails for good (its last attempt).
    public var onFailure: JobCommand? {
        get { box.fields.onFailure }
        set { mutate { $0.onFailure = newValue } }
    }
    /// Run after a fire succeeds.
    public var onSuccess: JobCommand? {
        get { box.fields.onSuccess }
        set { mutate { $0.onSuccess = newValue } }
    }
    /// How long a hook may run before it is torn down.
    public var hookTimeout: Duration {
        get { box.fields.hookTimeout }
        set { mutate { $0.hookTimeout = newValue } }
    }
    /// Occurrences missed while the daemon was down.
    public var catchUp: CatchUpPolicy {
        get { box.fields.catchUp }
        set { mutate { $0.catchUp = newValue } }
    }
    /// Most missed occurrences run with `catch_up: all`.
    public var catchUpMax: Int {
        get { box.fields.catchUpMax }
        set { mutate { $0.catchUpMax = newValue } }
    }
    /// A running run when the job's definition changes.
    public var onReload: ReloadPolicy {
        get { box.fields.onReload }
        set { mutate { $0.onReload = newValue } }
    }
    /// A running run when the job is removed.
    public var onRemove: RemovalPolicy {
        get { box.fields.onRemove }
        set { mutate { $0.onRemove = newValue } }
    }
    /// Where the job is defined (not part of its identity: moving a job in the file does not change it).
    public var location: SourceLocation {
        get { box.fields.location }
        set { mutate { $0.location = newValue } }
    }

    public static let defaultKillGrace: Duration = .seconds(10)
    public static let defaultHookTimeout: Duration = .seconds(60)
    public static let defaultCatchUpMax = 10
    public static let defaultInheritedEnvironment = ["PATH", "LANG", "LC_ALL"]

    public init(
        name: String,
        command: JobCommand,
        steps: [JobStep] = [],
        trigger: JobTrigger? = nil,
        timeZone: TimeZoneRules = .utc,
        timeout: Duration? = nil,
        killGrace: Duration = Self.defaultKillGrace,
        environment: [String: String] = [:],
        workingDirectory: String? = nil,
        enabled: Bool = true,
        randomDelay: Duration? = nil,
        fixedRandomDelay: Bool = false,
        runOnStart: Bool = false,
        overlap: OverlapPolicy = .skip,
        pool: String? = nil,
        retry: RetryPolicy? = nil,
        identity: RunIdentity? = nil,
        umask: UInt32? = nil,
        nice: Int? = nil,
        limits: ResourceLimits = ResourceLimits(),
        inheritEnvironment: [String] = Self.defaultInheritedEnvironment,
        onFailure: JobCommand? = nil,
        onSuccess: JobCommand? = nil,
        hookTimeout: Duration = Self.defaultHookTimeout,
        catchUp: CatchUpPolicy = .none,
        catchUpMax: Int = Self.defaultCatchUpMax,
        onReload: ReloadPolicy = .keep,
        onRemove: RemovalPolicy = .finish,
        location: SourceLocation = SourceLocation(file: "<memory>", line: 1, column: 1)
    ) {
        box = Box(Fields(
            name: name,
            command: command,
            steps: steps,
            trigger: trigger,
            timeZone: timeZone,
            timeout: timeout,
            killGrace: killGrace,
            environment: environment,
            workingDirectory: workingDirectory,
            enabled: enabled,
            randomDelay: randomDelay,
            fixedRandomDelay: fixedRandomDelay,
            runOnStart: runOnStart,
            overlap: overlap,
            pool: pool,
            retry: retry.map(Rare.init),
            identity: identity.map(Rare.init),
            umask: umask,
            nice: nice,
            limits: limits.isEmpty ? nil : Rare(limits),
            inheritEnvironment: inheritEnvironment,
            onFailure: onFailure,
            onSuccess: onSuccess,
            hookTimeout: hookTimeout,
            catchUp: catchUp,
            catchUpMax: catchUpMax,
            onReload: onReload,
            onRemove: onRemove,
            location: location
        ))
    }

    public static func == (lhs: JobDefinition, rhs: JobDefinition) -> Bool {
        if lhs.box === rhs.box { return true }
        return lhs.name == rhs.name && lhs.command == rhs.command && lhs.steps == rhs.steps && lhs.http == rhs.http && lhs.trigger == rhs.trigger && lhs.after == rhs.after
            && lhs.timeZone == rhs.timeZone && lhs.timeout == rhs.timeout && lhs.killGrace == rhs.killGrace
            && lhs.environment == rhs.environment && lhs.workingDirectory == rhs.workingDirectory
            && lhs.enabled == rhs.enabled && lhs.randomDelay == rhs.randomDelay
            && lhs.fixedRandomDelay == rhs.fixedRandomDelay && lhs.runOnStart == rhs.runOnStart
            && lhs.overlap == rhs.overlap && lhs.pool == rhs.pool && lhs.retry == rhs.retry && lhs.identity == rhs.identity
            && lhs.umask == rhs.umask && lhs.nice == rhs.nice && lhs.limits == rhs.limits
            && lhs.inheritEnvironment == rhs.inheritEnvironment && lhs.onFailure == rhs.onFailure
            && lhs.onSuccess == rhs.onSuccess && lhs.hookTimeout == rhs.hookTimeout
            && lhs.catchUp == rhs.catchUp && lhs.catchUpMax == rhs.catchUpMax && lhs.onReload == rhs.onReload
            && lhs.onRemove == rhs.onRemove
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(name)
        hasher.combine(command)
        hasher.combine(trigger)
    }

    /// Whether only the schedule differs (the next fire must be recomputed, nothing else changes).
    public func sameSchedule(as other: JobDefinition) -> Bool {
        trigger == other.trigger && timeZone == other.timeZone && enabled == other.enabled
            && randomDelay == other.randomDelay && fixedRandomDelay == other.fixedRandomDelay
    }
}
