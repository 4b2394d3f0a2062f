import JobRunnerAPI
import JobRunnerControl
import Synchronization

/// A control API port with fixed answers, for testing the router in-process: it records what
/// it was asked (the filters of `/v1/runs`, which run an abbreviation named, each mutation).
public final class FixedControlHandler: ControlHandler {
    public let jobList: [JobInfo]
    public let runList: [RunInfo]
    public let output: [OutputLineInfo]
    /// Every call that changes something, as `pause backup`, `run backup wait=first`, `cancel ID`.
    public let calls = Mutex<[String]>([])
    /// The last `GET /v1/runs` filters.
    public let lastQuery = Mutex<RunsQuery?>(nil)
    public let allowsMutations: Bool

    public init(jobs: [JobInfo], runs: [RunInfo], output: [OutputLineInfo] = [], allowsMutations: Bool = true) {
        self.jobList = jobs
        self.runList = runs
        self.output = output
        self.allowsMutations = allowsMutations
    }

    public func status() async -> StatusResponse {
        StatusResponse(version: JobRunnerVersion.string, pid: 1, startedAt: "2026-12-01T00:00:00Z", uptimeSeconds: 1, state: "running",
                       config: ConfigStatus(path: "test.yaml", generation: 1, lastReload: nil), jobs: jobList.count, running: 0, waiting: 0,
                       nextFire: nil, runTotals: [:])
    }

    public func jobs() async -> [JobInfo] { jobList }
    public func job(named name: String) async -> JobInfo? { jobList.first { $0.name == name } }

    public func nextFires(job name: String, count: Int) async -> NextResponse? {
        guard jobList.contains(where: { $0.name == name }) else { return nil }
        return NextResponse(normalized: "0 3 * * *", timeZone: "UTC", next: Array(repeating: "2026-12-02T03:00:00Z", count: count))
    }

    public func run(id: String) async -> RunDetail? {
        runList.first { $0.id == id }.map { RunDetail(run: $0, output: output) }
    }

    public func runs(_ query: RunsQuery) async throws(APIError) -> [RunInfo] {
        lastQuery.withLock { $0 = query }
        if let since = query.since, since.isEmpty { throw APIError.badRequest("since is empty") }
        return Array(runList.filter { query.job == nil || $0.job == query.job }.prefix(query.limit))
    }

    public func resolveRun(_ text: String) async throws(APIError) -> String {
        let matches = runList.filter { $0.id == text || (text.count >= 4 && ($0.id.hasPrefix(text) || $0.id.hasSuffix(text))) }
        switch matches.count {
        case 0: throw APIError.notFound("no run with id '\(text)'")
        case 1: return matches[0].id
        default: throw APIError.conflict("'\(text)' names more than one run")
        }
    }

    public func followAllOutput() async -> any AsyncSequence<OutputEvent, Never> & Sendable {
        let lines = output
        return AsyncStream<OutputEvent> { continuation in
            for line in lines { continuation.yield(.line(line)) }
            continuation.yield(.dropped(2))
            continuation.finish()
        }
    }

    public func setPaused(job name: String, _ paused: Bool) async -> JobInfo? {
        calls.withLock { $0.append("\(paused ? "pause" : "resume") \(name)") }
        return await job(named: name)
    }

    public func runNow(job name: String, wait: Bool, firstAttempt: Bool, node: String?) async throws(APIError) -> RunInfo {
        guard let run = runList.first(where: { $0.job == name }) else { throw APIError.notFound("no job named '\(name)'") }
        calls.withLock { $0.append("run \(name) wait=\(wait ? (firstAttempt ? "first" : "final") : "no")") }
        return run
    }

    public func followOutput(run id: String) async -> (kept: [OutputLineInfo], more: (any AsyncSequence<OutputEvent, Never> & Sendable)?)? {
        runList.contains { $0.id == id } ? (output, nil) : nil
    }

    public func metrics() async -> String { "# TYPE jobrunner_running_runs gauge\n" }

    public func reload() async -> ReloadResult {
        calls.withLock { $0.append("reload") }
        return ReloadResult(at: "2026-12-01T00:00:00Z", result: "ok", generation: 2)
    }

    public func cancel(run id: String) async throws(APIError) -> CancelResponse {
        calls.withLock { $0.append("cancel \(id)") }
        guard let run = runList.first(where: { $0.id == id }) else { throw APIError.notFound("no run with id '\(id)'") }
        return CancelResponse(result: "stopping", run: run)
    }

    public func mayMutate(_ peer: PeerCredentials) -> Bool { allowsMutations }
}
