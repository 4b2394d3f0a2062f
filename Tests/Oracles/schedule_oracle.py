#!/usr/bin/env python3
"""Checks jobrunner's schedule maths against implementations it did not write.

- cron: `cronsim` (Debian cron's DST rules) on every case; `croniter` on cases whose window has
  no DST transition and whose day fields mean the same to both (croniter ORs the day fields
  even when one starts with '*').
- calendar events: `systemd-analyze calendar --iterations=N --base-time=@T` with TZ set.

Thousands of random expressions x zones x start instants, many placed around DST transitions.
`jobrunnerctl next --batch` answers them all from one process. Any disagreement fails the run
and prints the case. Where an oracle is knowingly not followed, the case is counted under the
rule chosen (see README, "Schedules and time").

Usage: schedule_oracle.py JOBRUNNERCTL [--cron N] [--calendar N] [--seed S]
"""
import argparse
import json
import os
import random
import re
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError
from croniter import croniter

ZONES = ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata", "America/Santiago", "UTC"]
COUNT = 6


def transitions(zone_name, start_year=2024, end_year=2029):
    """UTC instants where the zone's offset changes (found hourly, refined to the minute)."""
    zone = ZoneInfo(zone_name)
    result = []
    t = datetime(start_year, 1, 1, tzinfo=timezone.utc)
    end = datetime(end_year, 1, 1, tzinfo=timezone.utc)
    previous = t.astimezone(zone).utcoffset()
    while t < end:
        nxt = t + timedelta(hours=1)
        offset = nxt.astimezone(zone).utcoffset()
        if offset != previous:
            low, high = t, nxt
            while (high - low) > timedelta(minutes=1):
                mid = low + (high - low) / 2
                if mid.astimezone(zone).utcoffset() == previous:
                    low = mid
                else:
                    high = mid
            result.append(high)
            previous = offset
        t = nxt
    return result


def start_instants(rng, zone_name, edges, n):
    """Start instants: most within two days of a transition, some anywhere."""
    result = []
    for _ in range(n):
        if edges and rng.random() < 0.8:
            base = rng.choice(edges)
            delta = timedelta(seconds=rng.randint(-2 * 86400, 2 * 86400))
        else:
            base = datetime(2025, 1, 1, tzinfo=timezone.utc)
            delta = timedelta(seconds=rng.randint(0, 3 * 365 * 86400))
        result.append((base + delta).replace(microsecond=0))
    return result


# MARK: - Random cron expressions

MONTHS = "JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split()
DAYS = "SUN MON TUE WED THU FRI SAT".split()


