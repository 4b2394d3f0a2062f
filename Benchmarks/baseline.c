/* Baselines for `make bench`, measured in the same run as the daemon:
 *   baseline spawn N INFLIGHT       raw posix_spawn + waitpid of /bin/true, INFLIGHT at a time;
 *                                   prints the seconds taken
 *   baseline floor COUNT            sleeps until each of the next COUNT whole seconds and spawns
 *                                   `date +%s%N` at that instant; prints each lateness (µs)
 *   baseline burst COUNT            at the next whole second spawns COUNT `date +%s%N` at once;
 *                                   prints each lateness (µs)
 * Lateness is what the spawned program itself reads from the clock, minus the instant. */
#define _GNU_SOURCE
#include <spawn.h>
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

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: baseline spawn N INFLIGHT | floor COUNT | burst COUNT\n"); return 2; }
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
