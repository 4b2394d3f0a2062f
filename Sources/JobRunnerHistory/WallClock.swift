import JobRunnerSchedule

#if canImport(Glibc)
import Glibc
#endif

/// The wall clock, read directly (for code that has no `SchedulerClock`: stores, tools).
public enum WallClock {
    public static func now() -> Timestamp {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return Timestamp(microseconds: Int64(now.tv_sec) * 1_000_000 + Int64(now.tv_nsec) / 1_000)
    }
}
