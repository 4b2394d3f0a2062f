#!/usr/bin/env python3
"""Fuzzes the control API of a real jobrunnerd over its unix socket, and fails on any answer
that is not a well-formed refusal or result.

    control_fuzz.py --daemon .build/debug/jobrunnerd [--seconds 30] [--seed N]

The daemon runs with a small configuration of its own in a temporary directory. Requests are
made from the API's own grammar (every endpoint, its path parameters and query keys filled with
hostile values: huge numbers, negative, fractional, percent-encoded bytes, long names, `..`),
with random headers and bodies (bad lengths, chunked bodies that lie), and a share of them has
its bytes mutated. Every request is sent as root, so mutations reach their handlers.

What must hold, for every request:
- the daemon answers with a status line and a status it documents (never 5xx), or, for a
  request whose bytes are not HTTP, answers 4xx or closes the connection; never hangs;
- a 4xx answer carries the API's JSON error body ({"error": ..., "message": ...});
and at the end: the daemon is alive, answers `GET /v1/status`, its log has no "control
request failed", and its descriptor count is back to what it was before the first request.
"""
import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time

CONFIG = """\
daemon:
  max_concurrent_runs: 4
jobs:
  quick:
    command: ["/bin/true"]
    overlap: allow
    max_instances: 8
  nightly:
    command: ["/bin/true"]
    schedule: "0 3 * * *"
  calendar:
    command: ["/bin/true"]
    on_calendar: "Mon..Fri 09:00"
"""

JOBS = ["quick", "nightly", "calendar"]
NUMBERS = ["0", "-1", "1", "10", "1000", "1001", "10000", "10001", "9223372036854775807", "9223372036854775808",
           "18446744073709551616", "1e308", "1.5", "0x10", "+5", " 5", "5 ", "", "NaN", "0.000000000000000000000000000001",
           "99999999999999999999999999999999999999"]
WORDS = ["true", "1", "yes", "false", "no", "", "TRUE", "%00", "%ff%fe", "\u00e9", "a" * 300]


def hostile_name(rng, known):
    choice = rng.random()
    if choice < 0.4:
        return rng.choice(known)
    return rng.choice([
        "", ".", "..", "../../etc", "%2e%2e%2f%2e%2e", "%00", "%zz", "a" * rng.choice([64, 1000, 9000]),
        "quick%00", "quick%2fx", "\u00e9t\u00e9", "%c3%28", "01kb3n7f4xk0q9v8w6r5t2y1zc", "01KB3N7F4XK0Q9V8W6R5T2Y1ZC",
        "0" * 26, "z" * 26, "{name}", "*", "quick?x", "quick#frag", str(rng.randint(-10**20, 10**20)),
    ])


def query(rng, keys):
    parts = []
    for _ in range(rng.randint(0, 4)):
        key = rng.choice(keys + ["x", "", "%00", "limit[]", "count%20"])
        value = rng.choice(NUMBERS + WORDS + JOBS + ["succeeded", "failed", "running", "zz", "2026-12-01T00:00:00Z",
                                                     "2026-13-45T99:99:99Z", "9999-12-31T23:59:59.999999Z", "0000-01-01T00:00:00Z",
                                                     "2026-12-01T00:00:00%2B25:00", "yesterday"])
        parts.append(key if rng.random() < 0.1 else f"{key}={value}")
    return ("?" + "&".join(parts)) if parts else ""


def request_target(rng, run_ids):
    runs = run_ids or ["01kb3n7f4xk0q9v8w6r5t2y1zc"]
    # Abbreviations name runs too: the last 8 characters, or a prefix several runs share.
    runs = runs + [run[-8:] for run in runs] + [run[:5] for run in runs]
    endpoints = [
        ("GET", lambda: "/v1/status", []),
        ("GET", lambda: "/metrics", []),
        ("GET", lambda: "/v1/jobs", []),
        ("GET", lambda: f"/v1/jobs/{hostile_name(rng, JOBS)}", []),
        ("GET", lambda: f"/v1/jobs/{hostile_name(rng, JOBS)}/next", ["count"]),
        ("GET", lambda: "/v1/runs", ["limit", "job", "outcome", "before", "since", "until"]),
        ("GET", lambda: "/v1/output", []),
        ("GET", lambda: f"/v1/runs/{hostile_name(rng, runs)}", []),
        ("GET", lambda: f"/v1/runs/{hostile_name(rng, runs)}/output", ["follow"]),
        ("POST", lambda: f"/v1/jobs/{hostile_name(rng, JOBS)}/run", ["wait", "node"]),
        ("POST", lambda: f"/v1/jobs/{hostile_name(rng, JOBS)}/pause", []),
        ("POST", lambda: f"/v1/jobs/{hostile_name(rng, JOBS)}/resume", []),
        ("POST", lambda: f"/v1/runs/{hostile_name(rng, runs)}/cancel", []),
        ("POST", lambda: "/v1/reload", []),
        ("GET", lambda: rng.choice(["/", "/v1", "/v1/", "//v1/status", "/v1/status/", "/v2/status", "*", "/v1/jobs//next",
                                    "/v1/../v1/status", "/%2e%2e/", "/v1/runs/" + "x" * 20000]), []),
    ]
    method, path, keys = rng.choice(endpoints)
    if rng.random() < 0.1:
        method = rng.choice(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "TRACE", "CONNECT", "BREW", "get"])
    return method, path() + query(rng, keys)


