import JobRunnerConfig
import JobRunnerCore
import JobRunnerSchedule
import Synchronization

/// Test doubles for the engine's ports: the scheduler's loop, run without processes or a database.

/// Runs that last until a test ends them (or they are cancelled): every start, hook and sweep
/// is recorded.
public final class ScriptedExecutor: RunExecutor {
    /// Every run started, in order.
    public let started = EventQueue<RunRequest>()
    /// Every hook run, as `kind run-id`.
    public let hooks = EventQueue<String>()
    /// Every sweep, by run id.
    public let sweeps = EventQueue<RunID>()
    private let handles = Mutex<[RunID: RunHandle]>([:])
    private let clock: any SchedulerClock
    /// What the journal held when each run started (to check the fire was flushed first).
    private let flushedBeforeStart: (@Sendable (RunRequest) -> Void)?

    public init(clock: any SchedulerClock, onStart: (@Sendable (RunRequest) -> Void)? = nil) {
        self.clock = clock
        self.flushedBeforeStart = onStart
    }

    public func run(_ request: RunRequest, handle: RunHandle, output: OutputTail,
                    started: @escaping @Sendable (Int32, Timestamp) -> Void) async -> RunResult {
        flushedBeforeStart?(request)
        handles.withLock { $0[request.id] = handle }
        let startedAt = clock.now()
        started(4242, startedAt)
        self.started.push(request)
        while true {
            switch await handle.mailbox.next() {
            case .exited(let status, _):
                let outcome: RunOutcome = switch status {
                case .exited(0): .succeeded
                case .exited(let code): .failed(exitCode: code)
                case .signalled(let signal, _): .signalled(signal)
                }
                return RunResult(outcome: outcome, startedAt: startedAt, endedAt: clock.now(), pid: 4242, exitStatus: status)
            case .cancel:
                return RunResult(outcome: .cancelled, startedAt: startedAt, endedAt: clock.now(), pid: 4242, exitStatus: .signalled(15, coreDumped: false))
            default:
                continue
            }
        }
    }

    /// Ends a started run as if its process exited with `code`.
    public func finish(_ id: RunID, exitCode code: Int32 = 0) {
        handles.withLock { $0[id] }?.mailbox.post(.exited(.exited(code), nil))
    }

    public func runHook(_ hook: JobCommand, kind: String, for request: RunRequest, result: RunResult, output: String) async -> RunOutcome {
        hooks.push("\(kind) \(request.id)")
        return .succeeded
    }

    public func sweepLeftovers(of request: RunRequest) async {
        sweeps.push(request.id)
    }
}

/// A journal that keeps every event in order and counts flushes.
public final class RecordingJournal: RunJournal {
    private let state = Mutex<(events: [JournalEvent], flushes: Int)>(([], 0))

    public init() {}

    @discardableResult
    public func record(_ event: JournalEvent) -> UInt64 {
        state.withLock { state in
            state.events.append(event)
            return UInt64(state.events.count)
        }
    }

    public func flush(through place: UInt64) async {
        state.withLock { $0.flushes += 1 }
    }

    public var events: [JournalEvent] { state.withLock { $0.events } }
    public var flushes: Int { state.withLock { $0.flushes } }

    /// The ids of runs journalled as fired, in order.
    public var fired: [RunID] {
        events.compactMap { if case .fired(let record, _) = $0 { record.id } else { nil } }
    }

    /// The final records journalled, in order.
    public var finished: [RunRecord] {
        events.compactMap { if case .finished(let record) = $0 { record } else { nil } }
    }
}

/// A cluster of one node that answers claims as a test says (all won by default) and records
/// what it was asked.
public final class FakeCluster: ClusterCoordination {
    public let nodeName: String
    public let clusterStart: Timestamp
    public let handoff: Duration = .milliseconds(1)
    private let state = Mutex<(claims: [[ClaimRequest]], answer: @Sendable (ClaimRequest) -> ClaimResult, released: [RunID])>(
        ([], { _ in .won(busyOn: nil) }, []))

    public init(nodeName: String = "n1", clusterStart: Timestamp = Timestamp(seconds: 0)) {
        self.nodeName = nodeName
        self.clusterStart = clusterStart
    }

    /// How claims are answered from now on.
    public func answer(_ body: @escaping @Sendable (ClaimRequest) -> ClaimResult) {
        state.withLock { $0.answer = body }
    }

    public var claims: [[ClaimRequest]] { state.withLock { $0.claims } }
    public var released: [RunID] { state.withLock { $0.released } }

    public func claim(_ requests: [ClaimRequest]) async -> [ClaimResult] {
        state.withLock { state in
            state.claims.append(requests)
            return requests.map(state.answer)
        }
    }

    public func prefers(_ request: ClaimRequest) -> Bool { true }

    public func acquireSlot(pool: String, size: Int, run: RunID, since: Timestamp) async -> Bool { true }

    public func releaseSlot(pool: String, run: RunID) async {
        state.withLock { $0.released.append(run) }
    }

    /// What `dispatch` answers from now on (allowed by default), and the runs it was asked for.
    public func answerDispatch(_ verdict: DispatchVerdict) {
        dispatchState.withLock { $0.verdict = verdict }
    }

    public var dispatched: [RunID] { dispatchState.withLock { $0.asked } }
    public var releasedClaims: [ClaimRequest] { dispatchState.withLock { $0.releasedClaims } }

    private let dispatchState = Mutex<(verdict: DispatchVerdict, asked: [RunID], releasedClaims: [ClaimRequest])>((.allowed, [], []))

    public func dispatch(_ run: RunID) async -> DispatchVerdict {
        dispatchState.withLock { state in
            state.asked.append(run)
            return state.verdict
        }
    }

    public func release(_ claims: [ClaimRequest]) async {
        dispatchState.withLock { $0.releasedClaims += claims }
    }
}
