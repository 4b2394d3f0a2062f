import JobRunnerConfig
import JobRunnerSchedule

/// How the scheduler shares its schedule with the other nodes of a cluster (nil for a single
/// daemon). Every node computes the same occurrences; before a node runs one it claims it, and
/// only the claimer runs it.
public protocol ClusterCoordination: Sendable {
    /// This node's name (recorded on its runs).
    var nodeName: String { get }
    /// When the cluster started: the occurrence of `run_on_start` / `@reboot` fires, so they
    /// run once per cluster start, not once per node.
    var clusterStart: Timestamp { get }
    /// Claims occurrences for this node, all in one statement against a unique key (job,
    /// occurrence); one result per request, in order. Retries while the database is away, for
    /// at most one lease.
    func claim(_ requests: [ClaimRequest]) async -> [ClaimResult]
    /// Whether this node is the preferred claimer of an occurrence (rendezvous hashing over
    /// the live nodes): it claims those at once and the others after `handoff`, so the load
    /// spreads over the nodes and a silent node's share is still claimed, a little later.
    func prefers(_ request: ClaimRequest) -> Bool
    /// How long a node leaves another node's preferred occurrences to it.
    var handoff: Duration { get }
    /// Takes one of the `size` slots of a cluster-wide pool for a run waiting since `since`;
    /// false when every slot is held or a run of a live node has waited longer (slots go in
    /// waiting order across the cluster; those of dead nodes are freed when they are declared
    /// dead).
    func acquireSlot(pool: String, size: Int, run: RunID, since: Timestamp) async -> Bool
    /// Gives a run's slot back (or stops its waiting for one).
    func releaseSlot(pool: String, run: RunID) async
    /// Called right before a run's process starts (its fire already recorded): records in the
    /// database that the run may have started — a survivor taking over marks it `interrupted`
    /// rather than run it again — and only while this node's lease is valid by its own clock
    /// (the last heartbeat plus the lease, less a margin) and its row says it is alive.
    /// Refused: the run must not start (the node stands down).
    func dispatch(_ run: RunID) async -> DispatchVerdict
    /// Gives back occurrences this node claimed but will not run (it is draining): another
    /// node claims and runs them.
    func release(_ claims: [ClaimRequest]) async
}

/// Whether a run may start on this node.
public enum DispatchVerdict: Sendable, Equatable {
    case allowed
    case refused(String)
}

/// One occurrence to claim.
public struct ClaimRequest: Sendable, Hashable {
    public var job: String
    public var occurrence: Timestamp

    public init(job: String, occurrence: Timestamp) {
        self.job = job
        self.occurrence = occurrence
    }
}

/// The answer to a claim.
public enum ClaimResult: Sendable, Equatable {
    /// This node runs the occurrence. `busyOn` names another live node running the job right
    /// now (for `overlap: skip`).
    case won(busyOn: String?)
    /// Another node claimed it first.
    case lost(to: String)
    /// This node is not a live member (its lease was lost): it must stand down.
    case notMember
    /// The database could not be reached within the lease: the occurrence is left to others.
    case unavailable(reason: String)

    /// The label of `jobrunner_claims_total{result=…}`.
    public var label: String {
        switch self {
        case .won: "won"
        case .lost: "lost"
        case .notMember: "not_member"
        case .unavailable: "unavailable"
        }
    }
}

/// A run that a dead node left unfinished, handed to a live node to take over.
public struct OrphanedRun: Sendable, Hashable {
    public var id: RunID
    public var job: String
    public var node: String
    public var trigger: RunTrigger
    public var scheduledTime: Timestamp
    public var attempt: Int
    public var fireID: RunID
    /// Whether its process had started (then it is retried per the job's policy; otherwise
    /// the fire simply runs here).
    public var started: Bool
    /// A fire of `after:`: the run whose end fired it (kept when it is taken over).
    public var triggeredBy: String?

    public init(id: RunID, job: String, node: String, trigger: RunTrigger, scheduledTime: Timestamp, attempt: Int, fireID: RunID,
                started: Bool, triggeredBy: String? = nil) {
        self.triggeredBy = triggeredBy
        self.id = id
        self.job = job
        self.node = node
        self.trigger = trigger
        self.scheduledTime = scheduledTime
        self.attempt = attempt
        self.fireID = fireID
        self.started = started
    }
}

extension JobTrigger {
    /// The next occurrence after `instant`; with `aligned`, an interval's occurrences are the
    /// whole multiples of it since the Unix epoch, the same on every node of a cluster.
    public func nextOccurrence(after instant: Timestamp, in zone: TimeZoneRules, aligned: Bool) -> Timestamp? {
        if aligned, case .interval(let interval) = self {
            let step = max(1, interval.wholeMicroseconds)
            let (quotient, _) = instant.microseconds.quotientAndRemainder(dividingBy: step)
            let floor = instant.microseconds < 0 && instant.microseconds % step != 0 ? quotient - 1 : quotient
            return Timestamp(microseconds: (floor + 1) * step)
        }
        return nextOccurrence(after: instant, in: zone)
    }
}
