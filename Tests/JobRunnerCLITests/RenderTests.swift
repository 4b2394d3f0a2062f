import Foundation
import JobRunnerAPI
@testable import JobRunnerCLI
import JobRunnerSchedule
import Testing

/// `jobrunnerctl`'s views as text, for fixed API answers at a fixed time (no daemon): each table
/// and view is compared whole, so a change to any column, alignment or word shows here.
@Suite struct RenderTests {
    /// 2026-12-01T12:00:00Z.
    static let now = Date(timeIntervalSince1970: 1_796_126_400)

    static func run(_ id: String, job: String, attempt: Int = 1, trigger: String = "schedule", scheduled: String, started: String?,
                    ended: String?, outcome: String?, exitCode: Int32? = nil, cpu: (Double, Double)? = nil, rss: Int64? = nil,
                    rssAtMost: Int64? = nil) -> RunInfo {
        let duration = started.flatMap(Timestamp.init(rfc3339:)).flatMap { start in
            ended.flatMap(Timestamp.init(rfc3339:)).map { start.duration(to: $0).secondsValue }
        }
        return RunInfo(id: id, job: job, trigger: trigger, attempt: attempt, fireId: id, state: outcome == nil ? (started == nil ? "waiting" : "running") : "finished",
                       scheduledTime: scheduled, queuedAt: scheduled, startedAt: started, endedAt: ended, durationSeconds: duration,
                       pid: started == nil ? nil : 4242, outcome: outcome, exitCode: exitCode, signal: nil, detail: nil, statusText: nil,
                       waitingFor: started == nil ? "a free slot" : nil, cpuUserSeconds: cpu?.0, cpuSystemSeconds: cpu?.1,
                       maxRssBytes: rss, maxRssAtMostBytes: rssAtMost)
    }

    static let backupRun = run("01m8r6x0000000000003x8k2q9d", job: "backup", scheduled: "2026-12-01T03:00:00Z",
                               started: "2026-12-01T03:00:00.2Z", ended: "2026-12-01T03:00:07.4Z", outcome: "failed", exitCode: 3,
                               cpu: (1.2, 0.03), rss: 47_395_635)

    static func job(_ name: String, schedule: String?, next: String?, state: String = "enabled", last: RunInfo? = nil,
                    shell: String? = nil, policies: JobPolicies? = nil, environment: [String] = []) -> JobInfo {
        JobInfo(name: name, command: shell == nil ? ["/usr/local/bin/\(name)", "--all"] : nil, shell: shell, schedule: schedule,
                timeZone: "UTC", timeoutSeconds: 7200, killGraceSeconds: 10, workingDirectory: nil, environment: environment, state: state,
                nextFire: next, source: "/etc/jobrunner/jobrunner.yaml:12", lastRun: last, active: [], policies: policies)
    }

    static let jobs = [
        job("backup", schedule: "0 3 * * *", next: "2026-12-02T03:00:00Z", last: backupRun),
        job("report", schedule: "*/15 * * * *", next: "2026-12-01T12:15:00Z",
            last: run("01m8r6x00000000000001abcdef", job: "report", scheduled: "2026-12-01T11:45:00Z", started: "2026-12-01T11:45:00Z",
                      ended: "2026-12-01T11:45:01Z", outcome: "succeeded", exitCode: 0)),
        job("cleanup", schedule: nil, next: nil),
        job("legacy", schedule: "@daily", next: nil, state: "disabled"),
    ]

