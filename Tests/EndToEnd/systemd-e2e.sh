#!/bin/bash
# jobrunner as a systemd service, proven under a real systemd: `make install DESTDIR=…` stages the
# binaries, units, sysusers and tmpfiles files; systemd boots as PID 1 of private namespaces on a
# root of its own (boot-systemd.sh) with that install as its /usr/local; then systemctl,
# journalctl and jobrunnerctl run inside and check what an operator would see.
#
# Needs root. Skipped with a message when not root, unless CI=true (then it fails).
# Everything is removed on exit, also on failure (trap): the namespaces die with their PID 1,
# the cgroup is emptied and removed.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
name=systemd-e2e

if [ "$(id -u)" -ne 0 ]; then
    if [ "${CI:-}" = true ]; then
        echo "$name: FAILED: needs root (CI runs as root)" >&2
        exit 1
    fi
    echo "$name: SKIPPED: booting systemd in private namespaces needs root (CI runs this as root)"
    exit 0
fi
for tool in unshare nsenter pivot_root /lib/systemd/systemd; do
    command -v "$tool" >/dev/null || { echo "$name: FAILED: $tool is missing" >&2; exit 1; }
done

work=$(mktemp -d /tmp/jobrunner-e2e.XXXXXX)
chmod 0755 "$work"
mkdir -p "$work/root" "$work/share"
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then cgroup_root=/sys/fs/cgroup; else cgroup_root=/sys/fs/cgroup/unified; fi
cgroup=$cgroup_root/jobrunner-e2e-$$
unshare_pid=""
systemd_pid=""
passed=0

cleanup() {
    local status=$?
    set +e
    if [ $status -ne 0 ] && [ -n "$systemd_pid" ]; then
        echo "--- journal of the failed run (last 80 lines) ---" >&2
        inside journalctl --no-pager -n 80 -o short-monotonic >&2
    fi
    [ -n "$systemd_pid" ] && kill -KILL "$systemd_pid" 2>/dev/null
    [ -n "$unshare_pid" ] && { kill -KILL "$unshare_pid" 2>/dev/null; wait "$unshare_pid" 2>/dev/null; }
    if [ -d "$cgroup" ]; then
        # PID 1 of a pid namespace takes every process of it along; wait until the tree is empty.
        for _ in $(seq 100); do
            [ -z "$(find "$cgroup" -name cgroup.procs -exec cat {} + 2>/dev/null)" ] && break
            find "$cgroup" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -KILL 2>/dev/null
            sleep 0.05
        done
        find "$cgroup" -depth -type d -exec rmdir {} + 2>/dev/null
    fi
    rm -rf "$work"
    if [ $status -eq 0 ]; then echo "$name: passed ($passed checks)"; else echo "$name: FAILED" >&2; fi
    exit $status
}
trap cleanup EXIT

fail() {
    echo "$name: FAILED: $*" >&2
    exit 1
}

ok() {
    passed=$((passed + 1))
    echo "  ok  $*"
}

# Runs a command inside the booted system (its mounts, pids and cgroups).
inside() {
    nsenter -t "$systemd_pid" -m -p -C -- env -i PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"
}

# wait_for SECONDS DESCRIPTION COMMAND…: polls COMMAND every 50ms until it succeeds.
wait_for() {
    local seconds=$1 what=$2
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -ge $deadline ] && fail "no $what within ${seconds}s"
        sleep 0.05
    done
}

property() {
    inside systemctl show -p "$2" --value "$1"
}

has_property() {
    [[ "$(property "$1" "$2")" == $3 ]]
}

write_config() {
    inside sh -c 'cat > /etc/jobrunner/jobrunner.yaml'
}

millis() {
    date +%s%3N
}

# output_has PATTERN COMMAND…: COMMAND's whole output matches PATTERN (grep -E). The output is
# read to the end first: `cmd | grep -q` would fail under pipefail when grep quits early.
output_has() {
    local pattern=$1 output
    shift
    output=$("$@" 2>&1) || true
    grep -Eq -- "$pattern" <<<"$output"
}

# --- stage the install and boot --------------------------------------------------------------

