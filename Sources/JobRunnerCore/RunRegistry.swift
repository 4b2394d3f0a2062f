import JobRunnerSchedule
import Synchronization

/// Every run the daemon knows about right now: the live ones (waiting or running) and the most
/// recent finished ones, for status. Tiny synchronous state behind a lock, so the control API
/// reads it without queueing behind the scheduler.
public final class RunRegistry: Sendable {
    private struct State {
        var endWaiters: [RunID: [CheckedContinuation<RunRecord, Never>]] = [:]
        var active: [RunID: RunRecord] = [:]
        var history: [RunRecord] = []
        var historyHead = 0
        var lastByJob: [String: RunRecord] = [:]
        var totals: [String: Int] = [:]
    }

    /// How many finished runs are kept in memory.
    public let historyLimit: Int
    private let state = Mutex(State())

    public init(historyLimit: Int = 100) {
        self.historyLimit = max(1, historyLimit)
    }

    // MARK: - Updates (from the engine)

    func add(_ record: RunRecord) {
        state.withLock { $0.active[record.id] = record }
    }

    func update(_ id: RunID, _ body: (inout RunRecord) -> Void) {
        state.withLock { state in
            if var record = state.active[id] {
                body(&record)
                state.active[id] = record
            }
        }
    }

    /// Moves a live run to history as `final` (its outcome, times and what it reported); returns
    /// the record kept, or nil when the run is not live.
    @discardableResult
    func finish(_ id: RunID, as final: RunRecord) -> RunRecord? {
        let (record, waiters) = state.withLock { state -> (RunRecord?, [CheckedContinuation<RunRecord, Never>]) in
            guard let live = state.active.removeValue(forKey: id) else { return (nil, []) }
            var record = final
            record.output = final.output ?? live.output
            record.handle = nil
            record.waitingFor = nil
            Self.archive(record, in: &state, limit: historyLimit)
            return (record, state.endWaiters.removeValue(forKey: id) ?? [])
        }
        record?.output?.finish()
        if let record { waiters.forEach { $0.resume(returning: record) } }
        return record
    }

    /// Waits until a run has ended (returns at once if it has); nil for a run this registry
    /// does not know.
    public func waitForEnd(_ id: RunID) async -> RunRecord? {
        let known = state.withLock { $0.active[id] != nil || $0.history.contains { $0.id == id } }
        guard known else { return nil }
        return await withCheckedContinuation { continuation in
            let done = state.withLock { state -> RunRecord? in
                if state.active[id] == nil { return state.history.first { $0.id == id } }
                state.endWaiters[id, default: []].append(continuation)
                return nil
            }
            if let done { continuation.resume(returning: done) }
        }
    }

    /// Waits until a run's fire has its final outcome: the run, then each retry of it (a retry
    /// is registered before the attempt it follows ends, and may have ended already when this
    /// looks); returns the last attempt.
    public func waitForFinalOutcome(_ id: RunID) async -> RunRecord? {
        guard var record = await waitForEnd(id) else { return nil }
        while let next = state.withLock({ state in
            (Array(state.active.values) + state.history)
                .filter { $0.fireID == record.fireID && $0.attempt > record.attempt }
                .max { $0.attempt < $1.attempt }
        }) {
            guard let ended = await waitForEnd(next.id) else { break }
            record = ended
        }
        return record
    }

    /// Records a fire that did not run at all.
    func recordFinished(_ record: RunRecord) {
        state.withLock { Self.archive(record, in: &$0, limit: historyLimit) }
        record.output?.finish()
    }

    private static func archive(_ record: RunRecord, in state: inout State, limit: Int) {
        if state.history.count < limit {
            state.history.append(record)
        } else {
            state.history[state.historyHead] = record
            state.historyHead = (state.historyHead + 1) % limit
        }
        state.lastByJob[record.job] = record
        state.totals[record.outcome?.name ?? "unknown", default: 0] += 1
    }

    // MARK: - Reads

    /// Live runs, oldest first.
    public func active() -> [RunRecord] {
        state.withLock { Array($0.active.values) }.sorted { $0.id < $1.id }
    }

    /// Live runs of one job.
    public func active(job: String) -> [RunRecord] {
        active().filter { $0.job == job }
    }

    /// Finished runs, newest first.
    public func history(limit: Int? = nil) -> [RunRecord] {
        let records = state.withLock { state in
            Array(state.history[state.historyHead...]) + Array(state.history[..<state.historyHead])
        }
        let newestFirst = records.reversed()
        if let limit { return Array(newestFirst.prefix(limit)) }
        return Array(newestFirst)
    }

    /// One run, live or in the kept history.
    public func record(_ id: RunID) -> RunRecord? {
        state.withLock { state in
            state.active[id] ?? state.history.first { $0.id == id }
        }
    }

    /// The most recent finished run of a job.
    public func lastRun(job: String) -> RunRecord? {
        state.withLock { $0.lastByJob[job] }
    }

    /// Finished runs per outcome name since start.
    public func totals() -> [String: Int] {
        state.withLock { $0.totals }
    }

    /// How many runs are running (not waiting) now.
    public var runningCount: Int {
        state.withLock { $0.active.values.count { $0.startedAt != nil } }
    }

    /// How many fires wait for a slot.
    public var waitingCount: Int {
        state.withLock { $0.active.values.count { $0.startedAt == nil } }
    }
}
