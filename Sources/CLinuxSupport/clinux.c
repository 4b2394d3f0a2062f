#define _GNU_SOURCE
#include "include/clinux.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

#ifndef SYS_close_range
#define SYS_close_range 436
#endif

// The child runs on the parent's memory until it execs (vfork), so it may only make system
// calls and write its failure into the parent's variables; it must never return.
__attribute__((noreturn)) static void child_fail(volatile int *out_stage, volatile int *out_errno, int stage) {
    *out_errno = errno;
    *out_stage = stage;
    _exit(127);
}

// `bound` comes from the parent: in the child, after setrlimit, sysconf(_SC_OPEN_MAX) would
// give the job's own (possibly lower) limit and leave daemon descriptors above it open.
static void mark_cloexec_from(int first, int bound, int force_loop) {
    if (!force_loop && syscall(SYS_close_range, (unsigned int)first, ~0U, CLOSE_RANGE_CLOEXEC) == 0) {
        return;
    }
    for (int fd = first; fd < bound; fd++) {
        int flags = fcntl(fd, F_GETFD);
        if (flags >= 0 && !(flags & FD_CLOEXEC)) {
            fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
        }
    }
}

int jr_descriptor_bound(int cap) {
    struct rlimit limit;
    if (getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY || limit.rlim_cur > (rlim_t)cap) {
        return cap;
    }
    return (int)limit.rlim_cur;
}

/// The kernel's own layout of struct sigaction (x86_64, aarch64), for rt_sigaction.
struct kernel_sigaction {
    void (*handler)(int);
    unsigned long flags;
    void (*restorer)(void);
    uint64_t mask;
};

int jr_spawn(const struct jr_spawn_request *request, pid_t *pid, int *stage) {
    volatile int child_stage = JR_STAGE_NONE;
    volatile int child_errno = 0;

    // Block every signal so no handler of the daemon runs in the child before exec. But SIGCHLD,
    // whose action is the default (the child has no children of its own to send one): blocked
    // here, an earlier run's exit during the spawn would be queued to the process instead of
    // dropped (see jr_task_pool_start).
    sigset_t all, previous;
    sigfillset(&all);
    sigdelset(&all, SIGCHLD);
    pthread_sigmask(SIG_SETMASK, &all, &previous);

    pid_t child = vfork();
    if (child == 0) {
        // Default dispositions: the daemon ignores SIGPIPE and handles SIGTERM/SIGHUP; the job
        // must start with neither.
        // The raw system call also resets the signals glibc reserves for itself (32, 33),
        // which its sigaction() refuses to touch.
        struct kernel_sigaction dfl;
        memset(&dfl, 0, sizeof(dfl));
        dfl.handler = SIG_DFL;
        for (int sig = 1; sig < NSIG; sig++) {
            if (sig == SIGKILL || sig == SIGSTOP) continue;
            syscall(SYS_rt_sigaction, sig, &dfl, NULL, sizeof(dfl.mask));
        }
        if (request->new_session && setsid() < 0) child_fail(&child_stage, &child_errno, JR_STAGE_SETSID);
        for (int i = 0; i < request->limit_count; i++) {
            struct rlimit limit = {
                .rlim_cur = (rlim_t)request->limits[i].soft,
                .rlim_max = (rlim_t)request->limits[i].hard,
            };
            if (setrlimit(request->limits[i].resource, &limit) < 0) child_fail(&child_stage, &child_errno, JR_STAGE_RLIMIT);
        }
        if (request->set_nice && setpriority(PRIO_PROCESS, 0, request->nice_value) < 0) {
            child_fail(&child_stage, &child_errno, JR_STAGE_NICE);
        }
        if (request->set_umask) umask((mode_t)request->umask_value);
        if (request->set_ids) {
            // Raw system calls: glibc's wrappers broadcast the change to every thread of the
            // process, and after vfork those threads are the daemon's.
            if (syscall(SYS_setgroups, (size_t)request->group_count, request->groups) < 0) {
                child_fail(&child_stage, &child_errno, JR_STAGE_GROUPS);
            }
            if (syscall(SYS_setresgid, request->gid, request->gid, request->gid) < 0) {
                child_fail(&child_stage, &child_errno, JR_STAGE_SETGID);
            }
            if (syscall(SYS_setresuid, request->uid, request->uid, request->uid) < 0) {
                child_fail(&child_stage, &child_errno, JR_STAGE_SETUID);
            }
        }
        if (request->working_directory && chdir(request->working_directory) < 0) {
            child_fail(&child_stage, &child_errno, JR_STAGE_CHDIR);
        }
        int fds[3] = {request->stdin_fd, request->stdout_fd, request->stderr_fd};
        // Move sources out of 0..2 first so one dup2 cannot clobber another's source.
        for (int i = 0; i < 3; i++) {
            if (fds[i] >= 0 && fds[i] < 3) {
                int moved = fcntl(fds[i], F_DUPFD_CLOEXEC, 3);
                if (moved < 0) child_fail(&child_stage, &child_errno, JR_STAGE_DUP);
                fds[i] = moved;
            }
        }
        for (int i = 0; i < 3; i++) {
            if (fds[i] >= 0 && dup2(fds[i], i) < 0) child_fail(&child_stage, &child_errno, JR_STAGE_DUP);
        }
        mark_cloexec_from(3, request->descriptor_bound > 3 ? request->descriptor_bound : 65536, request->force_descriptor_loop);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execve(request->path, request->argv, request->envp);
        child_fail(&child_stage, &child_errno, JR_STAGE_EXEC);
    }

    int fork_errno = errno;
    pthread_sigmask(SIG_SETMASK, &previous, NULL);
    if (child < 0) {
        *stage = JR_STAGE_FORK;
        return fork_errno;
    }
    *pid = child;
    if (child_stage != JR_STAGE_NONE) {
        *stage = child_stage;
        return child_errno;
    }
    *stage = JR_STAGE_NONE;
    return 0;
}

