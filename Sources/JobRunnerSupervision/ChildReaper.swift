import JobRunnerSchedule
import JobRunnerConfig
import JobRunnerCore
import CLinuxSupport
import Dispatch
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The daemon's only waiter for child processes: starts them, reaps them, and tells each run
/// how its process ended.
///
/// Being the only caller of `waitid` in the process is what lets the daemon be a child subreaper
/// without races: a dedicated thread waits for *any* child, looks it up, and either reports it
/// to its run or reaps it as an orphan that a job left behind. When a run's leader ends, the
/// thread kills what is left of its process group while the zombie leader still holds the group
/// id, so the id cannot have been reused by an unrelated process.
public final class ChildReaper: Sendable {
    /// Called once with the leader's exit status.
    public typealias ExitHandler = @Sendable (ExitStatus) -> Void

    private struct Watch {
        var killGroupOnExit: Bool
        var onExit: ExitHandler
    }

    private struct Table {
        var watches: [pid_t: Watch] = [:]
        var threadStarted = false
        var sleeping = false
        var wakePending = false
        var orphansReaped = 0
    }

    /// The process-wide reaper (there can be only one waiter per process).
    public static let shared = ChildReaper()

    private let table = Mutex(Table())
    private let wakeUp = DispatchSemaphore(value: 0)

    private init() {}

    /// Makes the daemon a child subreaper, so processes that jobs orphan are re-parented to it
    /// (and reaped here) rather than to PID 1.
    public static func becomeSubreaper() -> Bool {
        let ok = jr_set_child_subreaper() == 0
        subreaper.store(ok, ordering: .relaxed)
        return ok
    }

    /// How many processes that were not a run's leader have been reaped (orphans jobs left).
    public var orphansReaped: Int {
        table.withLock { $0.orphansReaped }
    }

    /// The pids of started processes that have not ended yet.
    public var watchedPIDs: Set<Int32> {
        table.withLock { Set($0.watches.keys) }
    }

    /// Whether this process is a child subreaper (set by ``becomeSubreaper()``).
    public static var isSubreaper: Bool { subreaper.load(ordering: .relaxed) }
    private static let subreaper = Atomic<Bool>(false)

    /// How many started processes have not ended yet.
    public var watchedCount: Int {
        table.withLock { $0.watches.count }
    }

    /// What a spawn attempt produced.
    enum SpawnAttempt {
        /// The process is running.
        case started(pid_t)
        /// A child was created but failed before exec; it has exited and must still be reaped.
        case failedInChild(pid_t, SpawnError)
        /// No child was created.
        case failed(SpawnError)
    }

    /// Starts a process and watches it. `spawn` runs under the table lock, so the reaper thread
    /// cannot see the child end before it is registered.
    func launch(killGroupOnExit: Bool, onExit: @escaping ExitHandler, _ spawn: () -> SpawnAttempt) -> Result<pid_t, SpawnError> {
        let (result, mustWake) = table.withLock { table -> (Result<pid_t, SpawnError>, Bool) in
            let result: Result<pid_t, SpawnError>
            switch spawn() {
            case .started(let pid):
                table.watches[pid] = Watch(killGroupOnExit: killGroupOnExit, onExit: onExit)
                result = .success(pid)
            case .failedInChild(let pid, let error):
                table.watches[pid] = Watch(killGroupOnExit: false, onExit: { _ in })
                result = .failure(error)
            case .failed(let error):
                return (.failure(error), false)
            }
            if !table.threadStarted {
                table.threadStarted = true
                startThread()
            }
            if table.sleeping {
                table.sleeping = false
                return (result, true)
            }
            table.wakePending = true
            return (result, false)
        }
        if mustWake { wakeUp.signal() }
        return result
    }

    private func startThread() {
        startDetachedThread { [self] in self.loop() }
    }

    private func loop() {
        while true {
            var pid: pid_t = 0
            if jr_peek_exited_child(&pid) != 0 {
                if errno == ECHILD {
                    let sleep = table.withLock { table -> Bool in
                        if table.wakePending {
                            table.wakePending = false
                            return false
                        }
                        table.sleeping = true
                        return true
                    }
                    if sleep { wakeUp.wait() }
                }
                continue
            }
            // Taking the lock waits for a launch in progress to register its pid.
            let watch = table.withLock { $0.watches.removeValue(forKey: pid) }
            if let watch, watch.killGroupOnExit {
                // The zombie leader still holds its pid, so the group id names this run's group.
                kill(-pid, SIGKILL)
            }
            var kind: Int32 = 0
            var status: Int32 = 0
            guard jr_reap_child(pid, &kind, &status) == 0 else { continue }
            let exit: ExitStatus = kind == 1 ? .exited(status) : .signalled(status, coreDumped: kind == 3)
            if let watch {
                watch.onExit(exit)
            } else {
                table.withLock { $0.orphansReaped += 1 }
            }
        }
    }
}

