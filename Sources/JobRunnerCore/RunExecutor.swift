import JobRunnerConfig
import JobRunnerSchedule

/// How the engine's runs are carried out: the port between the rules (``DispatchMachine``, run by
/// ``Scheduler``) and processes. The daemon's is `Supervisor` (JobRunnerSupervision); tests use
/// doubles that end runs when told.
public protocol RunExecutor: Sendable {
    /// Runs the request to its end and returns how it ended; never throws (a failed start is an
    /// outcome). `started` is called once its process runs (with pid 0 for work done inside the
    /// daemon: an HTTP request). Cancelling the handle (or the task)
    /// starts the kill sequence; the call still returns only once the run has ended. Lines it
    /// prints go to `output`.
    func run(_ request: RunRequest, handle: RunHandle, output: OutputTail,
             started: @escaping @Sendable (Int32, Timestamp) -> Void) async -> RunResult

    /// Runs a job's `on_failure`/`on_success` hook for a run's result, supervised as a run.
    func runHook(_ hook: JobCommand, kind: String, for request: RunRequest, result: RunResult, output: String) async -> RunOutcome

    /// Kills what a finished run left behind outside its process group.
    func sweepLeftovers(of request: RunRequest) async
}