int jr_set_child_subreaper(void) {
    return prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
}

int jr_peek_exited_child(pid_t *pid) {
    siginfo_t info;
    memset(&info, 0, sizeof(info));
    for (;;) {
        int rc = waitid(P_ALL, 0, &info, WEXITED | WNOWAIT);
        if (rc == 0) {
            *pid = info.si_pid;
            return 0;
        }
        if (errno != EINTR) return -1;
    }
}

int jr_reap_child(pid_t pid, int *kind, int *status, struct jr_child_usage *usage) {
    int raw = 0;
    struct rusage rusage;
    memset(&rusage, 0, sizeof(rusage));
    for (;;) {
        pid_t rc = wait4(pid, &raw, 0, &rusage);
        if (rc == pid) break;
        if (rc < 0 && errno != EINTR) return -1;
    }
    if (WIFEXITED(raw)) {
        *kind = 1;
        *status = WEXITSTATUS(raw);
    } else if (WIFSIGNALED(raw)) {
        *kind = WCOREDUMP(raw) ? 3 : 2;
        *status = WTERMSIG(raw);
    } else {
        *kind = 0;
        *status = 0;
    }
    usage->user_microseconds = (int64_t)rusage.ru_utime.tv_sec * 1000000 + rusage.ru_utime.tv_usec;
    usage->system_microseconds = (int64_t)rusage.ru_stime.tv_sec * 1000000 + rusage.ru_stime.tv_usec;
    usage->max_rss_bytes = (int64_t)rusage.ru_maxrss * 1024;  /* kilobytes on Linux */
    struct rusage own;
    usage->own_max_rss_bytes = getrusage(RUSAGE_SELF, &own) == 0 ? (int64_t)own.ru_maxrss * 1024 : INT64_MAX;
    return 0;
}