echo "$name: staging make install"
make -C "$repo" --no-print-directory install DESTDIR="$work/dest" CONFIGURATION=debug >"$work/install.log" 2>&1 ||
    { cat "$work/install.log" >&2; fail "make install"; }
# The man pages, written from the argument parsers, name every command and option.
grep -q '^\.Dt JOBRUNNERCTL 1' "$work/dest/usr/local/share/man/man1/jobrunnerctl.1" || fail "no jobrunnerctl(1) installed"
grep -q '^\.Dt JOBRUNNERD 8' "$work/dest/usr/local/share/man/man8/jobrunnerd.8" || fail "no jobrunnerd(8) installed"
grep -q 'first-attempt' "$work/dest/usr/local/share/man/man1/jobrunnerctl.1" || fail "jobrunnerctl(1) lacks run --first-attempt"

mkdir -p "$cgroup"
(
    echo $BASHPID >"$cgroup/cgroup.procs"
    exec unshare --cgroup --pid --mount --fork "$here/boot-systemd.sh" "$work/root" "$work/dest" "$work/share"
) >"$work/boot.log" 2>&1 &
unshare_pid=$!
deadline=$((SECONDS + 20))
until systemd_pid=$(pgrep -P "$unshare_pid" -x systemd); do
    kill -0 "$unshare_pid" 2>/dev/null || { cat "$work/boot.log" >&2; fail "systemd did not boot"; }
    [ $SECONDS -ge $deadline ] && fail "systemd did not start within 20s"
    sleep 0.05
done
wait_for 30 "running systemd" inside systemctl is-system-running
echo "$name: systemd $(inside systemctl --version | head -1 | cut -d' ' -f2) is PID 1 of its namespaces"

# --- the units as installed ------------------------------------------------------------------

verify=$(inside systemd-analyze verify /usr/local/lib/systemd/system/jobrunnerd.service \
    /usr/local/lib/systemd/system/jobrunnerd.socket 2>&1) || fail "systemd-analyze verify: $verify"
if grep -q jobrunner <<<"$verify"; then fail "systemd-analyze verify complains: $verify"; fi
ok "systemd-analyze verify accepts jobrunnerd.service and jobrunnerd.socket"

inside systemd-sysusers >/dev/null 2>&1
inside getent group jobrunner >/dev/null || fail "sysusers.d did not create the jobrunner group"
inside systemd-tmpfiles --create /usr/local/lib/tmpfiles.d/jobrunner.conf
[ "$(inside stat -c %a /var/lib/jobrunner)" = 750 ] || fail "tmpfiles.d did not create /var/lib/jobrunner 0750"
ok "sysusers.d creates the jobrunner group, tmpfiles.d the directories"
inside systemctl daemon-reload

write_config <<'EOF'
daemon:
  shutdown_grace: 4s
jobs:
  tick:
    shell: "echo tick-output"
    schedule: "* * * * * *"
  long:
    shell: "trap 'echo got SIGTERM > /e2e/long.term; exit 0' TERM; echo started > /e2e/long.started; sleep 300 & wait"
    kill_grace: 2s
EOF

# --- start -----------------------------------------------------------------------------------

inside systemctl start jobrunnerd.service
has_property jobrunnerd.service ActiveState active || fail "ActiveState is $(property jobrunnerd.service ActiveState)"
has_property jobrunnerd.service SubState running || fail "SubState is $(property jobrunnerd.service SubState)"
has_property jobrunnerd.service StatusText "2 jobs, *" || fail "StatusText is '$(property jobrunnerd.service StatusText)'"
ok "systemctl start: active (running), StatusText '$(property jobrunnerd.service StatusText)'"

has_property jobrunnerd.socket ActiveState active || fail "jobrunnerd.socket is not active with the service"
wait_for 10 "log line about the passed socket" output_has "socket passed by systemd" inside journalctl -u jobrunnerd --no-pager
[ "$(inside stat -c '%a %G' /run/jobrunner/jobrunner.sock)" = "660 jobrunner" ] || fail "socket mode/group: $(inside stat -c '%a %G' /run/jobrunner/jobrunner.sock)"
output_has "jobs +2, [01] running" inside jobrunnerctl status || fail "jobrunnerctl status: $(inside jobrunnerctl status)"
ok "the control socket comes from jobrunnerd.socket (0660, group jobrunner); jobrunnerctl status answers"

