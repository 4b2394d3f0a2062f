#if canImport(Glibc)
import Glibc
#endif

/// How a process ended, as the kernel reported it.
public enum ExitStatus: Sendable, Hashable, CustomStringConvertible {
    case exited(Int32)
    case signalled(Int32, coreDumped: Bool)

    public var description: String {
        switch self {
        case .exited(let code): "exited with status \(code)"
        case .signalled(let signal, let core): "killed by \(signalName(signal))" + (core ? " (core dumped)" : "")
        }
    }
}

/// What a run cost, as the kernel accounted it when its process was reaped (`wait4`): the
/// CPU time of the run's leader and of every descendant it waited for, and the largest resident
/// set among them. Processes the leader left behind (killed by the run's sweep) are not in it.
///
/// The kernel's peak also counts the memory the process had before it executed the job's
/// program, and a process the daemon starts (with `vfork`) shares the daemon's memory until
/// then. So the figure is the run's own only when it is above the daemon's own peak (which only
/// grows, and is read after the reap); otherwise all that is known is that the run's peak was
/// at most the kernel's figure (``maxResidentBound``). This rests on the launcher's `vfork`:
/// a child that allocated before exec could exceed the daemon's peak with memory not the job's.
public struct ResourceUsage: Sendable, Hashable {
    public var userMicroseconds: Int64
    public var systemMicroseconds: Int64
    /// The peak resident memory of the largest process of the run's tree, in bytes, when the
    /// kernel's figure is the run's own.
    public var maxResidentBytes: Int64?
    /// Otherwise, what the run's peak was at most (the kernel's figure, itself at most the
    /// daemon's own peak).
    public var maxResidentBound: Int64?

    public init(userMicroseconds: Int64, systemMicroseconds: Int64, maxResidentBytes: Int64?, maxResidentBound: Int64? = nil) {
        self.userMicroseconds = userMicroseconds
        self.systemMicroseconds = systemMicroseconds
        self.maxResidentBytes = maxResidentBytes
        self.maxResidentBound = maxResidentBound
    }

    /// From the kernel's figures: the run's peak, and the daemon's own peak when it was reaped.
    public init(userMicroseconds: Int64, systemMicroseconds: Int64, kernelMaxResident: Int64, daemonMaxResident: Int64) {
        let own = kernelMaxResident > daemonMaxResident
        self.init(userMicroseconds: userMicroseconds, systemMicroseconds: systemMicroseconds,
                  maxResidentBytes: own ? kernelMaxResident : nil, maxResidentBound: own ? nil : kernelMaxResident)
    }

    public var userSeconds: Double { Double(userMicroseconds) / 1_000_000 }
    public var systemSeconds: Double { Double(systemMicroseconds) / 1_000_000 }
}

/// How a run ended. A non-zero exit is data, not an error: outcomes are values.
public enum RunOutcome: Sendable, Hashable, CustomStringConvertible {
    /// Exit status 0.
    case succeeded
    /// A non-zero exit status.
    case failed(exitCode: Int32)
    /// Ended by a signal the daemon did not send.
    case signalled(Int32)
    /// Ran past its timeout and was torn down.
    case timedOut
    /// Cancelled (by request or at shutdown) and torn down.
    case cancelled
    /// The process could not be started.
    case spawnFailed(reason: String)
    /// The fire did not run at all.
    case skipped(reason: String)
    /// The daemon stopped while the run was in progress.
    case interrupted
    /// An HTTP request got a status it did not expect.
    case httpStatus(Int)
    /// An HTTP request got no answer: `connection` when it could not connect (refused, reset,
    /// host not found), otherwise TLS or protocol trouble.
    case requestFailed(reason: String, connection: Bool)

    /// The outcome's stable name, as in the API and metrics.
    public var name: String {
        switch self {
        case .succeeded: "succeeded"
        case .failed: "failed"
        case .signalled: "signalled"
        case .timedOut: "timed_out"
        case .cancelled: "cancelled"
        case .spawnFailed: "spawn_failed"
        case .skipped: "skipped"
        case .interrupted: "interrupted"
        case .httpStatus: "http_status"
        case .requestFailed: "request_failed"
        }
    }

    /// Whether this is a failure of the work itself (what `on_failure` and `after: failed`
    /// answer to), as opposed to a stop, a skip or a success.
    public var isFailure: Bool {
        switch self {
        case .failed, .signalled, .timedOut, .spawnFailed, .httpStatus, .requestFailed: true
        case .succeeded, .cancelled, .skipped, .interrupted: false
        }
    }

    /// The HTTP status, when a request got one it did not expect.
    public var httpStatus: Int? {
        if case .httpStatus(let status) = self { return status }
        return nil
    }

    /// The exit code, when the process exited on its own.
    public var exitCode: Int32? {
        switch self {
        case .succeeded: 0
        case .failed(let code): code
        default: nil
        }
    }

    /// The signal number, when a signal the daemon did not send ended it.
    public var signal: Int32? {
        if case .signalled(let signal) = self { return signal }
        return nil
    }

    /// Extra words for a person: the reason of a skip or spawn failure.
    public var detail: String? {
        switch self {
        case .spawnFailed(let reason), .skipped(let reason), .requestFailed(let reason, _): reason
        case .httpStatus(let status): "HTTP \(status)"
        case .failed(let code): "exit status \(code)"
        case .signalled(let signal): signalName(signal)
        default: nil
        }
    }

    public var description: String {
        switch self {
        case .succeeded: "succeeded"
        case .failed(let code): "failed(\(code))"
        case .signalled(let signal): "signalled(\(signalName(signal)))"
        case .timedOut: "timed_out"
        case .cancelled: "cancelled"
        case .spawnFailed(let reason): "spawn_failed(\(reason))"
        case .skipped(let reason): "skipped(\(reason))"
        case .interrupted: "interrupted"
        case .httpStatus(let status): "http_status(\(status))"
        case .requestFailed(let reason, _): "request_failed(\(reason))"
        }
    }
}

private let signalNames: [Int32: String] = [
    SIGHUP: "SIGHUP", SIGINT: "SIGINT", SIGQUIT: "SIGQUIT", SIGILL: "SIGILL", SIGTRAP: "SIGTRAP",
    SIGABRT: "SIGABRT", SIGBUS: "SIGBUS", SIGFPE: "SIGFPE", SIGKILL: "SIGKILL", SIGUSR1: "SIGUSR1",
    SIGSEGV: "SIGSEGV", SIGUSR2: "SIGUSR2", SIGPIPE: "SIGPIPE", SIGALRM: "SIGALRM", SIGTERM: "SIGTERM",
    SIGCHLD: "SIGCHLD", SIGCONT: "SIGCONT", SIGSTOP: "SIGSTOP", SIGTSTP: "SIGTSTP", SIGTTIN: "SIGTTIN",
    SIGTTOU: "SIGTTOU", SIGURG: "SIGURG", SIGXCPU: "SIGXCPU", SIGXFSZ: "SIGXFSZ", SIGVTALRM: "SIGVTALRM",
    SIGPROF: "SIGPROF", SIGWINCH: "SIGWINCH", SIGIO: "SIGIO", SIGPWR: "SIGPWR", SIGSYS: "SIGSYS",
]

/// `SIGTERM` for 15, `signal 42` for numbers without a name.
public func signalName(_ signal: Int32) -> String {
    signalNames[signal] ?? "signal \(signal)"
}
