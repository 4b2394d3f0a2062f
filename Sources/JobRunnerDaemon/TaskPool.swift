import CLinuxSupport
import JobRunnerCore
import JobRunnerSupervision

#if canImport(Glibc)
import Glibc
#endif

/// The threads every Swift task of the daemon runs on (but those on an actor's own executor),
/// in place of libdispatch's global pool.
///
/// libdispatch's pool, once a job has run on it, arms a once-a-second timer that reads `/proc`
/// for as long as the process lives (`_dispatch_workq_monitor_pools`): the one wakeup an idle
/// daemon had left. This pool is as wide (one thread per CPU), first in first out, and its idle
/// threads wait on a condition variable. Serial dispatch queues (GRDB's among them) run on
/// libdispatch's overcommit threads, which that monitor does not watch. `Task.sleep` still
/// schedules on libdispatch's pool whatever executor a task runs on, so the daemon's own waits
/// go through ``Pause``, here on the event loops' timers (`Pause.onEventLoop`).
///
/// Blocking work never runs on these threads: it goes to the blocking pool.
final class TaskPool: TaskExecutor {
    static let shared = TaskPool()

    func enqueue(_ job: consuming ExecutorJob) {
        jr_task_pool_enqueue(unsafeBitCast(UnownedJob(job), to: UnsafeMutableRawPointer.self))
    }

    /// Starts the threads and routes the runtime's global jobs to them; false when the runtime
    /// already had a hook or no thread could start (the tasks stay on libdispatch's pool).
    fileprivate func start() -> Bool {
        let threads = max(1, Int32(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
        return jr_task_pool_start(threads, "jr-task") { job in
            unsafeBitCast(job!, to: UnownedJob.self).runSynchronously(on: TaskPool.shared.asUnownedTaskExecutor())
        } == 0
    }
}

extension Daemon {
    /// Runs the daemon's tasks on a ``TaskPool`` of its own and its pauses on the event loops'
    /// timers. Call it once, first thing in the process, before any task has started.
    @discardableResult
    public static func useOwnTaskPool() -> Bool {
        guard TaskPool.shared.start() else { return false }
        Pause.install(Pause.onEventLoop)
        return true
    }
}
