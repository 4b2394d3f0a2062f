#ifndef JOBRUNNER_CLINUX_H
#define JOBRUNNER_CLINUX_H

#include <stdint.h>
#include <sys/types.h>

/// One resource limit to apply in the child (setrlimit values; RLIM_INFINITY allowed).
struct jr_rlimit {
    int resource;
    uint64_t soft;
    uint64_t hard;
};

/// Everything the child does between fork and exec.
struct jr_spawn_request {
    const char *path;                 /// executable to run (already resolved)
    char *const *argv;                /// NULL-terminated
    char *const *envp;                /// NULL-terminated
    const char *working_directory;    /// NULL: inherit
    int stdin_fd;                     /// dup2'ed to 0
    int stdout_fd;                    /// dup2'ed to 1
    int stderr_fd;                    /// dup2'ed to 2
    int new_session;                  /// setsid(): own session and process group
    int set_umask;                    /// apply umask_value
    unsigned int umask_value;
    int set_nice;                     /// apply nice_value with setpriority
    int nice_value;
    int set_ids;                      /// setgroups + setgid + setuid
    uid_t uid;
    gid_t gid;
    int group_count;
    const gid_t *groups;
    int limit_count;
    const struct jr_rlimit *limits;
    /// Descriptors above 2 are made close-on-exec with close_range; where that is unavailable,
    /// each below this bound is marked instead. Taken in the parent (the daemon's own
    /// RLIMIT_NOFILE), before the job's `nofile` limit can lower what sysconf would say.
    int descriptor_bound;
    /// Tests only: skip close_range and use the marking loop.
    int force_descriptor_loop;
};

/// Stages the child can fail at, reported with the errno.
enum jr_spawn_stage {
    JR_STAGE_NONE = 0,
    JR_STAGE_FORK = 1,
    JR_STAGE_SETSID = 2,
    JR_STAGE_RLIMIT = 3,
    JR_STAGE_NICE = 4,
    JR_STAGE_GROUPS = 5,
    JR_STAGE_SETGID = 6,
    JR_STAGE_SETUID = 7,
    JR_STAGE_CHDIR = 8,
    JR_STAGE_DUP = 9,
    JR_STAGE_EXEC = 10,
};

/// Starts a process with vfork semantics (the parent waits only until the child has exec'ed).
/// Returns 0 and sets *pid on success; returns an errno and sets *stage on failure (the failed
/// child has already exited with status 127 and must still be reaped by the caller's reaper).
int jr_spawn(const struct jr_spawn_request *request, pid_t *pid, int *stage);

/// Makes this process a child subreaper: orphaned descendants are re-parented to it.
int jr_set_child_subreaper(void);

/// waitid(P_ALL, WEXITED|WNOWAIT): which child has ended, without reaping it.
/// Returns 0 and the pid, or -1 with errno (ECHILD when there are no children).
int jr_peek_exited_child(pid_t *pid);

/// What the kernel accounted to a reaped child and the descendants it waited for.
struct jr_child_usage {
    int64_t user_microseconds;
    int64_t system_microseconds;
    /// The largest resident set of the child or of any descendant it waited for, in bytes.
    int64_t max_rss_bytes;
    /// This process's own peak resident set when the child was reaped (getrusage(RUSAGE_SELF)).
    int64_t own_max_rss_bytes;
};

/// wait4(pid): reaps one child with its resource usage. kind: 1 exited, 2 killed by signal,
/// 3 dumped core.
int jr_reap_child(pid_t pid, int *kind, int *status, struct jr_child_usage *usage);

/// SO_PEERCRED of a connected unix socket.
int jr_peer_credentials(int fd, pid_t *pid, uid_t *uid, gid_t *gid);

/// SO_PEERGROUPS of a connected unix socket: the peer's supplementary groups when it connected.
/// Returns how many there are (up to `capacity` are written), or -1 with errno.
int jr_peer_groups(int fd, gid_t *groups, int capacity);