def make_request(rng, run_ids):
    method, target = request_target(rng, run_ids)
    headers = [("Host", "localhost")]
    body = b""
    shape = rng.random()
    if shape < 0.15:
        body = rng.choice([b"{}", b'{"a":1}', b"x" * rng.choice([1, 100, 70000]), bytes(rng.getrandbits(8) for _ in range(64))])
        headers.append(("Content-Length", str(len(body))))
    elif shape < 0.22:
        headers.append(("Content-Length", rng.choice(["-1", "99999999999999999999", "abc", "10", "0, 5", "1e3"])))
        body = b"short"
    elif shape < 0.3:
        headers.append(("Transfer-Encoding", rng.choice(["chunked", "gzip, chunked", "identity", "bogus"])))
        body = rng.choice([b"5\r\nhello\r\n0\r\n\r\n", b"ffffffffffffffff\r\n", b"zz\r\n", b"3\r\nabcdef\r\n0\r\n\r\n"])
    if rng.random() < 0.2:
        for _ in range(rng.randint(1, 5)):
            headers.append((rng.choice(["X-A", "Connection", "Expect", "Content-Type", "Authorization", "Host"]),
                            rng.choice(["close", "keep-alive", "100-continue", "application/json", "", "a" * 2000])))
    headers.append(("Connection", "close"))
    if rng.random() < 0.03:
        headers += [(f"X-{i}", "v" * 200) for i in range(200)]  # a head past the daemon's limit
    version = "HTTP/1.1" if rng.random() > 0.05 else rng.choice(["HTTP/1.0", "HTTP/2.0", "HTTP/9", "HTP/1.1", ""])
    head = f"{method} {target} {version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    data = head.encode("utf-8", "surrogateescape") + body
    mutated = False
    if rng.random() < 0.2:
        mutated = True
        data = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            position = rng.randrange(len(data))
            operation = rng.random()
            if operation < 0.4:
                data[position] = rng.getrandbits(8)
            elif operation < 0.7:
                del data[position]
            else:
                data[position:position] = bytes([rng.choice([0, 10, 13, 32, 37, 58, 255, rng.getrandbits(8)])])
        data = bytes(data)
    return method, target, data, mutated


def exchange(path, data, limit):
    """Sends one request; returns (status or None when closed without an answer, body bytes)."""
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(limit)
    try:
        client.connect(path)
        try:
            client.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered and closed before all of it was read: the answer is still there
        try:
            client.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        received = b""
        while True:
            try:
                chunk = client.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
            if len(received) > 4 << 20:
                break
    finally:
        client.close()
    if not received:
        return None, b""
    line, _, rest = received.partition(b"\r\n")
    parts = line.split(b" ")
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise AssertionError(f"not an HTTP status line: {line[:200]!r}")
    head, _, body = rest.partition(b"\r\n\r\n")
    fields = {}
    for field in head.split(b"\r\n"):
        name, _, value = field.partition(b":")
        fields[name.strip().lower()] = value.strip()
    # What follows the answer (the daemon reading leftover bytes as a next request) is not its body.
    if fields.get(b"transfer-encoding", b"").lower() == b"chunked":
        body = dechunk(body)
    elif fields.get(b"content-length", b"").isdigit():
        body = body[:int(fields[b"content-length"])]
    return int(parts[1]), body


def dechunk(data):
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2:]
    return out


