import JobRunnerConfig
import JobRunnerCore
import JobRunnerSchedule
import Synchronization

/// A ``StepTree/Leaf`` that plays a script instead of running processes: each named step
/// succeeds, fails, waits for another step to start first, or runs until it is cancelled. It
/// records starts and ends, and how many steps ran at once at most.
public final class ScriptedLeaf: Sendable {
    public enum Behaviour: Sendable {
        case succeed
        case fail(Int32)
        /// Fails once `other` has started.
        case failAfter(String, Int32)
        /// Runs until its task is cancelled (then `cancelled`).
        case runUntilCancelled
        /// Succeeds once `count` steps have run at once (proving they overlapped), or after a
        /// second when that never happens (waiting on the starts' events, not polling).
        case succeedWhenRunning(Int)
    }

    private struct State {
        var running = 0
        var mostAtOnce = 0
        var started: [String] = []
    }

    private let script: [String: Behaviour]
    private let state = Mutex(State())
    public let events = EventQueue<String>()

    public init(_ script: [String: Behaviour]) {
        self.script = script
    }

    public var mostAtOnce: Int { state.withLock { $0.mostAtOnce } }
    public var started: [String] { state.withLock { $0.started } }

    public var leaf: StepTree.Leaf {
        { [self] step, depth in
            let atOnce = state.withLock { state in
                state.running += 1
                state.mostAtOnce = max(state.mostAtOnce, state.running)
                state.started.append(step.name)
                return state.mostAtOnce
            }
            events.push("started \(step.name)")
            events.push("at once \(atOnce)")
            let begun = Timestamp(microseconds: 1)
            let outcome: RunOutcome
            switch script[step.name] ?? .succeed {
            case .succeed:
                outcome = .succeeded
            case .fail(let code):
                outcome = .failed(exitCode: code)
            case .failAfter(let other, let code):
                _ = try? await events.seen(within: .seconds(10), "\(other) started") { $0 == "started \(other)" }
                outcome = .failed(exitCode: code)
            case .runUntilCancelled:
                try? await Task.sleep(for: .seconds(60))
                outcome = Task.isCancelled ? .cancelled : .timedOut
            case .succeedWhenRunning(let count):
                _ = try? await events.seen(within: .seconds(1), "\(count) at once") { $0 == "at once \(count)" }
                outcome = .succeeded
            }
            state.withLock { $0.running -= 1 }
            events.push("ended \(step.name)")
            return StepResult(name: step.name, kind: step.kind, depth: depth, outcome: outcome, startedAt: begun,
                              endedAt: Timestamp(microseconds: 2), continueOnFailure: step.continueOnFailure)
        }
    }
}
