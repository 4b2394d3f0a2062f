import JobRunnerAPI
/// What the control API asks of the daemon. The daemon implements it over its engine; the
/// server only translates HTTP to these calls and their results to JSON.
public protocol ControlHandler: Sendable {
    func status() async -> StatusResponse
    func jobs() async -> [JobInfo]
    /// One job, or nil when there is no job of that name.
    func job(named name: String) async -> JobInfo?
    /// The next `count` fire times of a job, or nil when there is no such job.
    func nextFires(job name: String, count: Int) async -> NextResponse?
    /// One run with its output tail, or nil.
    func run(id: String) async -> RunDetail?
    /// Runs newest first, filtered; throws ``APIError`` for a filter it cannot read.
    func runs(_ query: RunsQuery) async throws(APIError) -> [RunInfo]
    /// The full id of the run a request names: the id itself, or an abbreviation that starts
    /// or ends exactly one run's id; throws ``APIError`` (not found, or ambiguous).
    func resolveRun(_ text: String) async throws(APIError) -> String
    /// Every run's output from now on (`GET /v1/output?follow=true`), each line with its job
    /// and run; a client that reads slowly is told how many lines it missed.
    func followAllOutput() async -> any AsyncSequence<OutputEvent, Never> & Sendable
    /// Pauses or resumes a job; nil when there is no such job.
    func setPaused(job name: String, _ paused: Bool) async -> JobInfo?
    /// Fires a job now; with `wait`, returns once the fire has its final outcome (after its
    /// retries), or with `firstAttempt` once the first attempt has ended.
    func runNow(job name: String, wait: Bool, firstAttempt: Bool, node: String?) async throws(APIError) -> RunInfo
    /// A run's kept output and, unless it has ended, what it prints from now on (the sequence
    /// ends with the run; a client that reads slowly is told how many lines it missed); nil for
    /// an unknown run.
    func followOutput(run id: String) async -> (kept: [OutputLineInfo], more: (any AsyncSequence<OutputEvent, Never> & Sendable)?)?
    /// The metrics in Prometheus text format.
    func metrics() async -> String
    /// Reloads the configuration (as SIGHUP does) and returns what happened.
    func reload() async -> ReloadResult
    /// Cancels a run; throws ``APIError`` for an unknown or finished run.
    func cancel(run id: String) async throws(APIError) -> CancelResponse
    /// Whether a peer (by SO_PEERCRED) may change things.
    func mayMutate(_ peer: PeerCredentials) -> Bool
}

/// Who is at the other end of a control connection.
public struct PeerCredentials: Sendable, Hashable, CustomStringConvertible {
    public var pid: Int32
    public var uid: UInt32
    public var gid: UInt32
    /// Its supplementary groups when it connected (SO_PEERGROUPS); nil when unknown.
    public var groups: [UInt32]?

    public init(pid: Int32, uid: UInt32, gid: UInt32, groups: [UInt32]? = nil) {
        self.pid = pid
        self.uid = uid
        self.gid = gid
        self.groups = groups
    }

    public var description: String { "uid \(uid) (pid \(pid))" }
}
