import Foundation
import JobRunnerCore
import JobRunnerSchedule
import Logging
import ServiceLifecycle
import Synchronization

/// Writes the engine's journal to the history store: in order, in batches (one transaction for
/// whatever accumulated while the previous one was written), never blocking the scheduler.
///
/// When the disk is full or read-only (or the cluster's database is away), runs go on: the failure is logged once a minute and shown
/// in status, events wait in a bounded backlog, and writing resumes by itself when it can.
public final class HistoryWriter: RunJournal, Service {
    /// Retention: kept per job, and no older than.
    public struct Retention: Sendable, Hashable {
        public var keepPerJob: Int
        public var maxAge: Duration

        public init(keepPerJob: Int, maxAge: Duration) {
            self.keepPerJob = keepPerJob
            self.maxAge = maxAge
        }
    }

    /// Events waiting beyond this are dropped (oldest first) while writing fails.
    static let backlogLimit = 50_000
    static let retryInterval: Duration = .seconds(5)

    private struct State {
        var pending: [JournalEvent] = []
        var recorded: UInt64 = 0
        var settled: UInt64 = 0
        var waiters: [(target: UInt64, continuation: CheckedContinuation<Void, Never>)] = []
        var failure: String?
        var lastFailureLog: ContinuousClock.Instant?
        var dropped = 0
        var retention: Retention
        var touchedJobs: Set<String> = []
        var lastPrune = ContinuousClock.now
    }

    private let history: any HistoryStore
    private let state: Mutex<State>
    private let onHealthChange: @Sendable (String?) -> Void
    private let wake = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
    private let logger: Logger

    /// `onHealthChange` is called with the failure when writes start failing and with nil when
    /// they resume.
    public init(history: any HistoryStore, retention: Retention, logger: Logger, onHealthChange: @escaping @Sendable (String?) -> Void = { _ in }) {
        self.onHealthChange = onHealthChange
        self.history = history
        self.state = Mutex(State(retention: retention))
        self.logger = logger
    }

    /// Why history writes are failing right now, if they are.
    public var failure: String? { state.withLock { $0.failure } }

    public func setRetention(_ retention: Retention) {
        state.withLock { $0.retention = retention }
    }

    // MARK: - RunJournal

    @discardableResult
    public func record(_ event: JournalEvent) -> UInt64 {
        let place = state.withLock { state -> UInt64 in
            state.pending.append(event)
            state.recorded += 1
            if state.pending.count > Self.backlogLimit {
                let excess = state.pending.count - Self.backlogLimit
                state.pending.removeFirst(excess)
                state.settled += UInt64(excess)
                state.dropped += excess
            }
            return state.recorded
        }
        wake.continuation.yield()
        return place
    }

    public func flush(through place: UInt64) async {
        await withCheckedContinuation { continuation in
            let done = state.withLock { state -> Bool in
                let target = min(place, state.recorded)
                if state.settled >= target || state.failure != nil { return true }
                state.waiters.append((target, continuation))
                return false
            }
            if done { continuation.resume() }
        }
    }

    // MARK: - Service

    public func run() async {
        let wakes = wake.stream
        var iterator = wakes.makeAsyncIterator()
        await withGracefulShutdownHandler {
            while true {
                let failing = state.withLock { $0.failure != nil }
                if failing {
                    // Retry after a pause, or sooner if more events arrive.
                    try? await Pause.sleep(for: Self.retryInterval)
                } else if await iterator.next() == nil {
                    break
                }
                await writePending()
                if Task.isShuttingDownGracefully { break }
            }
        } onGracefulShutdown: { [wake] in
            wake.continuation.finish()
        }
        // Shutdown: write what is left (one attempt).
        await writePending()
        releaseAllWaiters()
    }

