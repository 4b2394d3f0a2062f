import JobRunnerSchedule

/// What a fire does when the job's previous run is still alive.
public enum OverlapPolicy: Sendable, Hashable, CustomStringConvertible {
    /// Record the fire as `skipped` (the default).
    case skip
    /// Keep up to `max` fires waiting for the running one; further ones are skipped.
    case queue(max: Int)
    /// Cancel the running run with its kill sequence, then start.
    case replace
    /// Run side by side, up to `maxInstances` at once; further fires are skipped.
    case allow(maxInstances: Int)

    public var description: String {
        switch self {
        case .skip: "skip"
        case .queue(let max): "queue (max \(max))"
        case .replace: "replace"
        case .allow(let maxInstances): "allow (max \(maxInstances))"
        }
    }

    /// How many runs of the job may be alive at once.
    public var maxInstances: Int {
        if case .allow(let maxInstances) = self { return maxInstances }
        return 1
    }
}

/// When a failed attempt is tried again.
public enum RetryCondition: String, Sendable, Hashable, CaseIterable {
    /// A non-zero exit status (or a failed spawn).
    case failure
    /// The run timed out.
    case timeout
    /// A signal the daemon did not send ended it.
    case signal
    /// An HTTP request got a 5xx or 429 status (honouring `Retry-After` up to `max_backoff`).
    case status
    /// An HTTP request could not connect: refused, reset, or its host not found.
    case connect
}

/// `retry:` — exponential backoff with optional full jitter.
public struct RetryPolicy: Sendable, Hashable {
    /// Total attempts, the first included (so 3 means up to 2 retries).
    public var attempts: Int
    /// Delay before the first retry; doubled for each further one.
    public var backoff: Duration
    /// The delay never exceeds this.
    public var maxBackoff: Duration
    /// Full jitter: each delay is uniform in [0, computed delay).
    public var jitter: Bool
    public var on: Set<RetryCondition>

    public init(attempts: Int, backoff: Duration = .seconds(5), maxBackoff: Duration = .seconds(300), jitter: Bool = false,
                on: Set<RetryCondition> = [.failure, .timeout]) {
        self.attempts = attempts
        self.backoff = backoff
        self.maxBackoff = maxBackoff
        self.jitter = jitter
        self.on = on
    }

    /// The delay before attempt `next` (2 for the first retry), before jitter.
    public func delay(beforeAttempt next: Int) -> Duration {
        let exponent = max(0, min(next - 2, 40))
        let micros = backoff.wholeMicroseconds
        let (scaled, overflow) = micros.multipliedReportingOverflow(by: Int64(1) << Int64(exponent))
        let capped = overflow ? maxBackoff.wholeMicroseconds : min(scaled, maxBackoff.wholeMicroseconds)
        return .microseconds(capped)
    }
}

/// Who a run runs as: resolved from names when the configuration is validated.
public struct RunIdentity: Sendable, Hashable {
    public var user: String
    public var uid: UInt32
    public var gid: UInt32
    public var groups: [UInt32]
    public var home: String
    public var shell: String

    public init(user: String, uid: UInt32, gid: UInt32, groups: [UInt32], home: String, shell: String) {
        self.user = user
        self.uid = uid
        self.gid = gid
        self.groups = groups
        self.home = home
        self.shell = shell
    }
}

/// `limits:` — setrlimit values (soft = hard). nil leaves the daemon's limit; `UInt64.max`
/// means unlimited.
public struct ResourceLimits: Sendable, Hashable {
    public var openFiles: UInt64?
    public var processes: UInt64?
    public var cpuSeconds: UInt64?
    public var addressSpace: UInt64?
    public var coreSize: UInt64?
    public var fileSize: UInt64?

    public init() {}

    public var isEmpty: Bool {
        openFiles == nil && processes == nil && cpuSeconds == nil && addressSpace == nil && coreSize == nil && fileSize == nil
    }
}

/// Sizes as written in configuration: `64KiB`, `2GiB`, `512MB`, `4096`.
public enum SizeText {
    public struct ParseError: Error, Sendable, CustomStringConvertible {
        public var message: String
        public var description: String { message }
    }

    static let units: [(String, UInt64)] = [
        ("B", 1), ("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30), ("TiB", 1 << 40),
        ("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30), ("T", 1 << 40),
        ("KB", 1_000), ("MB", 1_000_000), ("GB", 1_000_000_000), ("TB", 1_000_000_000_000),
    ]

    public static func parse(_ raw: String) throws(ParseError) -> UInt64 {
        let text = raw.filter { $0 != " " }
        let digits = text.prefix { $0.isASCII && $0.isNumber }
        guard !digits.isEmpty else {
            throw ParseError(message: "'\(raw)' is not a size (write e.g. 64KiB, 2GiB, 4096)")
        }
        guard let value = UInt64(digits) else { throw ParseError(message: "'\(raw)' is out of range (at most 16EiB)") }
        let unit = String(text.dropFirst(digits.count))
        guard unit.isEmpty || units.contains(where: { $0.0 == unit }) else {
            throw ParseError(message: "'\(raw)' is not a size: unknown unit '\(unit)' (use B, KiB, MiB, GiB, TiB)")
        }
        let factor = unit.isEmpty ? 1 : units.first { $0.0 == unit }!.1
        let (product, overflow) = value.multipliedReportingOverflow(by: factor)
        guard !overflow else { throw ParseError(message: "'\(raw)' is out of range (at most 16EiB)") }
        return product
    }
}

/// What happens to occurrences missed while the daemon was down (or the clock jumped).
public enum CatchUpPolicy: String, Sendable, Hashable, CaseIterable {
    /// Missed occurrences are logged, not run (like cron and systemd timers without Persistent=).
    case none
    /// One run for the latest missed occurrence.
    case once
    /// One run for each missed occurrence, oldest first, at most `catch_up_max`.
    case all
}

/// What a reload does to a running run whose job's definition changed.
public enum ReloadPolicy: String, Sendable, Hashable, CaseIterable {
    /// The run goes on with the definition it started with.
    case keep
    /// The run is cancelled with its kill sequence and started again with the new definition.
    case restart
}

/// What a reload does to a running run whose job was removed.
public enum RemovalPolicy: String, Sendable, Hashable, CaseIterable {
    /// The run goes on to its end.
    case finish
    /// The run is cancelled with its kill sequence.
    case cancel
}
