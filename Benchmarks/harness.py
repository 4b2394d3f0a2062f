"""Shared by the benchmarks and the torture suite: a real jobrunnerd in a temporary directory,
its notify messages, its control API over the unix socket."""
import http.client
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path, timeout=30):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def api(sock, method, path, connection=None):
    conn = connection or UnixHTTP(sock)
    conn.request(method, path, headers={"Content-Length": "0"} if method == "POST" else {})
    response = conn.getresponse()
    body = response.read()
    if connection is None:
        conn.close()
    return response.status, (json.loads(body) if body else None)


def api_text(sock, path):
    """GET `path` and return the body as text (for /metrics)."""
    conn = UnixHTTP(sock)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def metric(sock, name):
    """The value of one sample of /metrics (`name` with its labels as exposed), or 0 if absent."""
    status, text = api_text(sock, "/metrics")
    if status != 200:
        raise RuntimeError(f"/metrics answered {status}")
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def percentile(values, p):
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, int(round(p / 100 * (len(ordered) - 1)))))
    return ordered[index]


class Daemon:
    """A jobrunnerd on a config, with its own NOTIFY_SOCKET to see READY=1."""

    def __init__(self, bin_dir, config, extra=(), directory=None, state=None):
        """With `directory`, starts in that directory, on the state an earlier daemon left."""
        self.dir = directory or tempfile.mkdtemp(prefix="jobrunner-bench-")
        self.config = os.path.join(self.dir, "jobrunner.yaml")
        with open(self.config, "w") as f:
            f.write(config)
        self.sock = os.path.join(self.dir, "s.sock")
        self.state = state or os.path.join(self.dir, "state")
        self.notify_path = os.path.join(self.dir, "notify.sock")
        if os.path.exists(self.notify_path):
            os.unlink(self.notify_path)
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(self.notify_path)
        self.messages = []
        self.cond = threading.Condition()
        threading.Thread(target=self._read_notify, daemon=True).start()
        env = dict(os.environ, NOTIFY_SOCKET=self.notify_path)
        self.log = open(os.path.join(self.dir, "log"), "a")
        self.proc = subprocess.Popen(
            [os.path.join(bin_dir, "jobrunnerd"), "--config", self.config, "--state-directory", self.state,
             "--socket", self.sock, "--runtime-directory", os.path.join(self.dir, "run"), "--log-format", "text",
             "--log-level", "warning", *extra],
            stdout=self.log, stderr=self.log, env=env)

    def _read_notify(self):
        while True:
            try:
                data = self.notify.recv(65536).decode()
            except OSError:
                return
            with self.cond:
                self.messages.append((time.monotonic(), data))
                self.cond.notify_all()

    def wait_for(self, text, after=0.0, timeout=60):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for at, message in self.messages:
                    if at >= after and text in message.split("\n"):
                        return at
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise RuntimeError(f"daemon never sent {text}; log: {open(self.log.name).read()[-2000:]}")
                self.cond.wait(left)

    def ready(self):
        return self.wait_for("READY=1")

    def thread_status(self, key):
        """`key` of /proc/PID/task/TID/status for every thread alive now: {tid: value}."""
        values = {}
        for task in os.listdir(f"/proc/{self.proc.pid}/task"):
            try:
                with open(f"/proc/{self.proc.pid}/task/{task}/status") as f:
                    for line in f:
                        if line.startswith(key + ":"):
                            values[int(task)] = int(line.split()[1])
            except FileNotFoundError:
                pass
        return values

    def thread_names(self):
        """{tid: name} of every thread alive now."""
        names = {}
        for task in os.listdir(f"/proc/{self.proc.pid}/task"):
            try:
                with open(f"/proc/{self.proc.pid}/task/{task}/comm") as f:
                    names[int(task)] = f.read().strip()
            except FileNotFoundError:
                pass
        return names

    def count_per_thread(self, key, seconds, every=0.1):
        """How much `key` (a per-thread counter such as voluntary_ctxt_switches) grew over
        `seconds`, summed per thread id, sampled every `every` seconds so that threads that
        start or end meanwhile are counted too. Returns (total, threads seen, threads that came
        or went, {thread name: growth}). A counter that went down is an impossible reading."""
        first = self.thread_status(key)
        names = self.thread_names()
        last = dict(first)
        born = set()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(every)
            now = self.thread_status(key)
            for tid, value in now.items():
                if tid not in first and tid not in born:
                    born.add(tid)
                    names.update(self.thread_names())
                if value < last.get(tid, 0):
                    raise MeasurementError(f"thread {tid}: {key} went from {last[tid]} to {value}")
                last[tid] = value
        gone = set(first) - set(self.thread_status(key))
        by_name = {}
        for tid, value in last.items():
            name = names.get(tid, "?")
            by_name[name] = by_name.get(name, 0) + value - first.get(tid, 0)
        total = sum(by_name.values())
        return total, len(last), len(born) + len(gone), by_name

    def status_kib(self, key):
        """A kB figure of /proc/PID/status, e.g. RssAnon."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
        raise MeasurementError(f"no {key} in /proc/{self.proc.pid}/status")

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def history(self, sql):
        connection = sqlite3.connect(os.path.join(self.state, "state.sqlite"), timeout=10)
        try:
            return connection.execute(sql).fetchall()
        finally:
            connection.close()

    def stop(self, timeout=60, keep=False):
        """SIGTERM (SIGKILL after `timeout`); removes the directory unless `keep`."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.notify.close()
        self.log.close()
        if not keep:
            shutil.rmtree(self.dir, ignore_errors=True)


