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

    def pid_status(self, key):
        total = 0
        for task in os.listdir(f"/proc/{self.proc.pid}/task"):
            try:
                with open(f"/proc/{self.proc.pid}/task/{task}/status") as f:
                    for line in f:
                        if line.startswith(key + ":"):
                            total += int(line.split()[1])
            except FileNotFoundError:
                pass
        return total

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

    def stop(self, timeout=60):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.notify.close()
        self.log.close()
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