    /// Writes everything pending in one transaction; on failure keeps it for the next attempt.
    func writePending() async {
        let (batch, retention, prune) = state.withLock { state -> ([JournalEvent], Retention, Set<String>?) in
            let batch = state.pending
            state.pending.removeAll(keepingCapacity: true)
            var prune: Set<String>?
            if ContinuousClock.now - state.lastPrune > .seconds(30) || state.touchedJobs.count > 200 {
                prune = state.touchedJobs
            }
            return (batch, state.retention, prune)
        }
        guard !batch.isEmpty || prune != nil else { return }
        do {
            try await history.write(Self.coalesced(batch))
            let recovered = state.withLock { state -> (String?, Int) in
                let previous = state.failure
                state.failure = nil
                state.settled += UInt64(batch.count)
                for event in batch { if let job = event.job { state.touchedJobs.insert(job) } }
                let dropped = state.dropped
                state.dropped = 0
                return (previous, dropped)
            }
            if let previous = recovered.0 {
                logger.notice("history writes resumed", metadata: ["after": "\(previous)", "dropped_events": .number(recovered.1)])
                onHealthChange(nil)
            }
            releaseWaiters()
            if let prune {
                await self.prune(jobs: prune, retention: retention)
            }
        } catch {
            let reason = history.describe(error)
            let (shouldLog, changed) = state.withLock { state -> (Bool, Bool) in
                // Put the batch back in front of anything recorded meanwhile.
                state.pending = batch + state.pending
                let changed = state.failure != reason
                state.failure = reason
                let now = ContinuousClock.now
                if let last = state.lastFailureLog, now - last < .seconds(60) { return (false, changed) }
                state.lastFailureLog = now
                return (true, changed)
            }
            if changed { onHealthChange(reason) }
            if shouldLog {
                logger.error("cannot write history, runs go on; retrying every 5s", metadata: [
                    "error": "\(reason)", "location": "\(history.location)", "pending": "\(batch.count)",
                ])
            }
            // Nobody waits on a failing disk.
            releaseAllWaiters()
        }
    }

    /// The batch without what a later event of it writes anyway: a run's `started` is dropped
    /// when its `finished` (which carries its start) is in the same batch.
    static func coalesced(_ batch: [JournalEvent]) -> [JournalEvent] {
        var finished: Set<RunID> = []
        for event in batch {
            if case .finished(let record) = event, record.startedAt != nil, record.pid != nil { finished.insert(record.id) }
        }
        guard !finished.isEmpty else { return batch }
        return batch.filter { event in
            if case .started(let id, _, _) = event { return !finished.contains(id) }
            return true
        }
    }

    private func releaseWaiters() {
        let ready = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            let ready = state.waiters.filter { $0.target <= state.settled }.map(\.continuation)
            state.waiters.removeAll { $0.target <= state.settled }
            return ready
        }
        ready.forEach { $0.resume() }
    }

    private func releaseAllWaiters() {
        let all = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            defer { state.waiters.removeAll() }
            return state.waiters.map(\.continuation)
        }
        all.forEach { $0.resume() }
    }

    // MARK: - Retention

    /// Deletes beyond `keep_per_job` for the jobs written since the last prune, and anything
    /// older than `max_age`, in small transactions so no write lock is held for long.
    func prune(jobs: Set<String>, retention: Retention) async {
        state.withLock { state in
            state.touchedJobs.subtract(jobs)
            state.lastPrune = .now
        }
        do {
            let cutoff = WallClock.now().advanced(by: .zero - retention.maxAge)
            try await history.prune(jobs: jobs, keepPerJob: retention.keepPerJob, endedBefore: cutoff)
        } catch {
            logger.warning("history pruning failed, will retry", metadata: ["error": "\(history.describe(error))"])
        }
    }

    /// Runs retention now for every job (tests and start-up).
    public func pruneAll() async {
        let jobs = (try? await history.jobsWithRuns()) ?? []
        await prune(jobs: Set(jobs), retention: state.withLock { $0.retention })
    }
}
