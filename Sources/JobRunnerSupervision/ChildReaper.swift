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
    /// Called once with the leader's exit status and what it cost.
    public typealias ExitHandler = @Sendable (ExitStatus, ResourceUsage) -> Void

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
        /// Spawns under way (outside the lock): a child that ends before its launch registers it
        /// must not be taken for an orphan.
        var launching = 0
        var reaperWaitsForLaunch = false
    }

    /// The process-wide reaper (there can be only one waiter per process).
    public static let shared = ChildReaper()

    private let table = Mutex(Table())
    private let wakeUp = DispatchSemaphore(value: 0)
    private let launched = DispatchSemaphore(value: 0)

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

    /// Starts a process and watches it. The spawn runs outside the table lock (launches on other
    /// threads and the reaper do not wait for a vfork); the reaper leaves an unknown child alone
    /// while a launch is under way, so it never takes a new run's leader for an orphan.
    func launch(killGroupOnExit: Bool, onExit: @escaping ExitHandler, _ spawn: () -> SpawnAttempt) -> Result<pid_t, SpawnError> {
        table.withLock { $0.launching += 1 }
        let attempt = spawn()
        let (result, mustWake, reaperWaits) = table.withLock { table -> (Result<pid_t, SpawnError>, Bool, Bool) in
            table.launching -= 1
            let reaperWaits = table.reaperWaitsForLaunch && table.launching == 0
            if reaperWaits { table.reaperWaitsForLaunch = false }
            let result: Result<pid_t, SpawnError>
            switch attempt {
            case .started(let pid):
                table.watches[pid] = Watch(killGroupOnExit: killGroupOnExit, onExit: onExit)
                result = .success(pid)
            case .failedInChild(let pid, let error):
                table.watches[pid] = Watch(killGroupOnExit: false, onExit: { _, _ in })
                result = .failure(error)
            case .failed(let error):
                return (.failure(error), false, reaperWaits)
            }
            if !table.threadStarted {
                table.threadStarted = true
                startThread()
            }
            if table.sleeping {
                table.sleeping = false
                return (result, true, reaperWaits)
            }
            table.wakePending = true
            return (result, false, reaperWaits)
        }
        if reaperWaits { launched.signal() }
        if mustWake { wakeUp.signal() }
        return result
    }

    private func startThread() {
        startDetachedThread(named: "jr-reaper") { [self] in self.loop() }
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
            // An unknown child while launches are under way may be one of theirs: wait for them.
            enum Lookup { case watched(Watch), orphan, launching }
            let lookup = table.withLock { table -> Lookup in
                if let watch = table.watches.removeValue(forKey: pid) { return .watched(watch) }
                if table.launching > 0 {
                    table.reaperWaitsForLaunch = true
                    return .launching
                }
                return .orphan
            }
            if case .launching = lookup {
                launched.wait()
                continue
            }
            let watch: Watch? = if case .watched(let watch) = lookup { watch } else { nil }
            if let watch, watch.killGroupOnExit {
                // The zombie leader still holds its pid, so the group id names this run's group.
                kill(-pid, SIGKILL)
            }
            var kind: Int32 = 0
            var status: Int32 = 0
            var usage = jr_child_usage()
            guard jr_reap_child(pid, &kind, &status, &usage) == 0 else { continue }
            let exit: ExitStatus = kind == 1 ? .exited(status) : .signalled(status, coreDumped: kind == 3)
            if let watch {
                watch.onExit(exit, ResourceUsage(userMicroseconds: usage.user_microseconds, systemMicroseconds: usage.system_microseconds,
                                                 kernelMaxResident: usage.max_rss_bytes, daemonMaxResident: usage.own_max_rss_bytes))
            } else {
                table.withLock { $0.orphansReaped += 1 }
            }
        }
    }
}

