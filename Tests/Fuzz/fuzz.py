#!/usr/bin/env python3
"""Runs every libFuzzer target of jobrunner for a set time and fails on any crash, leak or timeout.

    fuzz.py --bin .build-fuzz/debug/jobrunner-fuzz [--seconds 60] [--only config,cron] [--work DIR]

Each target starts from seeds taken from config/ and from the tests' own inputs (string literals
passed to the parser under test), plus the regression corpus in Tests/FuzzRegressionTests/
regressions/<target>/, and keeps its growing corpus under --work between runs. A crash, a leak
report or a slow unit leaves its input in --work/artifacts/<target>/; copy it into the regression
corpus (the unit tests replay it) once fixed.
"""
import argparse
import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TARGETS = ["config", "cron", "calendar", "schedule", "duration", "size", "notify", "cluster-command", "postgres-url",
           "time-spec"]

# Where each target's seeds come from: files whose content is one input, and regular
# expressions over the tests whose first group is one input.
LITERAL = r'"((?:[^"\\\n]|\\.)*)"'
SEED_PATTERNS = {
    "cron": [("Tests/JobRunnerScheduleTests", r"(?:CronExpression|CronSchedule)\(parsing: " + LITERAL),
             ("Tests/Oracles", r"^\s*\"([^\"]+)\",?\s*$"), ("config", r"schedule:\s*\"([^\"]+)\"")],
    "calendar": [("Tests/JobRunnerScheduleTests/CalendarEventTests.swift", r"(?:expression|normalized): " + LITERAL),
                 ("Tests/JobRunnerScheduleTests/CalendarEventTests.swift", r"^\s*\(" + LITERAL + ","),
                 ("config", r"^\s*- \"([^\"\n]+)\"")],
    "schedule": [("Tests", r"(?:CronExpression|CronSchedule|CalendarEvent)\(parsing: " + LITERAL),
                 ("Tests", r"DurationText\.parse\(" + LITERAL)],
    "duration": [("Tests", r"DurationText\.parse\(" + LITERAL),
                 ("config", r"(?:timeout|every|delay|kill_grace|shutdown_grace):\s*\"?([0-9][^\"\n#]*)")],
    "size": [("config", r"(?:max_output|max_line|file_size|address_space):\s*\"?([0-9][^\"\n#]*)"),
             ("Tests", r"SizeText\.parse\(" + LITERAL)],
    "notify": [("Tests", r"NotifyMessage\.parse\(Array\(" + LITERAL), ("Tests", r"systemd-notify ([A-Z_]+=[^;\"]*)")],
    "postgres-url": [("Tests", r"(postgresql://[^\"\\ ]*)"), ("config", r"(postgresql://[^\"\s]*)")],
    "time-spec": [("Tests/JobRunnerCLITests", r"parse\(" + LITERAL)],
}
# Inputs the tests do not spell out, for the targets whose grammar they pass around in pieces.
EXTRA_SEEDS = {
    "cluster-command": ["run\tnode-a\tbackup\t01kb3n7f4xk0q9v8w6r5t2y1zc", "cancel\tnode-b\t01kb3n7f4xk0q9v8w6r5t2y1zc",
                        "pause\tbackup\t1\tnode-a", "run\tnode-a\tjob\t../../../etc"],
    "notify": ["STATUS=copying\nREADY=1\n", "EXTEND_TIMEOUT_USEC=18446744073709551615", "READY=1"],
    "size": ["64KiB", "2GiB", "512MB", "4096", "18446744073709551616"],
}


def unescape(text):
    return text.encode("utf-8").decode("unicode_escape", errors="ignore").encode("latin-1", errors="ignore")


def seeds(target):
    found = set()
    if target == "config":
        for path in sorted((ROOT / "config").glob("*.yaml")):
            found.add(path.read_bytes())
        for path in sorted((ROOT / "Tests/JobRunnerConfigTests").glob("*.swift")):
            for block in re.findall(r'"""\n(.*?)\n\s*"""', path.read_text(), re.S):
                if "\\(" not in block:
                    found.add(block.encode())
    for directory, pattern in SEED_PATTERNS.get(target, []):
        base = ROOT / directory
        files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.suffix in (".swift", ".py", ".yaml"))
        for path in files:
            for match in re.finditer(pattern, path.read_text(errors="ignore"), re.M):
                found.add(unescape(match.group(1)))
    for text in EXTRA_SEEDS.get(target, []):
        found.add(text.encode())
    regressions = ROOT / "Tests/FuzzRegressionTests/regressions" / target
    if regressions.is_dir():
        for path in sorted(regressions.iterdir()):
            found.add(path.read_bytes())
    return sorted(found)


def run(binary, target, seconds, work):
    corpus = work / "corpus" / target
    artifacts = work / "artifacts" / target
    corpus.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    seeded = 0
    for seed in seeds(target):
        name = corpus / ("seed-" + hashlib.sha1(seed).hexdigest())
        if not name.exists():
            name.write_bytes(seed)
        seeded += 1
    command = [str(binary), target, f"-max_total_time={seconds}", "-timeout=10", "-rss_limit_mb=2048",
               "-max_len=65536", "-print_final_stats=1", f"-artifact_prefix={artifacts}/", str(corpus)]
    # libFuzzer and ASan report a crash themselves; Swift's own crash handler, run beside them,
    # tripped ASan (its memory server reads the stack) and once left the fuzzer hanging.
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0", TZ="UTC", SWIFT_BACKTRACE="enable=no")
    result = subprocess.run(command, capture_output=True, text=True, errors="replace", env=env, timeout=seconds + 300)
    stats = dict(re.findall(r"^stat::(\w+):\s*(\d+)", result.stderr, re.M))
    found = sorted(p.name for p in artifacts.iterdir())
    ok = result.returncode == 0 and not found
    return {"target": target, "seeds": seeded, "execs": int(stats.get("number_of_executed_units", 0)),
            "per_second": int(stats.get("average_exec_per_sec", 0)), "corpus": len(list(corpus.iterdir())),
            "ok": ok, "artifacts": found, "rc": result.returncode,
            "tail": "\n".join(result.stderr.splitlines()[-40:]) if not ok else ""}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--only", default="")
    parser.add_argument("--work", default=str(ROOT / ".build-fuzz/work"))
    args = parser.parse_args()
    targets = [t for t in TARGETS if not args.only or t in args.only.split(",")]
    work = Path(args.work)
    failed = []
    print(f"{'target':<16} {'seeds':>6} {'execs':>10} {'execs/s':>8} {'corpus':>7}  result")
    for target in targets:
        outcome = run(Path(args.bin), target, args.seconds, work)
        verdict = "ok" if outcome["ok"] else f"FAILED (exit {outcome['rc']}; {', '.join(outcome['artifacts']) or 'no artifact'})"
        print(f"{target:<16} {outcome['seeds']:>6} {outcome['execs']:>10} {outcome['per_second']:>8} {outcome['corpus']:>7}  {verdict}", flush=True)
        if not outcome["ok"]:
            failed.append(outcome)
    for outcome in failed:
        print(f"\n--- {outcome['target']} (inputs in {work}/artifacts/{outcome['target']}/) ---\n{outcome['tail']}")
    total = sum(1 for _ in targets)
    print(f"\n{total - len(failed)} of {total} targets ran {args.seconds} s each with no crash, leak or timeout")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
