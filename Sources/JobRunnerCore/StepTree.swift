import JobRunnerConfig
import JobRunnerSchedule

/// How one step of a run ended (a group's row carries the group's first failure).
public struct StepResult: Sendable, Hashable {
    public var name: String
    public var kind: StepKind
    /// 0 for the run's own steps, 1 inside a group, and so on: the tree, flattened in order.
    public var depth: Int
    /// `skipped` for a step that never started (an earlier step failed, or the run was stopped).
    public var outcome: RunOutcome
    public var startedAt: Timestamp?
    public var endedAt: Timestamp?
    /// The step's process, when it started.
    public var pid: Int32?
    /// What the step's process cost.
    public var usage: ResourceUsage?
    /// Its failure is recorded but was not the run's.
    public var continueOnFailure: Bool
    /// An HTTP step's answer's status.
    public var httpStatus: Int?
    /// An HTTP step's answer's `Retry-After` (not kept in the history).
    public var retryAfter: Duration?

    public init(name: String, kind: StepKind, depth: Int, outcome: RunOutcome, startedAt: Timestamp? = nil, endedAt: Timestamp? = nil,
                pid: Int32? = nil, usage: ResourceUsage? = nil, continueOnFailure: Bool = false) {
        self.name = name
        self.kind = kind
        self.depth = depth
        self.outcome = outcome
        self.startedAt = startedAt
        self.endedAt = endedAt
        self.pid = pid
        self.usage = usage
        self.continueOnFailure = continueOnFailure
    }

    /// Why a step did not start.
    public static let notStarted = "not started"

    /// Whether the step never started.
    public var wasSkipped: Bool {
        if case .skipped = outcome { return true }
        return false
    }
}

extension [StepResult] {
    /// Every failure of a run's steps, for a person: `upload-a exit 3; upload-b cancelled`
    /// (groups and steps that never started are left out). Nil when every step succeeded.
    public var failureSummary: String? {
        let failures = filter { $0.kind != .parallel && $0.outcome != .succeeded && !$0.wasSkipped }.map { step in
            var text = "\(step.name) "
            switch step.outcome {
            case .failed(let code): text += "exit \(code)"
            case .signalled(let signal): text += signalName(signal)
            case .spawnFailed(let reason): text += "could not start (\(reason))"
            case .httpStatus(let status): text += "HTTP \(status)"
            case .requestFailed(let reason, _): text += reason
            default: text += step.outcome.name.replacingUnderscores()
            }
            return step.continueOnFailure ? text + " (continued)" : text
        }
        return failures.isEmpty ? nil : failures.joined(separator: "; ")
    }

    /// What the run's processes cost, summed over its steps (the largest peak of any).
    public var totalUsage: ResourceUsage? {
        let usages = compactMap(\.usage)
        guard !usages.isEmpty else { return nil }
        let peaks = usages.compactMap(\.maxResidentBytes)
        let bounds = usages.compactMap(\.maxResidentBound)
        return ResourceUsage(userMicroseconds: usages.reduce(0) { $0 + $1.userMicroseconds },
                             systemMicroseconds: usages.reduce(0) { $0 + $1.systemMicroseconds },
                             maxResidentBytes: peaks.max(), maxResidentBound: peaks.isEmpty ? bounds.max() : nil)
    }
}

extension String {
    fileprivate func replacingUnderscores() -> String {
        String(map { $0 == "_" ? " " : $0 })
    }
}

/// The rules of a run made of steps: those of structured concurrency.
///
/// Steps of a list run one after another; a failing step (without `continue_on_failure`)
/// stops the list, and the steps after it are skipped. A parallel group runs its steps at once
/// (at most `max` at a time), awaits every one it started, and on its first failure cancels the
/// siblings still running (cancelling a leaf's task is its kill sequence) and skips those not
/// started. Cancelling the task that runs the tree stops all of it the same way. The run's
/// outcome is its first failure.
///
/// What a leaf is (a process, a request) is the caller's: ``run(_:leaf:)`` only decides what
/// runs when, so these rules are tested without processes.
public enum StepTree {
    /// Runs one leaf step (never a group) at the depth given, to its end; cancellation of the
    /// calling task must stop it (its outcome is then `cancelled`).
    public typealias Leaf = @Sendable (_ step: JobStep, _ depth: Int) async -> StepResult

    /// What a tree came to: every step's result in tree order, and the first failure.
    public struct Report: Sendable {
        public var steps: [StepResult]
        /// The failure that stopped the run (nil when nothing that counts failed).
        public var failure: RunOutcome?
    }

    public static func run(_ steps: [JobStep], leaf: @escaping Leaf) async -> Report {
        let (results, failure) = await sequence(steps, depth: 0, leaf: leaf)
        return Report(steps: results, failure: failure)
    }

    /// A list in order: stops at the first failure that counts, or when cancelled.
    private static func sequence(_ steps: [JobStep], depth: Int, leaf: @escaping Leaf) async -> ([StepResult], RunOutcome?) {
        var results: [StepResult] = []
        var failure: RunOutcome?
        for step in steps {
            if failure != nil || Task.isCancelled {
                results += skipped(step, depth: depth)
                continue
            }
            let (stepResults, stepFailure) = await one(step, depth: depth, leaf: leaf)
            results += stepResults
            if let stepFailure, !step.continueOnFailure { failure = stepFailure }
        }
        return (results, failure)
    }

    /// One step: a leaf, or a group run at once. Returns its rows and its failure (whether it counts or not).
    private static func one(_ step: JobStep, depth: Int, leaf: @escaping Leaf) async -> ([StepResult], RunOutcome?) {
        guard case .parallel(let group) = step.work else {
            let result = await leaf(step, depth)
            return ([result], result.outcome == .succeeded ? nil : result.outcome)
        }
        let count = group.steps.count
        let limit = min(group.max ?? count, count)
        var rows = [[StepResult]?](repeating: nil, count: count)
        var failure: RunOutcome?
        await withTaskGroup(of: (Int, [StepResult], RunOutcome?).self) { tasks in
            var next = 0
            func startNext() {
                let index = next
                let child = group.steps[index]
                next += 1
                tasks.addTask {
                    let (results, failure) = await one(child, depth: depth + 1, leaf: leaf)
                    return (index, results, failure)
                }
            }
            while next < limit { startNext() }
            for await (index, results, childFailure) in tasks {
                rows[index] = results
                if let childFailure, !group.steps[index].continueOnFailure, failure == nil {
                    failure = childFailure
                    tasks.cancelAll()
                }
                if failure == nil, !Task.isCancelled, next < count { startNext() }
            }
        }
        var children: [StepResult] = []
        for (index, child) in group.steps.enumerated() {
            children += rows[index] ?? skipped(child, depth: depth + 1)
        }
        let started = children.compactMap(\.startedAt).min()
        let ended = children.compactMap(\.endedAt).max()
        if failure == nil, Task.isCancelled { failure = .cancelled }
        let row = StepResult(name: step.name, kind: .parallel, depth: depth, outcome: failure ?? .succeeded, startedAt: started,
                             endedAt: ended, continueOnFailure: step.continueOnFailure)
        return ([row] + children, failure)
    }

    /// A step (and everything in it) that never started.
    private static func skipped(_ step: JobStep, depth: Int) -> [StepResult] {
        step.flattened(depth: depth).map { entry in
            StepResult(name: entry.step.name, kind: entry.step.kind, depth: entry.depth, outcome: .skipped(reason: StepResult.notStarted),
                       continueOnFailure: entry.step.continueOnFailure)
        }
    }
}