    @Test func timersListJobsByNextFireLikeListTimers() {
        #expect(Render.timers(Self.jobs, now: Self.now, zone: .utc, all: false) == """
            NEXT                         LEFT      LAST                         PASSED      LAST OUTCOME  JOB     SCHEDULE
            Tue 2026-12-01 12:15:00 UTC  15m left  Tue 2026-12-01 11:45:01 UTC  14m59s ago  succeeded     report  */15 * * * *
            Wed 2026-12-02 03:00:00 UTC  15h left  Tue 2026-12-01 03:00:07 UTC  8h59m ago   failed(3)     backup  0 3 * * *

            2 jobs listed. 2 manual-only or disabled not shown: pass --all.

            """)
        #expect(Render.timers(Self.jobs, now: Self.now, zone: .utc, all: true) == """
            NEXT                         LEFT        LAST                         PASSED      LAST OUTCOME  JOB      SCHEDULE
            Tue 2026-12-01 12:15:00 UTC  15m left    Tue 2026-12-01 11:45:01 UTC  14m59s ago  succeeded     report   */15 * * * *
            Wed 2026-12-02 03:00:00 UTC  15h left    Tue 2026-12-01 03:00:07 UTC  8h59m ago   failed(3)     backup   0 3 * * *
            -                            (manual)    -                            -           -             cleanup  (manual)
            -                            (disabled)  -                            -           -             legacy   @daily

            4 jobs listed.

            """)
    }

    @Test func jobsTable() {
        #expect(Render.jobs(Self.jobs, now: Self.now) == """
            NAME     SCHEDULE      NEXT    LAST RUN              STATE
            backup   0 3 * * *     in 15h  failed(3) 8h59m ago   enabled
            report   */15 * * * *  in 15m  succeeded 14m59s ago  enabled
            cleanup  (manual)      -       never                 enabled
            legacy   @daily        -       never                 disabled

            """)
    }

    @Test func sortedByNextFirePutsJobsThatDoNotFireLast() {
        #expect(Render.sortedByNextFire(Self.jobs).map(\.name) == ["report", "backup", "cleanup", "legacy"])
    }

    @Test func runsTableShowsWhatEachRunCost() {
        let runs = [
            Self.run("01m8r6x0000000000005waiting", job: "backup", attempt: 2, scheduled: "2026-12-01T11:59:00Z", started: nil, ended: nil,
                     outcome: nil),
            Self.run("01m8r6x000000000000400small", job: "report", trigger: "manual", scheduled: "2026-12-01T11:30:00Z",
                     started: "2026-12-01T11:30:00Z", ended: "2026-12-01T11:30:00.004Z", outcome: "succeeded", exitCode: 0,
                     cpu: (0.001, 0.002), rssAtMost: 49_000_000),
            Self.backupRun,
        ]
        #expect(Render.runs(runs, now: Self.now) == """
            RUN                          JOB        TRIGGER   SCHEDULED  STARTED    DURATION  CPU     MEMORY  OUTCOME
            01m8r6x0000000000005waiting  backup #2  schedule  1m ago     -          -         -       -       waiting
            01m8r6x000000000000400small  report     manual    30m ago    30m ago    0.004s    0.003s  ≤46.7M  succeeded
            01m8r6x0000000000003x8k2q9d  backup     schedule  9h ago     8h59m ago  7.20s     1.23s   45.2M   failed(3)

            """)
    }

    @Test func showGivesTheWholeDefinitionAndTheLastRuns() {
        let policies = JobPolicies(user: "backup", overlap: "skip", pool: "db",
                                   retry: RetryInfo(attempts: 3, backoffSeconds: 30, maxBackoffSeconds: 600, on: ["failure", "timeout"]),
                                   randomDelaySeconds: 300, runOnStart: false, catchUp: "once", onSuccess: nil, onFailure: "/usr/local/bin/page oncall",
                                   limits: ["open_files": 1024, "processes": 64], umask: "027", nice: 10)
        let info = Self.job("backup", schedule: "0 3 * * *", next: "2026-12-02T03:00:00Z", last: Self.backupRun,
                            shell: "pg_dump app > /backup/app.sql\nupload /backup/app.sql\n", policies: policies,
                            environment: ["AWS_REGION", "TOKEN"])
        let next = NextResponse(normalized: "0 3 * * *", timeZone: "UTC", next: ["2026-12-02T03:00:00Z", "2026-12-03T03:00:00Z"])
        #expect(Render.job(info, next: next, recent: [Self.backupRun], now: Self.now) == """
            name          backup
            shell         pg_dump app > /backup/app.sql
                          upload /backup/app.sql
            schedule      0 3 * * * (UTC)
            state         enabled
            defined at    /etc/jobrunner/jobrunner.yaml:12
            user          backup
            environment   AWS_REGION, TOKEN (values hidden)
            timeout       2h
            kill grace    10s
            overlap       skip
            pool          db
            retry         3 attempts, backoff 30s up to 10m, on failure, timeout
            random delay  5m
            catch up      once
            on failure    /usr/local/bin/page oncall
            limits        open_files=1024, processes=64
            umask         027
            nice          10
            next fires    2026-12-02T03:00:00Z (in 15h)
                          2026-12-03T03:00:00Z (in 1d15h)

            last runs:
              RUN                          JOB     TRIGGER   SCHEDULED  STARTED    DURATION  CPU    MEMORY  OUTCOME
              01m8r6x0000000000003x8k2q9d  backup  schedule  9h ago     8h59m ago  7.20s     1.23s  45.2M   failed(3)

            """)
        let manual = Self.job("cleanup", schedule: nil, next: nil)
        #expect(Render.job(manual, next: nil, recent: [], now: Self.now).hasSuffix("""
            next fires   none scheduled
            last runs    none

            """))
    }

    @Test func logsHeaderSaysWhichRunHowItEndedAndWhatItCost() {
        #expect(Render.logHeader(Self.backupRun, now: Self.now) == "-- run 01m8r6x0000000000003x8k2q9d of backup: attempt 1, trigger schedule, "
            + "started 2026-12-01T03:00:00.2Z (8h59m ago), took 7.20s, failed (exit status 3), "
            + "1.23s CPU (1.20s user, 0.030s system), 45.2M memory peak --")
        let waiting = Self.run("01m8r6x0000000000005waiting", job: "backup", attempt: 2, scheduled: "2026-12-01T11:59:00Z", started: nil,
                               ended: nil, outcome: nil)
        #expect(Render.logHeader(waiting, now: Self.now)
            == "-- run 01m8r6x0000000000005waiting of backup: attempt 2, trigger schedule, queued 2026-12-01T11:59:00Z, not started (waiting for a free slot), waiting --")
    }

    @Test func outputLinesWithTimestampsAndTheirRun() {
        let line = OutputLineInfo(stream: "stdout", text: "dumped 12 tables", at: "2026-12-01T03:00:01.5Z")
        #expect(Render.outputLine(line, timestamps: false, colors: Colors(enabled: false)) == "dumped 12 tables")
        #expect(Render.outputLine(line, timestamps: true, colors: Colors(enabled: false))
            == "2026-12-01T03:00:01.5Z      dumped 12 tables")
        var tagged = line
        tagged.job = "backup"
        tagged.run = "01m8r6x0000000000003x8k2q9d"
        #expect(Render.outputLine(tagged, timestamps: false, colors: Colors(enabled: false)) == "backup[3x8k2q9d] dumped 12 tables")
        let stderr = OutputLineInfo(stream: "stderr", text: "warning")
        #expect(Render.outputLine(stderr, timestamps: false, colors: Colors(enabled: true)) == "\u{1B}[2mwarning\u{1B}[0m")
    }

    @Test func aRunsStepsAsATreeAndAJobsStepsAndChain() {
        let steps = [
            StepInfo(name: "dump", kind: "shell", depth: 0, outcome: "succeeded", durationSeconds: 2.5, cpuUserSeconds: 1.5, cpuSystemSeconds: 0.25),
            StepInfo(name: "uploads", kind: "parallel", depth: 0, outcome: "failed", exitCode: 3, detail: "exit status 3", durationSeconds: 0.5),
            StepInfo(name: "upload-a", kind: "command", depth: 1, outcome: "failed", exitCode: 3, detail: "exit status 3", durationSeconds: 0.5,
                     cpuUserSeconds: 0.01, cpuSystemSeconds: 0),
            StepInfo(name: "upload-b", kind: "command", depth: 1, outcome: "cancelled", durationSeconds: 0.4),
            StepInfo(name: "ping", kind: "http", depth: 0, outcome: "http_status", detail: "HTTP 503", continueOnFailure: true, httpStatus: 503),
            StepInfo(name: "last", kind: "shell", depth: 0, outcome: "skipped", detail: "not started"),
        ]
        #expect(Render.stepTree(steps, indent: "  ") == """
              STEP        OUTCOME                            DURATION  CPU
              dump        succeeded                          2.50s     1.75s
              uploads     failed (exit status 3)             0.500s    -
                upload-a  failed (exit status 3)             0.500s    0.010s
                upload-b  cancelled                          0.400s    -
              ping        http_status (HTTP 503), continued  -         -
              last        skipped (not started)              -         -

            """)
        let definitions = [
            JobStepInfo(name: "dump", kind: "shell", depth: 0, command: "pg_dump app", timeoutSeconds: 1800),
            JobStepInfo(name: "parallel-1", kind: "parallel", depth: 0, max: 2),
            JobStepInfo(name: "upload-a", kind: "command", depth: 1, command: "/usr/local/bin/upload a"),
            JobStepInfo(name: "ping", kind: "http", depth: 0, command: "POST https://monitor.example/ping", continueOnFailure: true),
        ]
        #expect(Render.stepDefinitions(definitions) == """
            dump: pg_dump app [timeout 30m]
            parallel-1 (at once, at most 2)
              upload-a: /usr/local/bin/upload a
            ping: POST https://monitor.example/ping [continue on failure]
            """)
        var follower = Self.job("report", schedule: nil, next: nil)
        follower.after = ["nightly succeeded"]
        #expect(Render.scheduleText(follower) == "after nightly succeeded")
        follower.schedule = "0 * * * *"
        #expect(Render.scheduleText(follower) == "0 * * * *, after nightly succeeded")
    }

    @Test func runLineForRunWait() {
        var retried = Self.backupRun
        retried.attempt = 3
        #expect(Render.runLine(retried, colors: Colors(enabled: false))
            == "backup 01m8r6x0000000000003x8k2q9d: failed (exit status 3) on attempt 3 after 7.20s; 1.23s CPU (1.20s user, 0.030s system), 45.2M memory peak")
    }

    @Test func statusLabelsItsRunTotals() {
        let status = StatusResponse(version: "0.1.0", pid: 77, startedAt: "2026-12-01T10:00:00Z", uptimeSeconds: 7200, state: "running",
                                    config: ConfigStatus(path: "/etc/jobrunner/jobrunner.yaml", generation: 2, lastReload: nil),
                                    jobs: 4, running: 1, waiting: 0, nextFire: NextFire(job: "report", at: "2026-12-01T12:15:00Z"),
                                    runTotals: ["succeeded": 40, "failed": 2])
        #expect(Render.status(status, now: Self.now) == """
            daemon     jobrunnerd 0.1.0, pid 77, running, up 2h
            config     /etc/jobrunner/jobrunner.yaml (generation 2)
            jobs       4, 1 running
            next fire  report in 15m (2026-12-01T12:15:00Z)
            runs       2 failed, 40 succeeded (since the daemon started 2h ago)
            """)
    }

    @Test func nextFireTimesWithTheirWeekdays() {
        let response = NextResponse(normalized: "30 2 * * *", timeZone: "Europe/Berlin",
                                    next: ["2026-12-02T02:30:00+01:00", "2026-12-03T02:30:00+01:00"])
        #expect(Render.next(response, now: Self.now) == """
            normalized  30 2 * * *
            time zone   Europe/Berlin
            next        2026-12-02T02:30:00+01:00  Wed  in 13h30m
                        2026-12-03T02:30:00+01:00  Thu  in 1d13h

            """)
        #expect(Render.next(NextResponse(normalized: "@reboot", timeZone: "UTC", next: []), now: Self.now)
            == "normalized  @reboot\ntime zone   UTC\nnext        never\n")
    }

    @Test func bytesAndSecondsForPeople() {
        #expect(Render.bytes(512) == "512B")
        #expect(Render.bytes(4096) == "4.0K")
        #expect(Render.bytes(47_395_635) == "45.2M")
        #expect(Render.bytes(300 * 1024 * 1024) == "300M")
        #expect(Render.bytes(3 * 1024 * 1024 * 1024 / 2) == "1.5G")
        #expect(Render.secondsText(0.0042) == "0.004s")
        #expect(Render.secondsText(1.234) == "1.23s")
        #expect(Render.secondsText(12.34) == "12.3s")
        #expect(Render.secondsText(123) == "2m3s")
    }
}

/// `--since` and `--until`.
@Suite struct TimeSpecTests {
    /// 2026-12-01T12:00:00Z, a Tuesday.
    static let now = Timestamp(seconds: 1_796_126_400)

    @Test func readsTheFormsJournalctlTakes() throws {
        let berlin = try TimeZoneRules(posixRule: "CET-1CEST,M3.5.0,M10.5.0/3", identifier: "Europe/Berlin")
        func parse(_ text: String, zone: TimeZoneRules = .utc) throws -> String { try TimeSpec.parse(text, now: Self.now, zone: zone).description }
        #expect(try parse("2026-11-30T22:00:00+01:00") == "2026-11-30T21:00:00Z")
        #expect(try parse("now") == "2026-12-01T12:00:00Z")
        #expect(try parse("today") == "2026-12-01T00:00:00Z")
        #expect(try parse("yesterday") == "2026-11-30T00:00:00Z")
        #expect(try parse("yesterday", zone: berlin) == "2026-11-29T23:00:00Z")
        #expect(try parse("tomorrow") == "2026-12-02T00:00:00Z")
        #expect(try parse("1h") == "2026-12-01T11:00:00Z")
        #expect(try parse("1h30m ago") == "2026-12-01T10:30:00Z")
        #expect(try parse("2d") == "2026-11-29T12:00:00Z")
        #expect(try parse("2026-11-30") == "2026-11-30T00:00:00Z")
        #expect(try parse("2026-11-30 03:15", zone: berlin) == "2026-11-30T02:15:00Z")
        #expect(try parse("2026-11-30 03:15:09") == "2026-11-30T03:15:09Z")
    }

    @Test func badTimesAreRefusedWithTheFormsThatWork() {
        for text in ["", "bogus", "2026-13-01", "2026-11-31", "2026-11-30 25:00", "yesterdays", "5", "-1h", "20263-3-10", "2026-1-5", "2026-11-30 3:15"] {
            let error = #expect(throws: TimeSpec.ParseError.self) { _ = try TimeSpec.parse(text, now: Self.now, zone: .utc) }
            #expect(error?.message.contains("give RFC 3339") == true, "\(text): \(error?.message ?? "")")
        }
    }
}