# --- journal ---------------------------------------------------------------------------------

journal_has_tick_output() {
    local entries
    entries=$(inside journalctl -u jobrunnerd JOB=tick -o json --no-pager)
    grep '"MESSAGE":"tick-output"' <<<"$entries" | grep '"STREAM":"stdout"' | grep -q '"RUN_ID":"'
}
wait_for 15 "tick output in the journal with JOB, RUN_ID, STREAM" journal_has_tick_output
output_has '"MESSAGE":"run finished"' inside journalctl -u jobrunnerd OUTCOME=succeeded JOB=tick -o json --no-pager ||
    fail "no 'run finished' entry with OUTCOME=succeeded"
output_has '"CODE_FILE":"' inside journalctl -u jobrunnerd JOB=tick -o json --no-pager -n 1 || fail "no CODE_FILE field"
ok "journalctl -u jobrunnerd JOB=tick shows the job's output with RUN_ID and STREAM; OUTCOME, CODE_FILE fields"

# --- reload ----------------------------------------------------------------------------------

inside cp /etc/jobrunner/jobrunner.yaml /e2e/good.yaml
inside sh -c 'cat /e2e/good.yaml - > /etc/jobrunner/jobrunner.yaml' <<'EOF'
  added:
    command: ["/bin/true"]
    schedule: "@daily"
EOF
started=$(millis)
inside systemctl reload jobrunnerd
wait_for 5 "the added job after systemctl reload" output_has '"name" : "added"' inside jobrunnerctl jobs --json
reload_ms=$(($(millis) - started))
has_property jobrunnerd.service ActiveState active || fail "not active after reload"
wait_for 5 "StatusText with 3 jobs" has_property jobrunnerd.service StatusText "3 jobs, *"
ok "systemctl reload applies an added job (${reload_ms}ms to listed); still active"

