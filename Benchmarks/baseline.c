/* Baselines for `make bench`, measured in the same run as the daemon:
 *   baseline spawn N INFLIGHT       raw posix_spawn + waitpid of /bin/true, INFLIGHT at a time;
 *                                   prints the seconds taken
 *   baseline runner N INFLIGHT DB   what a job runner must do per run, in one thread, as
 *                                   jobrunnerd promises it: the N fires recorded durably in SQLite
 *                                   (WAL, synchronous=FULL, one transaction for fires due together)
 *                                   before any starts; each run /bin/true in a session of its own
 *                                   (POSIX_SPAWN_SETSID) with stdout and stderr pipes and a pidfd,
 *                                   all in epoll; output read to the end; start and end records
 *                                   committed in groups of at most 64 (one fsync each, as the
 *                                   daemon's writer commits what accumulated); INFLIGHT at a time.
 *                                   Prints the seconds taken.
 *   baseline floor COUNT            sleeps until each of the next COUNT whole seconds and spawns
 *                                   `date +%s%N` at that instant; prints each lateness (µs)
 *   baseline burst COUNT            at the next whole second spawns COUNT `date +%s%N` at once;
 *                                   prints each lateness (µs)
 * Lateness is what the spawned program itself reads from the clock, minus the instant. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <sqlite3.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static pid_t spawn(char *const argv[], int out) {
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    if (out >= 0) posix_spawn_file_actions_adddup2(&actions, out, 1);
    pid_t pid;
    if (posix_spawn(&pid, argv[0], &actions, NULL, argv, environ) != 0) { perror("posix_spawn"); exit(1); }
    posix_spawn_file_actions_destroy(&actions);
    return pid;
}

static void sleep_until(long long second) {
    struct timespec at = { .tv_sec = second, .tv_nsec = 0 };
    while (clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &at, NULL) != 0) {}
}

/* Spawns COUNT `date +%s%N` writing into one pipe at the instant `second`, prints latenesses. */
static void stamped(long long second, int count) {
    int fds[2];
    if (pipe(fds) != 0) { perror("pipe"); exit(1); }
    char *argv[] = { "/bin/date", "+%s%N", NULL };
    sleep_until(second);
    for (int i = 0; i < count; i++) spawn(argv, fds[1]);
    close(fds[1]);
    for (int i = 0; i < count; i++) wait(NULL);
    FILE *in = fdopen(fds[0], "r");
    char line[64];
    while (fgets(line, sizeof line, in)) {
        long long ns = atoll(line);
        printf("%lld\n", (ns - second * 1000000000LL) / 1000);
    }
    fclose(in);
}

/* MARK: - A job runner's minimum */

struct run {
    pid_t pid;
    int pidfd, out, err;
    int open;        /* descriptors still open among pidfd, out, err */
    long long id;
};

static void check(int rc, sqlite3 *db, const char *what) {
    if (rc != SQLITE_OK && rc != SQLITE_DONE && rc != SQLITE_ROW) {
        fprintf(stderr, "%s: %s\n", what, sqlite3_errmsg(db));
        exit(1);
    }
}

static void exec_sql(sqlite3 *db, const char *sql) {
    check(sqlite3_exec(db, sql, NULL, NULL, NULL), db, sql);
}