/// The soft RLIMIT_NOFILE of this process, capped at `cap` (the bound for jr_spawn's fallback).
int jr_descriptor_bound(int cap);

/// A datagram socket bound to the abstract unix name `name` (`length` bytes, no leading NUL),
/// non-blocking and close-on-exec, receiving its senders' credentials (SO_PASSCRED). Returns the
/// descriptor or -1 with errno.
int jr_notify_socket(const char *name, int length);

/// One datagram from a notify socket, with the sender's uid and pid from SCM_CREDENTIALS.
/// Returns its length (truncated to `capacity`), or -1 with errno (EAGAIN when none is waiting).
ssize_t jr_notify_receive(int fd, void *buffer, size_t capacity, uid_t *uid, pid_t *pid);

/// epoll: a new instance (close-on-exec); add `fd` for input with `token`; remove `fd`; wait for
/// up to `capacity` ready tokens (-1 timeout: forever). Return -1 with errno on failure.
int jr_epoll_create(void);
int jr_epoll_add(int epoll, int fd, uint64_t token);
int jr_epoll_remove(int epoll, int fd);
int jr_epoll_wait(int epoll, uint64_t *tokens, int capacity, int timeout_ms);

/// The file type bits (st_mode & S_IFMT) of `path` itself (lstat), or -1 with errno set.
int jr_file_type(const char *path);

/// Whether `type` (from jr_file_type) is a socket.
int jr_is_socket_type(int type);

/// A CLOCK_REALTIME timerfd (blocking reads, close-on-exec).
int jr_realtime_timer_create(void);
/// Arms the timer at an absolute realtime instant, cancelled by clock changes; 0 disarms.
int jr_realtime_timer_arm(int fd, int64_t microseconds_since_epoch);
/// Blocks until the timer fires. Returns 0 when it expired, 1 when the clock was set, -1 on error.
int jr_realtime_timer_wait(int fd);

/// An anonymous in-memory file holding `length` bytes, positioned at its start (for a hook's
/// stdin). Returns the descriptor (close-on-exec) or -1.
int jr_memfd_with_contents(const void *bytes, size_t length);

/// pipe2(O_CLOEXEC).
int jr_pipe_cloexec(int fds[2]);

/// CLOCK_BOOTTIME in microseconds (monotonic, counts suspend).
int64_t jr_boottime_microseconds(void);
/// CLOCK_REALTIME in microseconds since the epoch.
int64_t jr_realtime_microseconds(void);

/// Returns the allocator's free memory to the kernel, in every arena (glibc's malloc_trim(0)):
/// a configuration parsed on a pool thread leaves its arena at the parse's peak otherwise.
void jr_release_free_memory(void);

/// Keeps glibc's trim threshold at its default 128 KiB instead of letting it grow with the
/// largest block freed (to 2× it, up to 64 MiB): the free top of a thread's arena above the
/// threshold goes back to the kernel when it is freed, which `malloc_trim` does not do for
/// arenas other than the main one. Leaves an operator's MALLOC_TRIM_THRESHOLD_ or
/// GLIBC_TUNABLES setting alone.
void jr_bound_free_memory_kept(void);

/// Names the calling thread (at most 15 bytes are kept): what `top -H` and
/// /proc/PID/task/TID/comm show.
void jr_name_current_thread(const char *name);

/// Runs every job bound for Swift's global executor (every task not on an actor's own executor)
/// on `threads` threads of its own, named `name-N`, in place of libdispatch's global pool: each
/// job is run as libdispatch runs it (`swift_job_run` on the generic executor), first in first
/// out. An idle thread waits on a condition variable and costs no wakeups. The pool takes over
/// through the runtime's `swift_task_enqueueGlobal_hook`, which is linked here rather than
/// looked up with dlsym, so it also works with the Swift runtime linked statically (whose
/// symbols are not exported). Returns 0; -1 when a hook was already installed, the pool was
/// started before, or no thread could be started. Call it once, before any task starts.
int jr_task_pool_start(int threads, const char *name);

#endif