def numeric_field(rng, low, high, names=None):
    kind = rng.random()
    def value():
        v = rng.randint(low, high)
        if names and rng.random() < 0.3:
            return names[v - low] if v - low < len(names) else str(v)
        return str(v)
    if kind < 0.25:
        return "*"
    if kind < 0.4:
        return "*/" + str(rng.randint(2, max(2, (high - low) // 2)))
    if kind < 0.6:
        return value()
    if kind < 0.72:
        a = rng.randint(low, high)
        b = rng.randint(a, high)
        return f"{a}-{b}"
    if kind < 0.82:
        a = rng.randint(low, high)
        b = rng.randint(a, high)
        return f"{a}-{b}/{rng.randint(2, 7)}"
    if kind < 0.9:
        return f"{rng.randint(low, high)}/{rng.randint(2, 15)}"
    values = sorted(set(rng.randint(low, high) for _ in range(rng.randint(2, 4))))
    return ",".join(str(v) for v in values)


def random_cron(rng):
    minute = numeric_field(rng, 0, 59)
    hour = numeric_field(rng, 0, 23)
    dom = numeric_field(rng, 1, 31)
    if rng.random() < 0.08:
        dom = rng.choice(["L", "LW"])
    month = numeric_field(rng, 1, 12, MONTHS) if rng.random() < 0.5 else "*"
    dow = numeric_field(rng, 0, 7, DAYS + ["SUN"]) if rng.random() < 0.5 else "*"
    if rng.random() < 0.05:
        dow = f"{rng.randint(0, 6)}L"
    elif rng.random() < 0.05:
        dow = f"{rng.randint(0, 6)}#{rng.randint(1, 5)}"
    fields = [minute, hour, dom, month, dow]
    if rng.random() < 0.1:
        fields.insert(0, numeric_field(rng, 0, 59))
    return " ".join(fields)


# MARK: - Random calendar events

WEEKDAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]


def calendar_component(rng, low, high, width):
    kind = rng.random()
    pad = lambda v: str(v).zfill(width)
    if kind < 0.3:
        return "*"
    if kind < 0.55:
        return pad(rng.randint(low, high))
    if kind < 0.7:
        a = rng.randint(low, high)
        return f"{pad(a)}..{pad(rng.randint(a, high))}"
    if kind < 0.85:
        return f"{pad(rng.randint(low, high))}/{rng.randint(1, max(1, (high - low) // 3))}"
    values = sorted(set(rng.randint(low, high) for _ in range(rng.randint(2, 3))))
    return ",".join(pad(v) for v in values)


def random_calendar(rng):
    parts = []
    if rng.random() < 0.3:
        a = rng.randint(0, 6)
        b = rng.randint(a, 6)
        parts.append(WEEKDAYS[a] if a == b else f"{WEEKDAYS[a]}..{WEEKDAYS[b]}")
    if rng.random() < 0.6:
        month = calendar_component(rng, 1, 12, 2)
        if rng.random() < 0.1:
            parts.append(f"*-{month}~{str(rng.randint(1, 7)).zfill(2)}")
        else:
            parts.append(f"*-{month}-{calendar_component(rng, 1, 28 if rng.random() < 0.7 else 31, 2)}")
    hour = calendar_component(rng, 0, 23, 2)
    minute = calendar_component(rng, 0, 59, 2)
    if rng.random() < 0.3:
        parts.append(f"{hour}:{minute}:{calendar_component(rng, 0, 59, 2)}")
    else:
        parts.append(f"{hour}:{minute}")
    if len(parts) == 1 and rng.random() < 0.1:
        return rng.choice(["minutely", "hourly", "daily", "weekly", "monthly", "yearly", "quarterly", "semiannually"])
    return " ".join(parts)


# MARK: - Oracles

def cronsim_next(expr, start, zone_name, n):
    local = start.astimezone(ZoneInfo(zone_name))
    it = CronSim(expr, local)
    return [next(it).astimezone(timezone.utc) for _ in range(n)]


def croniter_next(expr, start, zone_name, n):
    local = start.astimezone(ZoneInfo(zone_name))
    it = croniter(expr, local)
    return [it.get_next(datetime).astimezone(timezone.utc) for _ in range(n)]


class SystemdGaveUp(Exception):
    pass


def systemd_next(expr, start, zone_name, n):
    env = dict(os.environ, TZ=zone_name, LC_ALL="C")
    out = subprocess.run(["systemd-analyze", "calendar", f"--iterations={n}", f"--base-time=@{start.timestamp():.6f}", expr],
                         capture_output=True, text=True, env=env)
    if "Infinite loop in calendar calculation" in out.stderr:
        raise SystemdGaveUp()
    if out.returncode != 0:
        return None
    utc_lines = re.findall(r"\(in UTC\): \w+ (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC", out.stdout)
    if not utc_lines:
        utc_lines = re.findall(r"(?:Next elapse|Iter\. #\d+): \w+ (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC", out.stdout)
    return [datetime.strptime(s, "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc) for s in utc_lines]


def parse_times(answer):
    return [datetime.fromisoformat(t).astimezone(timezone.utc) for t in answer.get("next") or []]


def ask(ctl, queries):
    text = "\n".join(json.dumps(q) for q in queries) + "\n"
    out = subprocess.run([ctl, "next", "--batch"], input=text, capture_output=True, text=True, check=True)
    return [json.loads(line) for line in out.stdout.splitlines()]


def has_transition(zone_name, start, end, edges):
    return any(start <= e <= end + timedelta(hours=1) for e in edges)


def day_fields_agree(expr):
    """croniter ORs the day fields whenever both are restricted, even if one starts with '*'."""
    fields = expr.split()
    dom, dow = fields[-3], fields[-1]
    if dom == "*" or dow == "*":
        return True
    return not dom.startswith("*") and not dow.startswith("*")


PAST = "oracle returns an instant not after the start (rule: strictly after the start)"
PATH_CRONSIM = "cronsim skips an occurrence it returns from a nearer start (30-minute DST shifts)"
PATH_SYSTEMD = "systemd skips an occurrence it returns from a nearer start (a repetition overflowing past midnight, mktime around DST)"
GAVE_UP = "systemd-analyze gives up ('Infinite loop in calendar calculation') near a DST change"
RANGE_STEP = "cronsim reads a-a/n as a/n (rule: a range with a step stays within the range)"
NON_MATCHING = "cronsim fires at a local time the expression does not match (a gap at midnight)"
CRONITER_DIFFERS = "not asked of croniter: it reads a range a-a as '*' and ends day-of-week steps at 6 (cronsim and jobrunner: a..a is a; a/n runs to 7 = Sunday)"
EQUAL_RANGE = re.compile(r"(?:^|[ ,])(\d+)-\1(?=[ ,/]|$)")
EQUAL_RANGE_STEP = re.compile(r"(?:^|[ ,])(\d+)-\1/\d+")


def skipped_by_path(actual, expected, referee, before=timedelta(seconds=1)):
    """True when the oracle's answer skips an occurrence jobrunner gives, and the oracle itself
    returns that occurrence when asked from just before it: the skip is an artefact of the
    path the oracle's search took, not of the schedule."""
    for ours, theirs in zip(actual, expected):
        if ours == theirs:
            continue
        if ours > theirs:
            return False
        try:
            again = referee(ours - before)
        except (CronSimError, StopIteration):
            return False
        return again == ours
    return False


def fires_at_a_non_matching_time(expr, actual, expected, zone_name):
    """True when the first instant the oracle adds is one whose real local time does not match
    the expression (cronsim builds an imaginary midnight on days that start with a DST gap)."""
    spec = CronSim(expr, datetime(2026, 1, 1, tzinfo=timezone.utc))
    for ours, theirs in zip(actual, expected):
        if ours == theirs:
            continue
        if theirs > ours:
            return False
        local = theirs.astimezone(ZoneInfo(zone_name))
        matches = (local.second in spec.seconds and local.minute in spec.minutes and local.hour in spec.hours
                   and local.month in spec.months and spec.match_day(local.date()))
        return not matches
    return False


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("ctl")
    parser.add_argument("--cron", type=int, default=3000)
    parser.add_argument("--calendar", type=int, default=600)
    parser.add_argument("--seed", type=int, default=20261129)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    edges = {zone: transitions(zone) for zone in ZONES}
    failures = []
    stats = {"cron cases": 0, "cronsim compared": 0, "croniter compared": 0, "calendar cases": 0, "systemd compared": 0,
             "expressions both reject": 0}
    documented = {
        PAST: 0,
        PATH_CRONSIM: 0,
        PATH_SYSTEMD: 0,
        GAVE_UP: 0,
        RANGE_STEP: 0,
        NON_MATCHING: 0,
        CRONITER_DIFFERS: 0,
    }

    # Cron
    cases = []
    while len(cases) < args.cron:
        expr = random_cron(rng)
        zone = rng.choice(ZONES)
        start = start_instants(rng, zone, edges[zone], 1)[0]
        cases.append((expr, zone, start))
    answers = ask(args.ctl, [{"expression": e, "kind": "cron", "time_zone": z, "from": s.isoformat(), "count": COUNT}
                             for e, z, s in cases])
    for (expr, zone, start), answer in zip(cases, answers):
        stats["cron cases"] += 1
        try:
            expected = cronsim_next(expr, start, zone, COUNT)
        except (CronSimError, StopIteration) as error:
            if answer.get("error"):
                stats["expressions both reject"] += 1
            elif isinstance(error, StopIteration) and len(parse_times(answer)) < COUNT:
                stats["expressions both reject"] += 1
            else:
                failures.append(f"cron '{expr}' in {zone} from {start.isoformat()}: cronsim rejects ({error!r}), jobrunner answers {answer}")
            continue
        if answer.get("error"):
            failures.append(f"cron '{expr}' in {zone} from {start.isoformat()}: jobrunner rejects ({answer['error']}), cronsim answers")
            continue
        actual = parse_times(answer)
        if any(t <= start for t in expected):
            documented[PAST] += 1
            continue
        if EQUAL_RANGE_STEP.search(expr):
            documented[RANGE_STEP] += 1
            continue
        stats["cronsim compared"] += 1
        if actual != expected:
            referee = lambda base: cronsim_next(expr, base, zone, 1)[0]
            if skipped_by_path(actual, expected, referee):
                documented[PATH_CRONSIM] += 1
                continue
            if fires_at_a_non_matching_time(expr, actual, expected, zone):
                documented[NON_MATCHING] += 1
                continue
            failures.append(f"cron '{expr}' in {zone} from {start.isoformat()}:\n    cronsim   {[t.isoformat() for t in expected]}\n    jobrunner {[t.isoformat() for t in actual]}")
            continue
        if len(expr.split()) == 5 and "L" not in expr and "#" not in expr and day_fields_agree(expr) \
                and not has_transition(zone, start, expected[-1], edges[zone]):
            if EQUAL_RANGE.search(expr) or "/" in expr.split()[-1]:
                documented[CRONITER_DIFFERS] += 1
                continue
            stats["croniter compared"] += 1
            other = croniter_next(expr, start, zone, COUNT)
            if other != actual:
                failures.append(f"cron '{expr}' in {zone} from {start.isoformat()} (no DST edge):\n    croniter  {[t.isoformat() for t in other]}\n    jobrunner {[t.isoformat() for t in actual]}")

    # Calendar events
    cases = []
    while len(cases) < args.calendar:
        expr = random_calendar(rng)
        zone = rng.choice(ZONES)
        start = start_instants(rng, zone, edges[zone], 1)[0]
        cases.append((expr, zone, start))
    answers = ask(args.ctl, [{"expression": e, "kind": "calendar", "time_zone": z, "from": s.isoformat(), "count": COUNT}
                             for e, z, s in cases])
    for (expr, zone, start), answer in zip(cases, answers):
        stats["calendar cases"] += 1
        try:
            expected = systemd_next(expr, start, zone, COUNT)
        except SystemdGaveUp:
            documented[GAVE_UP] += 1
            continue
        if expected is None:
            if answer.get("error"):
                stats["expressions both reject"] += 1
            else:
                failures.append(f"calendar '{expr}' in {zone}: systemd rejects it, jobrunner answers {answer}")
            continue
        if answer.get("error"):
            if not expected and "never elapses" in answer["error"]:
                stats["expressions both reject"] += 1  # systemd accepts it but it never elapses
                continue
            failures.append(f"calendar '{expr}' in {zone} from {start.isoformat()}: jobrunner rejects ({answer['error']})")
            continue
        actual = [t.replace(microsecond=0) for t in parse_times(answer)]
        if any(t <= start for t in expected):
            documented[PAST] += 1
            continue
        stats["systemd compared"] += 1
        if actual != expected[:len(actual)] or len(actual) != len(expected):
            def referee(base, expr=expr, zone=zone):
                try:
                    answer = systemd_next(expr, base, zone, 1)
                except SystemdGaveUp:
                    return None
                return answer[0] if answer else None
            if skipped_by_path(actual, expected, referee, before=timedelta(microseconds=1)):
                documented[PATH_SYSTEMD] += 1
                continue
            failures.append(f"calendar '{expr}' in {zone} from {start.isoformat()}:\n    systemd   {[t.isoformat() for t in expected]}\n    jobrunner {[t.isoformat() for t in actual]}")

    for key, value in stats.items():
        print(f"  {key}: {value}")
    print("  documented differences (see README, 'Schedules and time'):")
    for key, value in documented.items():
        print(f"    {key}: {value}")
    if stats["cronsim compared"] < args.cron * 0.8 or stats["systemd compared"] < args.calendar * 0.7:
        failures.append("too few cases were compared; the generators drifted")
    if failures:
        print(f"\n{len(failures)} disagreement(s):")
        for failure in failures[:40]:
            print("  " + failure)
        sys.exit(1)
    print("schedule oracle: all agree")


if __name__ == "__main__":
    main()