int jr_peer_credentials(int fd, pid_t *pid, uid_t *uid, gid_t *gid) {
    struct ucred credentials;
    socklen_t length = sizeof(credentials);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &length) < 0) return -1;
    *pid = credentials.pid;
    *uid = credentials.uid;
    *gid = credentials.gid;
    return 0;
}

int jr_peer_groups(int fd, gid_t *groups, int capacity) {
    socklen_t length = (socklen_t)(sizeof(gid_t) * (size_t)capacity);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &length) < 0) {
        if (errno == ERANGE) return (int)(length / sizeof(gid_t));
        return -1;
    }
    return (int)(length / sizeof(gid_t));
}

int jr_notify_socket(const char *name, int length) {
    struct sockaddr_un address;
    if (length <= 0 || (size_t)length > sizeof(address.sun_path) - 1) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return -1;
    int on = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &on, sizeof(on)) < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    memset(&address, 0, sizeof(address));
    address.sun_family = AF_UNIX;
    address.sun_path[0] = '\0';  // the abstract namespace: no file, gone with the socket
    memcpy(address.sun_path + 1, name, (size_t)length);
    socklen_t size = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)length);
    if (bind(fd, (struct sockaddr *)&address, size) < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

ssize_t jr_notify_receive(int fd, void *buffer, size_t capacity, uid_t *uid, pid_t *pid) {
    struct iovec vector = {.iov_base = buffer, .iov_len = capacity};
    union {
        struct cmsghdr header;
        char space[CMSG_SPACE(sizeof(struct ucred)) + CMSG_SPACE(sizeof(int) * 16)];
    } control;
    struct msghdr message;
    memset(&message, 0, sizeof(message));
    message.msg_iov = &vector;
    message.msg_iovlen = 1;
    message.msg_control = &control;
    message.msg_controllen = sizeof(control);
    ssize_t received;
    do {
        received = recvmsg(fd, &message, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    } while (received < 0 && errno == EINTR);
    if (received < 0) return -1;
    *uid = (uid_t)-1;
    *pid = 0;
    for (struct cmsghdr *header = CMSG_FIRSTHDR(&message); header; header = CMSG_NXTHDR(&message, header)) {
        if (header->cmsg_level != SOL_SOCKET) continue;
        if (header->cmsg_type == SCM_CREDENTIALS && header->cmsg_len >= CMSG_LEN(sizeof(struct ucred))) {
            struct ucred credentials;
            memcpy(&credentials, CMSG_DATA(header), sizeof(credentials));
            *uid = credentials.uid;
            *pid = credentials.pid;
        } else if (header->cmsg_type == SCM_RIGHTS) {
            // A sender may pass descriptors (sd_pid_notify_with_fds): never keep them.
            int count = (int)((header->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            for (int i = 0; i < count; i++) {
                int passed;
                memcpy(&passed, CMSG_DATA(header) + (size_t)i * sizeof(int), sizeof(int));
                close(passed);
            }
        }
    }
    return received;
}

int jr_epoll_create(void) {
    return epoll_create1(EPOLL_CLOEXEC);
}

int jr_epoll_add(int epoll, int fd, uint64_t token) {
    struct epoll_event event;
    memset(&event, 0, sizeof(event));
    event.events = EPOLLIN;
    event.data.u64 = token;
    return epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &event);
}

int jr_epoll_remove(int epoll, int fd) {
    return epoll_ctl(epoll, EPOLL_CTL_DEL, fd, NULL);
}

int jr_epoll_wait(int epoll, uint64_t *tokens, int capacity, int timeout_ms) {
    struct epoll_event events[64];
    if (capacity > 64) capacity = 64;
    int count;
    do {
        count = epoll_wait(epoll, events, capacity, timeout_ms);
    } while (count < 0 && errno == EINTR);
    for (int i = 0; i < count; i++) tokens[i] = events[i].data.u64;
    return count;
}

int jr_realtime_timer_create(void) {
    return timerfd_create(CLOCK_REALTIME, TFD_CLOEXEC);
}

int jr_realtime_timer_arm(int fd, int64_t microseconds_since_epoch) {
    struct itimerspec spec;
    memset(&spec, 0, sizeof(spec));
    if (microseconds_since_epoch > 0) {
        spec.it_value.tv_sec = (time_t)(microseconds_since_epoch / 1000000);
        spec.it_value.tv_nsec = (long)(microseconds_since_epoch % 1000000) * 1000;
        return timerfd_settime(fd, TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET, &spec, NULL);
    }
    return timerfd_settime(fd, 0, &spec, NULL);
}

int jr_realtime_timer_wait(int fd) {
    uint64_t expirations = 0;
    for (;;) {
        ssize_t n = read(fd, &expirations, sizeof(expirations));
        if (n == (ssize_t)sizeof(expirations)) return 0;
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == ECANCELED) return 1;
        return -1;
    }
}

int64_t jr_boottime_microseconds(void) {
    struct timespec now;
    clock_gettime(CLOCK_BOOTTIME, &now);
    return (int64_t)now.tv_sec * 1000000 + now.tv_nsec / 1000;
}

int64_t jr_realtime_microseconds(void) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return (int64_t)now.tv_sec * 1000000 + now.tv_nsec / 1000;
}

int jr_pipe_cloexec(int fds[2]) {
    return pipe2(fds, O_CLOEXEC);
}

int jr_memfd_with_contents(const void *bytes, size_t length) {
    int fd = memfd_create("jobrunner-hook-stdin", MFD_CLOEXEC);
    if (fd < 0) return -1;
    const char *p = bytes;
    size_t left = length;
    while (left > 0) {
        ssize_t n = write(fd, p, left);
        if (n < 0) {
            if (errno == EINTR) continue;
            close(fd);
            return -1;
        }
        p += n;
        left -= (size_t)n;
    }
    if (lseek(fd, 0, SEEK_SET) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

int jr_file_type(const char *path) {
    struct stat status;
    if (lstat(path, &status) != 0) return -1;
    return (int)(status.st_mode & S_IFMT);
}

int jr_is_socket_type(int type) {
    return type >= 0 && S_ISSOCK((mode_t)type);
}

void jr_release_free_memory(void) {
    (void)malloc_trim(0);
}

void jr_bound_free_memory_kept(void) {
    /* An operator's own setting wins. */
    const char *tunables = getenv("GLIBC_TUNABLES");
    if (getenv("MALLOC_TRIM_THRESHOLD_") != NULL || (tunables != NULL && strstr(tunables, "trim_threshold") != NULL)) return;
    (void)mallopt(M_TRIM_THRESHOLD, 128 * 1024);
}

void jr_name_current_thread(const char *name) {
    prctl(PR_SET_NAME, (unsigned long)name, 0, 0, 0);
}

/* The runtime's hook (swift/Runtime/ConcurrencyHooks.def): called with the job and the default
   implementation, in Swift's calling convention. */
typedef void (*jr_enqueue_global_original)(void *job) __attribute__((swiftcall));
typedef void (*jr_enqueue_global_hook_t)(void *job, jr_enqueue_global_original original) __attribute__((swiftcall));
extern jr_enqueue_global_hook_t swift_task_enqueueGlobal_hook;

/* Runs a job (swift/Runtime/Concurrency.h). The executor reference (swift/ABI/Executor.h) with
   a null identity is the generic one: the job runs as libdispatch's threads run it, so the
   runtime may switch executors inline from it. */
struct jr_serial_executor_ref { void *identity; uintptr_t implementation; };
extern void swift_job_run(void *job, struct jr_serial_executor_ref executor) __attribute__((swiftcall));

/* A ring of job pointers under one mutex; it doubles when full. */
static struct {
    pthread_mutex_t lock;
    pthread_cond_t ready;
    void **jobs;
    size_t capacity, head, count;
    int idle;
    int started;
} jr_pool = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, 0, 0, 0, 0, 0 };

static void jr_task_pool_enqueue(void *job) {
    pthread_mutex_lock(&jr_pool.lock);
    if (jr_pool.count == jr_pool.capacity) {
        size_t capacity = jr_pool.capacity * 2;
        void **jobs = malloc(capacity * sizeof *jobs);
        if (jobs == NULL) abort();
        for (size_t i = 0; i < jr_pool.count; i++) jobs[i] = jr_pool.jobs[(jr_pool.head + i) % jr_pool.capacity];
        free(jr_pool.jobs);
        jr_pool.jobs = jobs;
        jr_pool.capacity = capacity;
        jr_pool.head = 0;
    }
    jr_pool.jobs[(jr_pool.head + jr_pool.count) % jr_pool.capacity] = job;
    jr_pool.count++;
    int wake = jr_pool.idle > 0;
    pthread_mutex_unlock(&jr_pool.lock);
    if (wake) pthread_cond_signal(&jr_pool.ready);
}

__attribute__((swiftcall)) static void jr_enqueue_global(void *job, jr_enqueue_global_original original) {
    (void)original;
    jr_task_pool_enqueue(job);
}

static void *jr_task_pool_thread(void *unused) {
    (void)unused;
    for (;;) {
        pthread_mutex_lock(&jr_pool.lock);
        while (jr_pool.count == 0) {
            jr_pool.idle++;
            pthread_cond_wait(&jr_pool.ready, &jr_pool.lock);
            jr_pool.idle--;
        }
        void *job = jr_pool.jobs[jr_pool.head];
        jr_pool.head = (jr_pool.head + 1) % jr_pool.capacity;
        jr_pool.count--;
        pthread_mutex_unlock(&jr_pool.lock);
        swift_job_run(job, (struct jr_serial_executor_ref){ NULL, 0 });
    }
    return NULL;
}

int jr_task_pool_start(int threads, const char *name) {
    if (swift_task_enqueueGlobal_hook != NULL || threads < 1 || jr_pool.started) return -1;
    jr_pool.started = 1;
    jr_pool.capacity = 256;
    jr_pool.jobs = malloc(jr_pool.capacity * sizeof *jr_pool.jobs);
    if (jr_pool.jobs == NULL) return -1;
    /* The threads take no asynchronous signals (threads they start inherit the mask): a fault or
       a trap in one still reaches the runtime's crash handler, which also stops each thread with
       SIGPROF to read its stack. SIGCHLD stays unblocked too: runs are started on these threads,
       and the kernel drops a child's SIGCHLD at once (its action is the default, ignore) only if
       the thread that started the child does not block it; blocked, it was queued to the process
       and woke the one thread that takes every signal (libdispatch parks the main thread in
       sigsuspend with none blocked), once a run. Exits are heard by the reaper's waitid. */
    sigset_t all, previous;
    sigfillset(&all);
    int unblocked[] = { SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP, SIGSYS, SIGABRT, SIGPROF, SIGCHLD };
    for (size_t i = 0; i < sizeof unblocked / sizeof unblocked[0]; i++) sigdelset(&all, unblocked[i]);
    pthread_sigmask(SIG_SETMASK, &all, &previous);
    int started = 0;
    for (int i = 0; i < threads; i++) {
        pthread_t thread;
        if (pthread_create(&thread, NULL, jr_task_pool_thread, NULL) != 0) break;
        char label[16];
        snprintf(label, sizeof label, "%.12s-%d", name, i);
        pthread_setname_np(thread, label);
        pthread_detach(thread);
        started++;
    }
    pthread_sigmask(SIG_SETMASK, &previous, NULL);
    if (started == 0) return -1;
    swift_task_enqueueGlobal_hook = jr_enqueue_global;
    return 0;
}
