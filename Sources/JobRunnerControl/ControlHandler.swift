/// What the control API asks of the daemon. The daemon implements it over its engine; the
/// server only translates HTTP to these calls and their results to JSON.
public protocol ControlHandler: Sendable {
    func status() async -> StatusResponse
    func jobs() async -> [JobInfo]
    /// One job, or nil when there is no job of that name.
    func job(named name: String) async -> JobInfo?
    /// The next `count` fire times of a job, or nil when there is no such job.
    func nextFires(job name: String, count: Int) async -> NextResponse?
}