def descriptors(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--daemon", required=True)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    rng = random.Random(seed)
    work = tempfile.mkdtemp(prefix="jobrunner-control-fuzz-")
    config = os.path.join(work, "jobs.yaml")
    with open(config, "w") as handle:
        handle.write(CONFIG)
    socket_path = os.path.join(work, "control.sock")
    log_path = os.path.join(work, "daemon.log")
    log = open(log_path, "w")
    daemon = subprocess.Popen([args.daemon, "--config", config, "--state-directory", os.path.join(work, "state"),
                               "--socket", socket_path, "--runtime-directory", os.path.join(work, "run"),
                               "--log-format", "text", "--log-level", "notice"], stdout=log, stderr=subprocess.STDOUT)
    failures = []
    counts = {}
    sent = 0
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if exchange(socket_path, b"GET /v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 5)[0] == 200:
                    break
            except (FileNotFoundError, ConnectionRefusedError):
                pass
            time.sleep(0.1)
        else:
            raise SystemExit("control fuzz: the daemon never answered (see its log: " + log_path + ")")
        status, body = exchange(socket_path, b"POST /v1/jobs/quick/run?wait=true HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 10)
        run_ids = [json.loads(body)["id"]] if status == 200 else []
        # The baseline: the descriptor table once it holds still (our connections closed).
        readings = []
        while (len(readings) < 5 or len(set(readings[-5:])) > 1) and len(readings) < 200:
            readings.append(descriptors(daemon.pid))
            time.sleep(0.05)
        before = readings[-1]
        ends = time.monotonic() + args.seconds
        while time.monotonic() < ends and len(failures) < 10:
            method, target, data, mutated = make_request(rng, run_ids)
            sent += 1
            try:
                status, body = exchange(socket_path, data, 15)
            except (socket.timeout, TimeoutError):
                failures.append(f"no answer within 15 s to {data[:300]!r}")
                continue
            except AssertionError as error:
                failures.append(f"{error} for {data[:300]!r}")
                continue
            counts[status] = counts.get(status, 0) + 1
            if status is None:
                # NIO answers bytes that are not HTTP by closing; a well-formed request never is.
                if not mutated and " HTTP/1.1\r\n" in data.decode("latin-1") and "\r\n\r\n" in data.decode("latin-1"):
                    head = data.decode("latin-1").split("\r\n\r\n")[0]
                    if all(ord(c) < 127 and (c.isprintable() or c in "\r\n") for c in head) and len(head) < 16000:
                        failures.append(f"closed without an answer: {data[:300]!r}")
                continue
            if status >= 500:
                failures.append(f"{status} for {data[:300]!r}: {body[:300]!r}")
            elif status >= 400 and method != "HEAD" and body:
                try:
                    error = json.loads(body)
                    assert isinstance(error.get("error"), str) and isinstance(error.get("message"), str)
                except Exception:
                    failures.append(f"{status} without the API's error body for {data[:300]!r}: {body[:300]!r}")
            elif status == 200 and "/run?" not in target and target.startswith("/v1/runs/") and "/output" not in target:
                run = json.loads(body)
                if run.get("id") and run["id"] not in run_ids:
                    run_ids.append(run["id"])
        if daemon.poll() is not None:
            failures.append(f"the daemon exited with {daemon.returncode}")
        else:
            status, _ = exchange(socket_path, b"GET /v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 10)
            if status != 200:
                failures.append(f"status after the fuzzing: {status}")
            deadline = time.monotonic() + 20
            while descriptors(daemon.pid) > before and time.monotonic() < deadline:
                time.sleep(0.2)
            if descriptors(daemon.pid) > before:
                failures.append(f"descriptors {before} → {descriptors(daemon.pid)}")
    finally:
        if daemon.poll() is None:
            daemon.terminate()
            try:
                daemon.wait(timeout=20)
            except subprocess.TimeoutExpired:
                daemon.kill()
        log.close()
    with open(log_path) as handle:
        internal = [line for line in handle if "control request failed" in line]
    failures += [f"daemon log: {line.strip()}" for line in internal[:5]]
    summary = ", ".join(f"{'closed' if k is None else k}: {v}" for k, v in sorted(counts.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)))
    print(f"control fuzz (seed {seed}): {sent} requests in {args.seconds:g} s — {summary}")
    if failures:
        print("control fuzz FAILED (daemon log kept in " + work + "):")
        for failure in failures:
            print("  " + failure)
        sys.exit(1)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
