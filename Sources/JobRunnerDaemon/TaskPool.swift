import CLinuxSupport
import JobRunnerCore
import JobRunnerSupervision

#if canImport(Glibc)
import Glibc
#endif

extension Daemon {
    /// Runs every Swift task of the daemon (but those on an actor's own executor) on a pool of
    /// its own instead of libdispatch's global pool, and its pauses on the event loops' timers.
    /// Call it once, first thing in the process, before any task has started; false when the
    /// runtime already had a hook or no thread could start (the tasks stay on libdispatch's).
    ///
    /// libdispatch's pool, once a job has run on it, arms a once-a-second timer that reads
    /// `/proc` for as long as the process lives (`_dispatch_workq_monitor_pools`): the one wakeup
    /// an idle daemon had left. This pool is as wide (one thread per CPU), first in first out,
    /// runs each job as libdispatch does, and its idle threads wait on a condition variable
    /// (`jr_task_pool_start`). Serial dispatch queues (GRDB's among them) run on libdispatch's
    /// overcommit threads, which that monitor does not watch. `Task.sleep` still schedules on
    /// libdispatch's pool whatever executor a task runs on, so the daemon's own waits go through
    /// ``Pause``, here `Pause.onEventLoop`.
    ///
    /// Blocking work never runs on these threads: it goes to the blocking pool.
    @discardableResult
    public static func useOwnTaskPool() -> Bool {
        let threads = max(1, Int32(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
        guard jr_task_pool_start(threads, "jr-task") == 0 else { return false }
        Pause.install(Pause.onEventLoop)
        return true
    }
}
