import JobRunnerSchedule
import Synchronization

/// A live run's handle: how the engine cancels it, and where what the run says about itself
/// (its notify messages) is kept.
public final class RunHandle: Sendable {
    package enum Event: Sendable {
        case exited(ExitStatus, ResourceUsage?)
        case deadline
        case graceOver
        case cancel
        case outputClosed
        case drainTimeout
        case notify(NotifyMessage)
        /// Work done inside the daemon (a tree of steps, a request) has ended.
        case workEnded
    }

    struct Reported: Sendable {
        var statusText: String?
        var ready = false
        var pid: Int32?
    }

    package let mailbox = Mailbox<Event>()
    private let reported = Mutex(Reported())

    public init() {}

    /// Starts the run's kill sequence (SIGTERM to its group, `kill_grace`, SIGKILL); the run
    /// ends with the outcome `cancelled`. Harmless when the run has already ended.
    public func cancel() {
        mailbox.post(.cancel)
    }

    /// The last `STATUS=` the run sent (its progress), if any.
    public var statusText: String? { reported.withLock { $0.statusText } }

    /// Whether the run sent `READY=1`.
    public var isReady: Bool { reported.withLock { $0.ready } }

    package func record(_ message: NotifyMessage) {
        reported.withLock { state in
            switch message {
            case .status(let text): state.statusText = text
            case .ready: state.ready = true
            case .extendTimeout: break
            }
        }
    }
}
