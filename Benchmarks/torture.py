#!/usr/bin/env python3
"""jobrunner torture suite: the daemon broken on purpose.

    Benchmarks/torture.py --bin .build/debug [--smoke] [--only NAME,...]

Cases: kill -9 cycles, a corpus of bad configs (at start and on reload), control-socket abuse,
misbehaving jobs, a state directory that fills up or turns read-only. Prints what was tried,
what passed, and anything lost (must be 0); exits 1 if any case failed.
"""
import argparse
import ctypes
import os
import random
import select
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Daemon as _Daemon, Ledger, UnixHTTP, api, kill_carrying, percentile, processes_carrying, psql,  # noqa: E402
                     start_postgres, stop_postgres, wait_until)

ARGS = None
CASES = []  # (group, case, passed, detail)
LOST = [0]


def Daemon(config, extra=()):
    return _Daemon(ARGS.bin, config, extra)


def case(group, name, passed, detail=""):
    CASES.append((group, name, bool(passed), detail))
    if not passed:
        print(f"FAIL {group}: {name}: {detail}", file=sys.stderr)


def zombies_of(parent):
    result = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        if fields[0] == "Z" and int(fields[1]) == parent:
            result.append(int(pid))
    return result


# MARK: - kill -9 cycles

def torture_crash_cycles():
    """kill -9 in the middle of runs, again and again, on one state directory. Counted in what
    the jobs did: a ledger line per run of `tick` (every second, each occurrence must run once
    while a daemon is up, never twice), and the processes of interrupted runs (by the run ids
    in their environment) must be gone once the next daemon is ready."""
    cycles = 5 if ARGS.smoke else 100
    marker = f"jrtorture{random.randrange(1 << 30)}"
    directory = tempfile.mkdtemp(prefix="jobrunner-torture-crash-")
    ledger = Ledger(os.path.join(directory, "ledger"))
    config = f"""daemon:
  shutdown_grace: 1s
jobs:
  tick: {{ shell: "{ledger.append}; sleep 0.3", schedule: "* * * * * *", overlap: allow, max_instances: 5, environment: {{ JR_TORTURE: {marker} }} }}
  long: {{ shell: "exec sleep 30", schedule: "* * * * * *", environment: {{ JR_TORTURE: {marker} }} }}
"""
    daemon = _Daemon(ARGS.bin, config, directory=directory)
    failures = []
    up = []  # (first, last) whole seconds during which a daemon was ready
    try:
        for cycle in range(cycles):
            daemon.ready()
            first = int(time.time()) + 1
            wait_until(lambda: daemon.history("SELECT count(*) FROM runs WHERE started_at IS NOT NULL AND ended_at IS NULL")[0][0] > 0,
                       20, "a run in progress")
            wait_until(lambda: any(line["second"] >= first for line in ledger.lines()), 20, "a tick")
            daemon.proc.kill()
            last = int(time.time()) - 1
            daemon.proc.wait()
            daemon.notify.close()
            daemon.log.close()
            if last >= first:
                up.append((first, last))
            # The same state directory, a new daemon: recovery marks and kills what was left.
            restarted_at = int(time.time() * 1e6)
            daemon = _restart(directory, config)
            daemon.ready()
            interrupted = {row[0] for row in daemon.history("SELECT id FROM runs WHERE outcome = 'interrupted'")}
            leftovers = processes_carrying("JOBRUNNER_RUN_ID", interrupted)
            if leftovers:
                failures.append(f"cycle {cycle}: processes of interrupted runs still alive: {leftovers}")
            still_open = daemon.history(f"SELECT count(*) FROM runs WHERE ended_at IS NULL AND queued_at < {restarted_at}")[0][0]
            if still_open:
                failures.append(f"cycle {cycle}: {still_open} runs of the killed daemon still open")
        first = int(time.time()) + 1
        wait_until(lambda: any(line["second"] >= first + 1 for line in ledger.lines()), 20, "a tick after the last restart")
        up.append((first, int(time.time()) - 1))
        zombies = zombies_of(daemon.proc.pid)
        daemon.stop(keep=True)
        rows = daemon.history("SELECT id, job, scheduled_at, COALESCE(outcome, '') FROM runs")
        interrupted_ticks = {r[2] // 1_000_000 for r in rows if r[1] == "tick" and r[3] == "interrupted"}
        missing, doubled = 0, 0
        examples = []
        whole = ledger.audit(["tick"], up[0][0], up[-1][1])
        doubled = whole["doubled_count"]
        for first, last in up:
            audit = ledger.audit(["tick"], first, last, excused={"tick": interrupted_ticks})
            missing += audit["missing_count"]
            if audit["missing"]:
                examples.append(audit["missing"])
        problems = ledger.reconcile(rows, {"tick"})
        integrity = daemon.history("PRAGMA integrity_check")[0][0]
        interrupted = sum(1 for r in rows if r[3] == "interrupted")
        case("kill -9", f"{cycles} cycles: runs marked interrupted", interrupted >= cycles, f"{interrupted} interrupted")
        case("kill -9", "no process of an interrupted run left, no open runs of a dead daemon", not failures, "; ".join(failures[:3]))
        case("kill -9", f"no occurrence run twice ({whole['counted']} ledger lines)", doubled == 0, f"{whole['doubled']}")
        case("kill -9", "no occurrence missing while a daemon was up", missing == 0, f"{examples[:3]}")
        case("kill -9", "ledger and history agree", not problems, f"{problems[:3]}")
        case("kill -9", "history integrity", integrity == "ok", integrity)
        case("kill -9", "no zombies", not zombies, f"{zombies}")
        LOST[0] += doubled + missing
    finally:
        daemon.stop()
        kill_carrying("JR_TORTURE", marker)


def _parent(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except FileNotFoundError:
        return -1


def _restart(directory, config):
    """A new daemon on the state an earlier one left in `directory`."""
    return _Daemon(ARGS.bin, config, directory=directory)


# MARK: - Bad configs

def bad_configs(directory):
    """(name, text or bytes, expects a file:line:column position)."""
    include_dir = os.path.join(directory, "inc")
    os.makedirs(include_dir, exist_ok=True)
    with open(os.path.join(include_dir, "a.yaml"), "w") as f:
        f.write('jobs:\n  twin: { command: ["/bin/true"] }\n')
    with open(os.path.join(include_dir, "b.yaml"), "w") as f:
        f.write('jobs:\n  twin: { command: ["/bin/true"] }\n')
    os.makedirs(os.path.join(directory, "dir.yaml"), exist_ok=True)
    job = lambda body: f"jobs:\n  j:\n{body}\n"
    corpus = [
        ("yaml syntax: unclosed flow sequence", job('    command: ["/bin/true"\n    schedule: "* * * * *"')),
        ("yaml syntax: bad indentation", "jobs:\n  j:\n    command: [\"/bin/true\"]\n   schedule: x\n"),
        ("yaml syntax: tab indentation", "jobs:\n\tj: {}\n"),
        ("yaml syntax: unterminated quote", job('    shell: "echo')),
        ("type: jobs is a list", "jobs:\n  - a\n  - b\n"),
        ("type: command is a string", job('    command: 5')),
        ("type: timeout is a list", job('    command: ["/bin/true"]\n    timeout: [1]')),
        ("type: environment is a list", job('    command: ["/bin/true"]\n    environment: [A]')),
        ("type: enabled is a string", job('    command: ["/bin/true"]\n    enabled: "maybe"')),
        ("type: max_concurrent_runs negative", "daemon:\n  max_concurrent_runs: -1\njobs: {}\n"),
        ("unknown key in a job", job('    command: ["/bin/true"]\n    schedul: "* * * * *"')),
        ("unknown top-level key", "jobz: {}\n"),
        ("unknown daemon key", "daemon:\n  max_concurent_runs: 3\njobs: {}\n"),
        ("missing command", job('    schedule: "* * * * *"')),
        ("both command and shell", job('    command: ["/bin/true"]\n    shell: "true"')),
        ("two schedules", job('    command: ["/bin/true"]\n    schedule: "* * * * *"\n    every: 1m')),
        ("empty command list", job('    command: []')),
        ("bad job name", "jobs:\n  'bad name': { command: [\"/bin/true\"] }\n"),
        ("cron: minute out of range", job('    command: ["/bin/true"]\n    schedule: "61 * * * *"')),
        ("cron: too few fields", job('    command: ["/bin/true"]\n    schedule: "* * *"')),
        ("cron: bad step", job('    command: ["/bin/true"]\n    schedule: "*/0 * * * *"')),
        ("cron: reversed range", job('    command: ["/bin/true"]\n    schedule: "5-1 * * * *"')),
        ("cron: unknown macro", job('    command: ["/bin/true"]\n    schedule: "@fortnightly"')),
        ("cron: garbage", job('    command: ["/bin/true"]\n    schedule: "every day at noon"')),
        ("calendar: bad weekday", job('    command: ["/bin/true"]\n    on_calendar: "Mun *-*-* 00:00"')),
        ("calendar: bad time", job('    command: ["/bin/true"]\n    on_calendar: "*-*-* 25:00"')),
        ("duration: unknown unit", job('    command: ["/bin/true"]\n    timeout: 10x')),
        ("duration: negative", job('    command: ["/bin/true"]\n    timeout: -5s')),
        ("duration: empty", job('    command: ["/bin/true"]\n    every: ""')),
        ("duration: zero interval", job('    command: ["/bin/true"]\n    every: 0s')),
        ("size: bad output_tail", "daemon:\n  history: { output_tail: 12 parsecs }\njobs: {}\n"),
        ("unknown user", job('    command: ["/bin/true"]\n    user: no-such-user-jr')),
        ("unknown group", job('    command: ["/bin/true"]\n    group: no-such-group-jr')),
        ("unknown time zone", job('    command: ["/bin/true"]\n    time_zone: Mars/Olympus')),
        ("unknown pool", job('    command: ["/bin/true"]\n    pool: nowhere')),
        ("bad overlap policy", job('    command: ["/bin/true"]\n    overlap: sometimes')),
        ("retry attempts zero", job('    command: ["/bin/true"]\n    retry: { attempts: 0 }')),
        ("duplicate job names across includes", f"include: [\"{include_dir}/*.yaml\"]\njobs: {{}}\n"),
        ("include that is a directory", f"include: [\"{directory}/dir.yaml\"]\njobs: {{}}\n"),
        ("include that does not exist", f"include: [\"{directory}/missing.yaml\"]\njobs: {{}}\n"),
        ("duplicate key in a mapping", "jobs:\n  a: { command: [\"/bin/true\"] }\n  a: { command: [\"/bin/false\"] }\n"),
        ("empty file", ""),
        ("only a comment", "# nothing here\n"),
        ("binary garbage", bytes(random.Random(7).randrange(256) for _ in range(4096))),
        ("10 MB file", "jobs:\n" + "".join(f"  j{i}: {{ command: [\"/bin/true\"], schedul: x }}\n" for i in range(180_000))),
        ("deeply nested YAML", "jobs: " + "[" * 10_000 + "]" * 10_000 + "\n"),
        ("YAML aliases bomb", "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
         "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
         "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
         "g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]\njobs: {}\n"),
        ("NUL byte in a command", job('    command: ["/bin/echo", "a\\0b"]')),
        ("timeout beyond any deadline", job('    command: ["/bin/true"]\n    timeout: 9223372036854.9s')),
        ("duration of 20 digits", job('    command: ["/bin/true"]\n    every: 99999999999999999999s')),
        ("calendar epoch beyond year 2199", job('    command: ["/bin/true"]\n    on_calendar: "@99999999999999"')),
        ("group (gid_t)-1", job('    command: ["/bin/true"]\n    group: 4294967295')),
        ("user -1", job('    command: ["/bin/true"]\n    user: "-1"')),
        ("count beyond 64 bits", "daemon:\n  max_concurrent_runs: 9223372036854775808\njobs: {}\n"),
        ("size beyond 64 bits", "daemon:\n  history: { output_tail: 99999999999999999999999GiB }\njobs: {}\n"),
    ]
    return corpus


def torture_bad_configs():
    directory = tempfile.mkdtemp(prefix="jobrunner-torture-cfg-")
    corpus = bad_configs(directory)
    if ARGS.smoke:
        corpus = corpus[::4] + [c for c in corpus if c[0] in ("10 MB file", "YAML aliases bomb", "deeply nested YAML",
                                                               "timeout beyond any deadline", "calendar epoch beyond year 2199",
                                                               "group (gid_t)-1")]
    good = 'jobs:\n  keep: { command: ["/bin/true"], schedule: "@daily" }\n'
    daemon = Daemon(good)
    try:
        daemon.ready()
        for name, text in corpus:
            path = os.path.join(directory, "bad.yaml")
            with open(path, "wb") as f:
                f.write(text if isinstance(text, bytes) else text.encode())
            # At start: --check-config and a real start both refuse with a positioned message.
            check = subprocess.run([os.path.join(ARGS.bin, "jobrunnerd"), "--check-config", "--config", path],
                                   capture_output=True, text=True, errors="replace", timeout=60)
            # file:line:column: message (the file may be an include).
            head = check.stderr.split(": ", 1)[0].rsplit(":", 2)
            positioned = len(head) == 3 and head[0].startswith(directory) and head[1].isdigit() and head[2].isdigit()
            case("bad config at start", name, check.returncode == 78 and positioned,
                 f"exit {check.returncode}: {check.stderr[:200]!r}")
            # On reload: the daemon keeps its configuration and stays up.
            with open(daemon.config, "wb") as f:
                f.write(text if isinstance(text, bytes) else text.encode())
            start = time.monotonic()
            daemon.proc.send_signal(signal.SIGHUP)
            daemon.wait_for("READY=1", after=start, timeout=60)
            status, body = api(daemon.sock, "GET", "/v1/status")
            reload = body["config"]["last_reload"]
            kept = status == 200 and reload["result"] == "failed" and body["jobs"] == 1 and daemon.proc.poll() is None
            case("bad config on reload", name, kept, f"{reload}")
        # Values that used to trap, now valid: a reload with them applies and the daemon stays up.
        extreme = ('jobs:\n  keep: { command: ["/bin/true"], schedule: "@daily" }\n'
                   '  far: { command: ["/bin/true"], timeout: 1.123456789d, random_delay: 36500d, every: 36500d, kill_grace: 0.000000000001s }\n')
        with open(daemon.config, "w") as f:
            f.write(extreme)
        start = time.monotonic()
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_for("READY=1", after=start, timeout=60)
        status, body = api(daemon.sock, "GET", "/v1/status")
        case("bad config on reload", "extreme but valid values (1.123456789d, 36500d, 1e-12 s) apply",
             status == 200 and body["config"]["last_reload"]["result"] == "ok" and body["jobs"] == 2 and daemon.proc.poll() is None,
             f"{body['config']['last_reload'] if body else status}")
    finally:
        daemon.stop()
        shutil.rmtree(directory, ignore_errors=True)


# MARK: - Control socket abuse

def torture_socket():
    config = 'jobs:\n  beat: { command: ["/bin/true"], schedule: "* * * * * *" }\n'
    daemon = Daemon(config)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    idle = 100 if ARGS.smoke else 1000
    try:
        daemon.ready()
        rss_before = daemon.rss_kib()
        started = time.time()
        rng = random.Random(11)

        def send(data, read=True):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(10)
            try:
                s.connect(daemon.sock)
                s.sendall(data)
                if read:
                    s.shutdown(socket.SHUT_WR)
                    return s.recv(4096)
            except OSError as error:
                return str(error).encode()
            finally:
                s.close()
        for _ in range(20 if ARGS.smoke else 200):
            send(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 2048))))
        for cut in (5, 16, 30):
            send(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n"[:cut])
        def send_while_reading(data, limit=20):
            """Sends `data` while watching for an answer: a daemon that refused the head early
            may stop reading (the send would then block) with its answer already waiting."""
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.connect(daemon.sock)
                deadline = time.monotonic() + limit
                sent = 0
                while time.monotonic() < deadline:
                    readable, writable, _ = select.select([s], [s] if sent < len(data) else [], [], 0.5)
                    if readable:
                        return s.recv(4096)
                    if writable:
                        sent += s.send(data[sent:sent + 65536])
                return b"timed out"
            except OSError as error:
                return str(error).encode()
            finally:
                s.close()
        big = send_while_reading(b"GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n")
        # Refused with 400 (heads are limited to 16 KiB), or the connection closed while the
        # header was still being sent.
        refused = big.startswith(b"HTTP/1.1 400") or big == b"" or b"Broken pipe" in big or b"reset" in big
        case("socket abuse", "1 MB header refused", refused and daemon.proc.poll() is None, big[:80])
        # Idle connections held open, and slowloris: a request dribbled a byte at a time.
        holders = []
        for _ in range(idle):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(daemon.sock)
                holders.append(s)
            except OSError:
                s.close()
        slow = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        slow.connect(daemon.sock)
        stop = threading.Event()

        def dribble():
            for byte in b"GET /v1/status HTTP/1.1\r\nHost: x\r\n":
                if stop.wait(0.5):
                    return
                try:
                    slow.send(bytes([byte]))
                except OSError:
                    return
        threading.Thread(target=dribble, daemon=True).start()
        time.sleep(3)
        # The API still answers a well-behaved client, sooner or later (its limits shed the abusers).
        ok = wait_until(lambda: _status_ok(daemon), 30, "a status answer during abuse")
        case("socket abuse", f"{idle} idle connections + slowloris: API still answers", ok)
        stop.set()
        for s in holders:
            s.close()
        slow.close()
        rss_after = daemon.rss_kib()
        case("socket abuse", "daemon alive", daemon.proc.poll() is None)
        case("socket abuse", "memory bounded", rss_after - rss_before < 64 * 1024, f"RSS +{(rss_after - rss_before) // 1024} MB")
        rows = daemon.history(f"SELECT started_at - scheduled_at FROM runs WHERE job = 'beat' AND scheduled_at > {int(started * 1e6)}")
        lateness = [r[0] / 1000 for r in rows if r[0] is not None]
        p99 = percentile(lateness, 99)
        case("socket abuse", f"a job due meanwhile starts on time (p99 lateness {p99:.1f} ms over {len(lateness)} runs)",
             lateness and p99 < 1000, f"{lateness[-5:]}")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        daemon.stop()


def _status_ok(daemon):
    try:
        return api(daemon.sock, "GET", "/v1/status")[0] == 200
    except OSError:
        return False


# MARK: - Misbehaving jobs

def torture_jobs():
    """Jobs that misbehave. Their processes carry a marker in their environment (inherited by
    every child, kept across exec and setsid), so "nothing left running" is what /proc says."""
    marker = f"jrbad{random.randrange(1 << 30)}"
    big = "100M" if ARGS.smoke else "1G"
    children = 50 if ARGS.smoke else 500
    jobs = {
        "ignores_term": ("trap '' TERM; sleep 30", "timeout: 1s\n    kill_grace: 1s", "timed_out"),
        "double_fork": ("(setsid sh -c 'sleep 60' &) ; exit 0", "", "succeeded"),
        "prints_a_lot": (f"yes 0123456789abcdefghijklmnopqrstuvwxyz | head -c {big}", "timeout: 5m", "succeeded"),
        "long_line": ("head -c 10000000 /dev/zero | tr -c y y; echo", "", "succeeded"),
        "closes_stdout": ("exec >&- 2>&-; sleep 0.2", "", "succeeded"),
        "killed_by_signal": ("kill -SEGV $$", "", "signalled"),
        "forks_many": (f"for i in $(seq {children}); do sleep 60 & done", "", "succeeded"),
        "ignores_term_forks_many": (f"trap '' TERM; for i in $(seq {children}); do sh -c 'trap \"\" TERM; exec sleep 60' & done; wait",
                                    "timeout: 1s\n    kill_grace: 1s", "timed_out"),
    }
    lines = ["daemon:\n  max_concurrent_runs: 16\njobs:"]
    for name, (shell, extra, _) in jobs.items():
        lines.append(f"  {name}:\n    shell: \"{shell.replace(chr(34), chr(92) + chr(34))}\"\n"
                     f"    environment: {{ JR_TORTURE: {marker} }}\n    {extra}".rstrip())
    lines.append(f"  missing_binary:\n    command: [\"/nonexistent/{marker}\"]")
    daemon = Daemon("\n".join(lines) + "\n")
    try:
        daemon.ready()
        expected = {name: outcome for name, (_, _, outcome) in jobs.items()}
        expected["missing_binary"] = "spawn_failed"
        peak = 0
        for name in expected:
            api(daemon.sock, "POST", f"/v1/jobs/{name}/run")
        # Every run's processes, collected while the runs are alive.
        collected = set()
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            peak = max(peak, daemon.rss_kib())
            collected.update(processes_carrying("JR_TORTURE", marker))
            done = daemon.history("SELECT job, outcome FROM runs WHERE outcome IS NOT NULL")
            if len(done) >= len(expected):
                break
            time.sleep(0.2)
        outcomes = dict(daemon.history("SELECT job, outcome FROM runs WHERE outcome IS NOT NULL"))
        for name, outcome in expected.items():
            case("misbehaving job", f"{name} ends {outcome}", outcomes.get(name) == outcome, f"got {outcomes.get(name)}")
        try:
            wait_until(lambda: not processes_carrying("JR_TORTURE", marker), 10, "nothing left running")
        except RuntimeError:
            pass
        left = processes_carrying("JR_TORTURE", marker)
        still = [p for p in collected if os.path.exists(f"/proc/{p}") and _state(p) not in ("Z", "gone")]
        case("misbehaving job", f"nothing left running ({len(collected)} processes seen while the runs lived)",
             len(collected) >= children and not left and not still, f"by marker {left[:5]}, of those seen {still[:5]}")
        case("misbehaving job", f"daemon memory bounded while a job printed {big}B", peak < 200 * 1024, f"peak RSS {peak // 1024} MB")
        case("misbehaving job", "daemon alive", daemon.proc.poll() is None)
    except RuntimeError as error:
        case("misbehaving job", "all ended", False, str(error))
    finally:
        daemon.stop()
        kill_carrying("JR_TORTURE", marker)


def _state(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return "gone"


# MARK: - State directory full or read-only

libc = ctypes.CDLL(None, use_errno=True)


def torture_state():
    if os.getuid() != 0:
        case("state directory", "full / read-only (needs root to mount a small tmpfs)", True, "skipped: not root")
        print("note: state directory cases skipped: they need root to mount a small tmpfs", file=sys.stderr)
        return
    parent = tempfile.mkdtemp(prefix="jobrunner-torture-state-")
    state = os.path.join(parent, "state")
    os.makedirs(state)
    if libc.mount(b"tmpfs", state.encode(), b"tmpfs", 0, b"size=2m") != 0:
        case("state directory", "mount a small tmpfs", False, os.strerror(ctypes.get_errno()))
        return
    if os.stat(state).st_dev == os.stat(parent).st_dev:
        # Never fill the machine's own file system.
        case("state directory", "mount a small tmpfs", False, f"{state} is not a mount point")
        return
    ledger = Ledger(os.path.join(parent, "ledger"))
    config = f'jobs:\n  tick: {{ shell: "{ledger.append}; echo tick", schedule: "* * * * * *", overlap: allow }}\n'
    daemon = _Daemon(ARGS.bin, config, directory=parent, state=state)
    try:
        daemon.ready()
        start = int(time.time()) + 1
        wait_until(lambda: daemon.history("SELECT count(*) FROM runs WHERE outcome = 'succeeded'")[0][0] >= 2, 20, "runs")
        # Full: fill the rest of the tmpfs.
        filler = os.path.join(state, "filler")
        with open(filler, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
            except OSError:
                pass
        failing = wait_until(lambda: (api(daemon.sock, "GET", "/v1/status")[1] or {}).get("history_error"), 30, "history_error")
        full_at = int(time.time())
        case("state directory", "full: the failure is reported", failing == "disk full", failing)
        # Runs go on: counted in the lines they wrote while the disk was full.
        try:
            wait_until(lambda: sum(1 for line in ledger.lines() if line["second"] > full_at) >= 3, 20, "runs while full")
            went_on = True
        except RuntimeError:
            went_on = False
        still_full = (api(daemon.sock, "GET", "/v1/status")[1] or {}).get("history_error") == "disk full"
        case("state directory", "full: runs go on", went_on and still_full,
             f"{sum(1 for line in ledger.lines() if line['second'] > full_at)} runs while full, still full: {still_full}")
        os.unlink(filler)
        wait_until(lambda: not api(daemon.sock, "GET", "/v1/status")[1].get("history_error"), 30, "recovery")
        # Read-only mid-run: Linux refuses to remount a file system read-only while a file on it
        # is open for writing (EBUSY), so the only ways there are device errors, which reach
        # the daemon as EIO/EROFS on a write, the same path as the full disk above.
        result = libc.mount(b"tmpfs", state.encode(), b"tmpfs", 0x20 | 0x1, b"size=2m")  # MS_REMOUNT | MS_RDONLY
        if result == 0:
            failing = wait_until(lambda: (api(daemon.sock, "GET", "/v1/status")[1] or {}).get("history_error"), 30, "history_error")
            case("state directory", "read-only: the failure is reported", bool(failing), failing)
            libc.mount(b"tmpfs", state.encode(), b"tmpfs", 0x20, b"size=2m")  # MS_REMOUNT
            wait_until(lambda: not api(daemon.sock, "GET", "/v1/status")[1].get("history_error"), 30, "recovery")
        else:
            print(f"note: read-only remount refused ({os.strerror(ctypes.get_errno())}) while the database is open; "
                  "covered by the full-disk case", file=sys.stderr)
        recovered = int(time.time())
        wait_until(lambda: any(line["second"] > recovered for line in ledger.lines()), 10, "a run after recovery")
        end = int(time.time()) - 1
        daemon.stop(keep=True)
        audit = ledger.audit(["tick"], start, end)
        rows = daemon.history("SELECT id, job, scheduled_at, COALESCE(outcome, '') FROM runs")
        problems = ledger.reconcile(rows, {"tick"})
        case("state directory", f"recovered, nothing lost ({audit['counted']} runs, each in the history)",
             audit["missing_count"] == 0 and audit["doubled_count"] == 0 and not problems,
             f"missing {audit['missing']}, doubled {audit['doubled']}, {problems[:3]}")
        LOST[0] += audit["missing_count"] + audit["doubled_count"] + len(problems)
        case("state directory", "daemon alive until stopped", daemon.proc.returncode == 0, f"exit {daemon.proc.returncode}")
    finally:
        daemon.stop()
        libc.umount2(state.encode(), 2)
        shutil.rmtree(parent, ignore_errors=True)


# MARK: - Trust: leaks, hooks, followers, reloads

def descriptors(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def idle_descriptors(daemon):
    wait_until(lambda: api(daemon.sock, "GET", "/v1/status")[1]["running"] == 0, 60, "the daemon idle")
    counts = []

    def steady():
        counts.append(descriptors(daemon.proc.pid))
        return len(counts) >= 3 and len(set(counts[-3:])) == 1
    wait_until(steady, 20, "a steady descriptor count")
    return counts[-1]


def run_many(daemon, job, count, parallel=8):
    """Runs `job` `count` times through the API (`parallel` at a time, each waiting); returns
    the outcomes seen."""
    outcomes = {}
    lock = threading.Lock()

    def worker(n):
        connection = UnixHTTP(daemon.sock, timeout=120)
        for _ in range(n):
            status, body = api(daemon.sock, "POST", f"/v1/jobs/{job}/run?wait=true", connection=connection)
            with lock:
                outcomes[body.get("outcome") if body else status] = outcomes.get(body.get("outcome") if body else status, 0) + 1
        connection.close()
    threads = [threading.Thread(target=worker, args=(count // parallel + (1 if i < count % parallel else 0),)) for i in range(parallel)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def torture_trust():
    marker = f"jrtrust{random.randrange(1 << 30)}"
    fires = 100 if ARGS.smoke else 1000
    config = f"""daemon:
  max_concurrent_runs: 8
jobs:
  missing: {{ command: ["no-such-binary-{marker}"], overlap: allow, max_instances: 16 }}
  noexec: {{ command: ["/etc/hostname"], overlap: allow, max_instances: 16 }}
  nodir: {{ command: ["/bin/true"], working_directory: /no/such/dir, overlap: allow, max_instances: 16 }}
  nolimit: {{ command: ["/bin/true"], limits: {{ nofile: 2147483647 }}, overlap: allow, max_instances: 16 }}
  hooked:
    shell: "exit 1"
    environment: {{ JR_TORTURE: {marker} }}
    on_failure: "setsid sleep 999 & sleep 1"
  escapee:
    shell: "setsid sh -c 'trap \\"\\" TERM; exec sleep 999' & sleep 0.2"
    environment: {{ JR_TORTURE: {marker} }}
  loud:
    shell: "yes $(head -c 8000 /dev/zero | tr '\\\\0' x)"
    timeout: {5 if ARGS.smoke else 30}s
    kill_grace: 1s
"""
    daemon = Daemon(config)
    try:
        daemon.ready()
        # Spawn failures of every kind leave the daemon's descriptors as they were.
        for job in ("missing", "noexec", "nodir", "nolimit"):
            run_many(daemon, job, 16)
        before = idle_descriptors(daemon)
        results = {job: run_many(daemon, job, fires) for job in ("missing", "noexec", "nodir", "nolimit")}
        after = idle_descriptors(daemon)
        all_failed = all(outcomes == {"spawn_failed": fires} for outcomes in results.values())
        case("trust", f"{4 * fires} failed starts of 4 kinds leave the descriptors as they were ({before} → {after})",
             all_failed and after == before, f"{results}")
        # A hook's escapee does not outlive it; an escapee that ignores SIGTERM is swept and
        # logged once.
        api(daemon.sock, "POST", "/v1/jobs/hooked/run?wait=true")
        api(daemon.sock, "POST", "/v1/jobs/escapee/run?wait=true")
        try:
            wait_until(lambda: not processes_carrying("JR_TORTURE", marker), 15, "the hook's and the escapee's processes gone")
        except RuntimeError:
            pass
        case("trust", "nothing a hook starts outlives it; escapees are swept", not processes_carrying("JR_TORTURE", marker),
             f"{processes_carrying('JR_TORTURE', marker)}")
        with open(os.path.join(daemon.dir, "log")) as f:
            sweeps = [line for line in f if "killed processes the run left outside its process group" in line]
        pids = [p for line in sweeps for p in line.split("pids=", 1)[1].split()[0].split(",")] if sweeps else []
        case("trust", f"each swept process logged once ({len(pids)} pids in {len(sweeps)} sweeps)",
             len(sweeps) >= 2 and len(pids) == len(set(pids)), f"{sweeps[:3]}")
        # Ten followers that never read, on a job printing as fast as the daemon reads.
        run = api(daemon.sock, "POST", "/v1/jobs/loud/run")[1]
        wait_until(lambda: api(daemon.sock, "GET", f"/v1/runs/{run['id']}")[1]["run"]["state"] == "running", 10, "the loud run")
        rss_before = daemon.rss_kib()
        stalled = []
        for _ in range(10):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(daemon.sock)
            s.sendall(f"GET /v1/runs/{run['id']}/output?follow=true HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            stalled.append(s)
        peak = rss_before
        deadline = time.monotonic() + (4 if ARGS.smoke else 28)
        while time.monotonic() < deadline:
            peak = max(peak, daemon.rss_kib())
            time.sleep(0.2)
        for s in stalled:
            s.close()
        case("trust", f"10 stalled followers of a loud job: RSS +{(peak - rss_before) // 1024} MB (at most 32)",
             peak - rss_before <= 32 * 1024 and daemon.proc.poll() is None, f"{rss_before // 1024} → {peak // 1024} MB")
        # Twenty reloads asked at once are answered one at a time, in order.
        answers = []
        lock = threading.Lock()

        def reload():
            sent = time.monotonic()
            status, body = api(daemon.sock, "POST", "/v1/reload")
            with lock:
                answers.append((sent, time.monotonic(), body["generation"] if body else -1, body["result"] if body else status))
        start = time.monotonic()
        threads = [threading.Thread(target=reload) for _ in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        # In order: a request sent after another was answered gets a generation no earlier.
        out_of_order = [(a[2], b[2]) for a in answers for b in answers if a[1] < b[0] and a[2] > b[2]]
        generations = sorted(g for _, _, g, _ in answers)
        protocol = [("reloading" if "RELOADING=1" in m.split("\n") else "ready") for at, m in daemon.messages
                    if at >= start and ("RELOADING=1" in m.split("\n") or "READY=1" in m.split("\n"))]
        alternate = all(a != b for a, b in zip(protocol, protocol[1:]))
        case("trust", f"20 concurrent reloads: {protocol.count('reloading')} reloads, answered in generation order",
             not out_of_order and alternate and all(r == "ok" for _, _, _, r in answers),
             f"{generations} out of order {out_of_order[:3]} {protocol[:8]}")
        case("trust", "daemon alive", daemon.proc.poll() is None)
        # No per-run files in the runtime directory (notify sockets are abstract names).
        case("trust", "no per-run files in the runtime directory", not os.path.exists(os.path.join(daemon.dir, "run", "runs")),
             f"{os.listdir(os.path.join(daemon.dir, 'run')) if os.path.isdir(os.path.join(daemon.dir, 'run')) else '-'}")
    finally:
        daemon.stop()
        kill_carrying("JR_TORTURE", marker)


# MARK: - Cluster

def torture_cluster():
    """Three nodes on one PostgreSQL, jobs due every second appending to one shared ledger; at
    random instants one node is killed (-9, with the processes it started, as a machine dies)
    and restarted after 0-5 s, or frozen (SIGSTOP) past its lease and resumed; a CPU hog on one
    core throughout. Counted in the ledger: every occurrence exactly once, except those the
    history marks interrupted (at most once); none missing otherwise."""
    group = "cluster"
    if not os.path.isdir("/usr/lib/postgresql"):
        case(group, "PostgreSQL installed", False, "make test installs it")
        return
    cycles = 3 if ARGS.smoke else 20
    lease = 4
    names = ["n1", "n2", "n3"]
    jobs = [f"job{i}" for i in range(1, 11)]
    # job1-job6 print and exit; job7-job10 go on for 0.3 s after their line, so some are cut
    # by a kill; job9 and job10 are retried (an interrupted run may run again, once per attempt).
    retried = {"job9", "job10"}

    def definition(job):
        number = int(job[3:])
        shell = ledger.append + ("; sleep 0.3" if number >= 7 else "")
        retry = ", retry: { attempts: 2, backoff: 0s }" if job in retried else ""
        return f'  {job}: {{ shell: "{shell}", every: 1s, overlap: allow, max_instances: 10{retry} }}\n'

    url = start_postgres()
    directory = tempfile.mkdtemp(prefix="jobrunner-torture-cluster-")
    ledger = Ledger(os.path.join(directory, "ledger"))
    config = f"""daemon:
  shutdown_grace: 2s
  # Every run stays in the history for the count (the default keeps 100 per job).
  history: {{ keep_per_job: 1000000 }}
  cluster: {{ database: "{url}", lease: {lease}s }}
jobs:
""" + "".join(definition(job) for job in jobs)
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"], preexec_fn=lambda: os.sched_setaffinity(0, {0}))
    nodes = {}
    try:
        for name in names:
            os.makedirs(os.path.join(directory, name))
            nodes[name] = _Daemon(ARGS.bin, config, ["--node-name", name], directory=os.path.join(directory, name))
        for node in nodes.values():
            node.ready()
        start = int(time.time()) + 2
        seed = ARGS.seed if ARGS.seed is not None else random.randrange(1 << 31)
        rng = random.Random(seed)
        kills = freezes = 0
        for _ in range(cycles):
            time.sleep(rng.uniform(1.0, 3.0))
            name = rng.choice(names)
            victim = nodes[name]
            if rng.random() < 0.5:
                victim.proc.kill()
                victim.proc.wait()
                kill_carrying("JOBRUNNER_NODE", {name})
                time.sleep(rng.uniform(0, 5))
                nodes[name] = _Daemon(ARGS.bin, config, ["--node-name", name], directory=victim.dir)
                nodes[name].ready()
                kills += 1
            else:
                victim.proc.send_signal(signal.SIGSTOP)
                time.sleep(lease + rng.uniform(1.0, 3.0))
                victim.proc.send_signal(signal.SIGCONT)
                freezes += 1
        # Every node up and past a sweep, then the schedule runs on a while.
        end = int(time.time()) + 2 * lease
        wait_until(lambda: all(sum(1 for line in ledger.lines() if line["job"] == job and line["second"] > end + 1) > 0
                               for job in jobs), 6 * lease + 30, "every job to run past the end of the window")
        for node in nodes.values():
            node.proc.send_signal(signal.SIGTERM)
        for node in nodes.values():
            node.proc.wait(timeout=30)
        interrupted = {}
        # Excused: interrupted runs that may have started (dispatched). One interrupted before
        # dispatch must have run elsewhere.
        for job, second in psql(url, """SELECT job, scheduled_at / 1000000 FROM jobrunner.runs
                                        WHERE outcome = 'interrupted' AND (dispatched_at IS NOT NULL OR started_at IS NOT NULL)"""):
            interrupted.setdefault(job, set()).add(int(second))
        once = [job for job in jobs if job not in retried]
        audit = ledger.audit(once, start, end, excused=interrupted)
        # Retried jobs: every occurrence present, at most once per attempt (distinct run ids, at
        # most two lines), more than once only where the history says one was interrupted.
        retries = ledger.audit(sorted(retried), start, end, excused=interrupted)
        per_occurrence = {}
        for line in ledger.lines():
            if line["job"] in retried and start <= line["second"] <= end:
                per_occurrence.setdefault((line["job"], line["second"]), []).append(line["run_id"])
        over = {key: ids for key, ids in per_occurrence.items()
                if len(ids) > 2 or len(set(ids)) != len(ids) or (len(ids) == 2 and key[1] not in interrupted.get(key[0], ()))}
        audit["missing_count"] += retries["missing_count"]
        audit["missing"].update(retries["missing"])
        audit["counted"] += retries["counted"]
        audit["doubled_count"] += len(over)
        audit["doubled"].update({f"{job}@{second}": ids for (job, second), ids in over.items()})
        twice = sum(1 for ids in per_occurrence.values() if len(ids) == 2)
        excused = sum(1 for job in jobs for second in interrupted.get(job, ()) if start <= second <= end)
        ran_excused = len({(line["job"], line["second"]) for line in ledger.lines() if line["job"] in jobs
                           and start <= line["second"] <= end and line["second"] in interrupted.get(line["job"], ())})
        expected = len(jobs) * (end - start + 1)
        detail = (f"seed {seed}: {kills} kill -9 + restart, {freezes} SIGSTOP past the lease; {expected} occurrences, "
                  f"{audit['counted']} lines; interrupted {excused} (of them ran {ran_excused}; retried and ran twice {twice}); "
                  f"missing {audit['missing_count']}, doubled {audit['doubled_count']}")
        print(f"cluster: {detail}")
        history = []
        suspects = [key.partition("@")[::2] for key in audit["doubled"] if isinstance(key, str) and "@" in key]
        suspects += [(job, second) for job, seconds in audit["missing"].items() for second in seconds]
        for job, second in suspects[:4]:
            history += psql(url, f"""SELECT id, node, attempt, outcome, detail, dispatched_at IS NOT NULL, started_at IS NOT NULL
                                   FROM jobrunner.runs WHERE job = '{job}' AND scheduled_at / 1000000 = {int(second)} ORDER BY id""")
            history += [["claim"] + row for row in psql(url, f"""SELECT node, claimed_at FROM jobrunner.occurrences
                                   WHERE job = '{job}' AND occurrence / 1000000 = {int(second)}""")]
        case(group, "every occurrence exactly once, interrupted ones at most once", audit["missing_count"] == 0 and audit["doubled_count"] == 0,
             f"{detail}; missing {dict(list(audit['missing'].items())[:3])}, doubled {dict(list(audit['doubled'].items())[:3])}; "
             f"their history: {history}")
        LOST[0] += audit["missing_count"] + audit["doubled_count"]
    finally:
        hog.kill()
        hog.wait()
        for node in nodes.values():
            if node.proc.poll() is None:
                node.proc.send_signal(signal.SIGCONT)
                node.proc.kill()
                node.proc.wait()
        kill_carrying("JOBRUNNER_NODE", set(names))
        stop_postgres()
        shutil.rmtree(directory, ignore_errors=True)


TORTURES = {
    "crash": torture_crash_cycles,
    "configs": torture_bad_configs,
    "socket": torture_socket,
    "jobs": torture_jobs,
    "state": torture_state,
    "trust": torture_trust,
    "cluster": torture_cluster,
}


def main():
    global ARGS
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--only", default="")
    parser.add_argument("--seed", type=int, default=None, help="for the random instants of the cluster case")
    ARGS = parser.parse_args()
    for name in [n for n in ARGS.only.split(",") if n] or list(TORTURES):
        try:
            TORTURES[name]()
        except Exception as error:
            case(name, "ran to the end", False, repr(error))
    passed = sum(1 for c in CASES if c[2])
    groups = {}
    for group, _, ok, _ in CASES:
        groups.setdefault(group, [0, 0])
        groups[group][0] += 1
        groups[group][1] += ok
    for group, (tried, ok) in groups.items():
        print(f"{group:24} {ok}/{tried} passed")
    print(f"torture: {len(CASES)} cases tried, {passed} passed, {len(CASES) - passed} failed, {LOST[0]} lost"
          f"{' (reduced sizes)' if ARGS.smoke else ''}")
    sys.exit(0 if passed == len(CASES) and LOST[0] == 0 else 1)


if __name__ == "__main__":
    main()