write_config <<'EOF'
jobs:
  tick: [ this is not valid
EOF
inside systemctl reload jobrunnerd
wait_for 5 "StatusText 'reload failed: …'" has_property jobrunnerd.service StatusText "reload failed:*"
has_property jobrunnerd.service ActiveState active || fail "not active after a failed reload"
tick_runs() {
    local entries
    entries=$(inside journalctl -u jobrunnerd JOB=tick OUTCOME=succeeded -o cat --no-pager)
    grep -c "run finished" <<<"$entries"
}
before=$(tick_runs)
more_ticks() { [ "$(tick_runs)" -gt "$before" ]; }
wait_for 10 "tick runs after the failed reload" more_ticks
ok "a broken config on reload: still active, StatusText '$(property jobrunnerd.service StatusText | cut -c1-60)…', old jobs run"

inside cp /e2e/good.yaml /etc/jobrunner/jobrunner.yaml
inside systemctl reload jobrunnerd
wait_for 5 "StatusText without 'reload failed'" has_property jobrunnerd.service StatusText "2 jobs, *"

# --- stop during a long run ------------------------------------------------------------------

# TimeoutStopSec shorter than shutdown_grace: only EXTEND_TIMEOUT_USEC keeps systemd from
# killing the daemon before it has stopped its run.
inside mkdir -p /run/systemd/system/jobrunnerd.service.d
echo -e "[Service]\nTimeoutStopSec=3s" | inside sh -c 'cat > /run/systemd/system/jobrunnerd.service.d/short-stop.conf'
inside systemctl daemon-reload
inside jobrunnerctl run long >/dev/null
wait_for 10 "the long run to start" test -e "$work/share/long.started"
started=$(millis)
inside systemctl stop --no-block jobrunnerd.service 2>/dev/null
wait_for 5 "StatusText 'stopping: waiting for 1 run'" has_property jobrunnerd.service StatusText "stopping: waiting for 1 run"
wait_for 20 "the unit to stop" has_property jobrunnerd.service ActiveState inactive
stop_ms=$(($(millis) - started))
has_property jobrunnerd.service ActiveState inactive || fail "ActiveState after stop: $(property jobrunnerd.service ActiveState)"
has_property jobrunnerd.service Result success || fail "Result after stop: $(property jobrunnerd.service Result) (EXTEND_TIMEOUT_USEC not honoured?)"
has_property jobrunnerd.service ExecMainStatus 0 || fail "exit status $(property jobrunnerd.service ExecMainStatus)"
grep -q "got SIGTERM" "$work/share/long.term" 2>/dev/null || fail "the run's process did not get SIGTERM"
[ "$stop_ms" -lt 12000 ] || fail "stopping took ${stop_ms}ms (shutdown_grace 4s)"
if inside pgrep -f "long.started" >/dev/null; then fail "a process of the run outlived the stop"; fi
[ -z "$(property jobrunnerd.service ControlGroup)" ] || fail "the unit's cgroup is still there"
ok "systemctl stop during a run: 'stopping: waiting for 1 run', SIGTERM reached it, exit 0, result success past TimeoutStopSec=3s, ${stop_ms}ms, nothing left"
inside rm -rf /run/systemd/system/jobrunnerd.service.d
inside systemctl daemon-reload

# --- watchdog --------------------------------------------------------------------------------

inside mkdir -p /run/systemd/system/jobrunnerd.service.d
echo -e "[Service]\nWatchdogSec=2s\nTimeoutAbortSec=3s" | inside sh -c 'cat > /run/systemd/system/jobrunnerd.service.d/watchdog.conf'
inside systemctl daemon-reload
inside systemctl start jobrunnerd.service
first_pid=$(property jobrunnerd.service MainPID)
# Beats arrive while the scheduler runs: three watchdog periods later it is still up.
beats_kept_it_up() { [ "$(property jobrunnerd.service MainPID)" = "$first_pid" ] && has_property jobrunnerd.service ActiveState active; }
sleep_until=$((SECONDS + 6))
while [ $SECONDS -lt $sleep_until ]; do
    beats_kept_it_up || fail "the daemon was restarted although it was not stopped"
    sleep 0.5
done
inside kill -STOP "$first_pid"
restarted() {
    local pid
    pid=$(property jobrunnerd.service MainPID)
    [ "$pid" != "$first_pid" ] && [ "$pid" != 0 ] && has_property jobrunnerd.service ActiveState active
}
wait_for 20 "a restart after the watchdog fired" restarted
output_has "Watchdog timeout" inside journalctl -u jobrunnerd --no-pager || fail "no 'Watchdog timeout' in the journal"
output_has "Failed with result 'watchdog'" inside journalctl -u jobrunnerd --no-pager || fail "the unit did not fail with result 'watchdog'"
[ "$(property jobrunnerd.service NRestarts)" -ge 1 ] || fail "NRestarts is $(property jobrunnerd.service NRestarts)"
ok "watchdog: a stopped scheduler fails the unit with result 'watchdog' and Restart= brings it back"
inside systemctl stop jobrunnerd.service 2>/dev/null
inside rm -rf /run/systemd/system/jobrunnerd.service.d
inside systemctl daemon-reload

# --- socket activation -----------------------------------------------------------------------

inside systemctl stop jobrunnerd.socket jobrunnerd.service 2>/dev/null
inside systemctl start jobrunnerd.socket
has_property jobrunnerd.service ActiveState inactive || fail "the service started with the socket alone"
status=$(inside jobrunnerctl status) || fail "jobrunnerctl status through the socket unit failed: $status"
grep -q "running" <<<"$status" || fail "jobrunnerctl status: $status"
has_property jobrunnerd.service ActiveState active || fail "the first connection did not start the service"
ok "only jobrunnerd.socket started: jobrunnerctl status starts the service and gets its answer"

inside systemctl stop jobrunnerd.service jobrunnerd.socket
has_property jobrunnerd.service Result success || fail "final stop: $(property jobrunnerd.service Result)"