def wait_until(predicate, timeout, what):
    """Polls `predicate` every 50 ms until it returns something true, within `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


class MeasurementError(RuntimeError):
    """A figure that could not be measured honestly (impossible, missing, or its premise false)."""


def processes_carrying(name, values):
    """Live (non-zombie) processes whose initial environment has `name` set to one of `values`:
    what the kernel says, which an exec or a new session does not change."""
    values = {values} if isinstance(values, str) else set(values)
    found = []
    me = os.getpid()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == me:
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                environ = f.read().split(b"\0")
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if state == "Z":
            continue
        prefix = name.encode() + b"="
        for entry in environ:
            if entry.startswith(prefix) and entry[len(prefix):].decode(errors="replace") in values:
                found.append(int(pid))
                break
    return found


def kill_carrying(name, values):
    for pid in processes_carrying(name, values):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Ledger:
    """A file jobs append `JOB SCHEDULED_TIME RUN_ID NODE` to when they run: exactly-once and
    no-loss claims are counted here, in what the jobs did, not in the daemon's history."""

    def __init__(self, path):
        self.path = path

    @property
    def append(self):
        """The shell command (inside YAML double quotes) that appends the running job's line."""
        return ("printf '%s %s %s %s\\\\n' \\\"$JOBRUNNER_JOB\\\" \\\"$JOBRUNNER_SCHEDULED_TIME\\\" "
                "\\\"$JOBRUNNER_RUN_ID\\\" \\\"${JOBRUNNER_NODE:--}\\\" >> " + self.path)

    def lines(self):
        import calendar
        result = []
        try:
            with open(self.path) as f:
                text = f.read()
        except FileNotFoundError:
            return result
        for raw in text.split("\n"):
            fields = raw.split(" ")
            if len(fields) != 4 or not fields[1].endswith("Z") or len(fields[1]) < 20:
                continue
            stamp = fields[1]
            try:
                seconds = calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S"))
            except ValueError:
                continue
            micros = seconds * 1_000_000
            if stamp[19] == ".":
                digits = stamp[20:-1]
                micros += int(digits.ljust(6, "0")[:6])
            result.append(dict(job=fields[0], scheduled_us=micros, second=micros // 1_000_000, run_id=fields[2], node=fields[3]))
        return result

    def audit(self, jobs, first, last, excused=None):
        """Per job, the whole seconds in [first, last] with no line (missing) and with more than
        one (doubled); `excused` maps a job to seconds allowed to be missing."""
        excused = excused or {}
        counts = {}
        counted = 0
        for line in self.lines():
            if line["job"] in jobs and first <= line["second"] <= last:
                counts.setdefault(line["job"], {}).setdefault(line["second"], 0)
                counts[line["job"]][line["second"]] += 1
                counted += 1
        missing = {job: [s for s in range(first, last + 1) if s not in counts.get(job, {}) and s not in excused.get(job, ())]
                   for job in jobs}
        doubled = {job: {s: n for s, n in counts.get(job, {}).items() if n > 1} for job in jobs}
        return dict(counted=counted, missing={j: m for j, m in missing.items() if m}, doubled={j: d for j, d in doubled.items() if d},
                    missing_count=sum(len(m) for m in missing.values()), doubled_count=sum(len(d) for d in doubled.values()))

    def reconcile(self, rows, jobs):
        """`rows`: (run id, job, scheduled µs, outcome). Every line must have its row; every
        succeeded row its line. Returns the problems found."""
        problems = []
        by_id = {row[0]: row for row in rows}
        lines = [line for line in self.lines() if line["job"] in jobs]
        ids = {line["run_id"] for line in lines}
        for line in lines:
            row = by_id.get(line["run_id"])
            if row is None:
                problems.append(f"a run with no history row: {line}")
            elif row[1] != line["job"] or row[2] != line["scheduled_us"]:
                problems.append(f"line {line} does not match its row {row}")
        for row in rows:
            if row[1] in jobs and row[3] == "succeeded" and row[0] not in ids:
                problems.append(f"row {row} says it succeeded but its job wrote no line")
        return problems


# MARK: - A private PostgreSQL server (unix socket only, fsync off), for the cluster figures and cases

def psql(url, sql):
    out = subprocess.run([PG["bin"] + "/psql", "-h", PG["dir"], "-U", "jobrunner", "-d", "jobrunner", "-At", "-F", "\t", "-c", sql],
                         check=True, capture_output=True, text=True, **PG["run"]).stdout
    return [line.split("\t") for line in out.splitlines() if line]


PG = {}


def start_postgres():
    versions = sorted(int(v) for v in os.listdir("/usr/lib/postgresql") if v.isdigit())
    PG["bin"] = f"/usr/lib/postgresql/{versions[-1]}/bin"
    PG["dir"] = tempfile.mkdtemp(prefix="jobrunner-bench-pg-")
    PG["run"] = {}
    if os.getuid() == 0:
        shutil.chown(PG["dir"], "nobody")
        PG["run"] = {"user": "nobody"}
    os.chmod(PG["dir"], 0o700)
    run = lambda *a: subprocess.run(list(a), check=True, capture_output=True, **PG["run"])
    run(PG["bin"] + "/initdb", "-D", PG["dir"] + "/data", "-U", "jobrunner", "--auth=trust", "-E", "UTF8", "--no-sync")
    run(PG["bin"] + "/pg_ctl", "-D", PG["dir"] + "/data", "-l", PG["dir"] + "/log", "-w", "-o",
        f"-k {PG['dir']} -c listen_addresses='' -c fsync=off -c max_connections=200", "start")
    run(PG["bin"] + "/psql", "-h", PG["dir"], "-U", "jobrunner", "-d", "postgres", "-c", "CREATE DATABASE jobrunner")
    return "postgresql://jobrunner@" + PG["dir"].replace("/", "%2F") + "/jobrunner"


def stop_postgres():
    if PG:
        subprocess.run([PG["bin"] + "/pg_ctl", "-D", PG["dir"] + "/data", "-m", "immediate", "stop"], capture_output=True, **PG["run"])
        shutil.rmtree(PG["dir"], ignore_errors=True)