static void runner(int total, int inflight, const char *path) {
    sqlite3 *db;
    check(sqlite3_open(path, &db), db, "open");
    exec_sql(db, "PRAGMA journal_mode=WAL");
    exec_sql(db, "PRAGMA synchronous=FULL");
    exec_sql(db, "CREATE TABLE IF NOT EXISTS runs (id INTEGER PRIMARY KEY, job TEXT, queued_at INTEGER, started_at INTEGER, "
                 "ended_at INTEGER, outcome TEXT, pid INTEGER)");
    sqlite3_stmt *fire, *start, *end;
    check(sqlite3_prepare_v2(db, "INSERT INTO runs (id, job, queued_at) VALUES (?, 'bench', ?)", -1, &fire, NULL), db, "prepare");
    check(sqlite3_prepare_v2(db, "UPDATE runs SET started_at = ?, pid = ? WHERE id = ?", -1, &start, NULL), db, "prepare");
    check(sqlite3_prepare_v2(db, "UPDATE runs SET ended_at = ?, outcome = 'succeeded' WHERE id = ?", -1, &end, NULL), db, "prepare");
    double begin = now_seconds();
    /* The fires due together, durable before any run starts: one transaction, one fsync. */
    exec_sql(db, "BEGIN");
    for (int i = 0; i < total; i++) {
        sqlite3_bind_int64(fire, 1, i + 1);
        sqlite3_bind_int64(fire, 2, (long long)(now_seconds() * 1e6));
        check(sqlite3_step(fire), db, "fire");
        sqlite3_reset(fire);
    }
    exec_sql(db, "COMMIT");
    int epoll = epoll_create1(EPOLL_CLOEXEC);
    struct run *runs = calloc((size_t)inflight, sizeof(struct run));
    for (int i = 0; i < inflight; i++) runs[i].pid = 0;
    int started = 0, done = 0, pending = 0;
    char *child[] = {"/bin/true", NULL};
    char buffer[65536];
    exec_sql(db, "BEGIN");
    while (done < total) {
        /* Start what the limit allows; each start recorded in the open group. */
        for (int slot = 0; slot < inflight && started < total; slot++) {
            if (runs[slot].pid != 0) continue;
            int out[2], err[2];
            if (pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC)) { perror("pipe2"); exit(1); }
            posix_spawn_file_actions_t actions;
            posix_spawn_file_actions_init(&actions);
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
            posix_spawn_file_actions_adddup2(&actions, out[1], 1);
            posix_spawn_file_actions_adddup2(&actions, err[1], 2);
            posix_spawnattr_t attributes;
            posix_spawnattr_init(&attributes);
            posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSID);
            pid_t pid;
            if (posix_spawn(&pid, child[0], &actions, &attributes, child, environ) != 0) { perror("posix_spawn"); exit(1); }
            posix_spawn_file_actions_destroy(&actions);
            posix_spawnattr_destroy(&attributes);
            close(out[1]);
            close(err[1]);
            int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
            if (pidfd < 0) { perror("pidfd_open"); exit(1); }
            runs[slot] = (struct run){.pid = pid, .pidfd = pidfd, .out = out[0], .err = err[0], .open = 3, .id = started + 1};
            struct epoll_event event = {.events = EPOLLIN};
            int fds[3] = {pidfd, out[0], err[0]};
            for (int k = 0; k < 3; k++) {
                event.data.u64 = ((uint64_t)slot << 2) | (uint64_t)k;
                epoll_ctl(epoll, EPOLL_CTL_ADD, fds[k], &event);
            }
            sqlite3_bind_int64(start, 1, (long long)(now_seconds() * 1e6));
            sqlite3_bind_int64(start, 2, pid);
            sqlite3_bind_int64(start, 3, runs[slot].id);
            check(sqlite3_step(start), db, "start");
            sqlite3_reset(start);
            started++;
            pending++;
        }
        /* Wait; read output to its end; reap exits; record the ends. */
        struct epoll_event events[64];
        int count = epoll_wait(epoll, events, 64, -1);
        for (int e = 0; e < count; e++) {
            int slot = (int)(events[e].data.u64 >> 2), kind = (int)(events[e].data.u64 & 3);
            struct run *run = &runs[slot];
            if (run->pid == 0) continue;
            int fd = kind == 0 ? run->pidfd : kind == 1 ? run->out : run->err;
            if (fd < 0) continue;
            if (kind != 0) {
                ssize_t n = read(fd, buffer, sizeof buffer);
                if (n > 0) continue;
            } else {
                siginfo_t info;
                waitid(P_PIDFD, (id_t)run->pidfd, &info, WEXITED);
            }
            epoll_ctl(epoll, EPOLL_CTL_DEL, fd, NULL);
            close(fd);
            if (kind == 0) run->pidfd = -1; else if (kind == 1) run->out = -1; else run->err = -1;
            if (--run->open == 0) {
                sqlite3_bind_int64(end, 1, (long long)(now_seconds() * 1e6));
                sqlite3_bind_int64(end, 2, run->id);
                check(sqlite3_step(end), db, "end");
                sqlite3_reset(end);
                run->pid = 0;
                done++;
                pending++;
            }
        }
        if (pending >= 64 || done == total) {
            exec_sql(db, "COMMIT");
            exec_sql(db, "BEGIN");
            pending = 0;
        }
    }
    exec_sql(db, "COMMIT");
    printf("%.6f\n", now_seconds() - begin);
    sqlite3_finalize(fire);
    sqlite3_finalize(start);
    sqlite3_finalize(end);
    sqlite3_close(db);
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: baseline spawn N INFLIGHT | runner N INFLIGHT DB | floor COUNT | burst COUNT\n"); return 2; }
    if (strcmp(argv[1], "spawn") == 0 && argc == 4) {
        int total = atoi(argv[2]), inflight = atoi(argv[3]), started = 0, done = 0;
        char *child[] = { "/bin/true", NULL };
        double start = now_seconds();
        while (done < total) {
            while (started < total && started - done < inflight) { spawn(child, -1); started++; }
            if (wait(NULL) > 0) done++;
        }
        printf("%.6f\n", now_seconds() - start);
        return 0;
    }
    if (strcmp(argv[1], "runner") == 0 && argc == 5) {
        runner(atoi(argv[2]), atoi(argv[3]), argv[4]);
        return 0;
    }
    if (strcmp(argv[1], "floor") == 0) {
        int count = atoi(argv[2]);
        long long second = time(NULL) + 1;
        for (int i = 0; i < count; i++) stamped(second + i, 1);
        return 0;
    }
    if (strcmp(argv[1], "burst") == 0) {
        stamped(time(NULL) + 1, atoi(argv[2]));
        return 0;
    }
    fprintf(stderr, "unknown mode %s\n", argv[1]);
    return 2;
}
