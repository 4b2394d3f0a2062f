import Foundation
import JobRunnerAPI
import TestSupport
import Testing

/// The operator's view against a real daemon: what a run cost (measured by the kernel, checked
/// against jobs that burn a known amount of CPU and touch a known amount of memory), `logs`,
/// `run --wait` through retries, and what the daemon's log says.
@Suite(.timeLimit(.minutes(2))) struct OperatorViewTests {
    func ctl(_ arguments: [String]) async throws -> (status: Int32, output: String) {
        try await ChildProcess.run(productsDirectory + "/jobrunnerctl", arguments, within: .seconds(60))
    }

    func ctl(_ daemon: DaemonHarness, _ arguments: String...) async throws -> (status: Int32, output: String) {
        try await ctl(arguments + ["--socket", daemon.socketPath])
    }

    func json<T: Decodable>(_ type: T.Type, _ result: (status: Int32, output: String)) throws -> T {
        try APICoding.decoder().decode(type, from: Data(result.output.utf8))
    }

    static let mebibyte = 1 << 20

    @Test func whatARunCostIsMeasuredKeptAndShown() async throws {
        // burn: at least 0.6 s of CPU in user mode; touch: 160 MiB written, page by page.
        let config = """
            jobs:
              burn:
                command: ["python3", "-c", "import time\\nt = time.process_time()\\nwhile time.process_time() - t < 0.6: pass"]
              touch:
                command: ["python3", "-c", "b = bytearray(160 << 20)\\nfor i in range(0, len(b), 4096): b[i] = 1"]
              tiny:
                command: ["/bin/true"]
            """
        let directory = TemporaryDirectory("jobrunner-cost")
        defer { directory.remove() }
        let daemon = try DaemonHarness(config: config, in: directory)
        try await daemon.waitUntilReady()

        let burn = try json(RunInfo.self, try await ctl(daemon, "run", "burn", "--wait", "--json"))
        #expect(burn.outcome == "succeeded")
        let cpu = (burn.cpuUserSeconds ?? 0) + (burn.cpuSystemSeconds ?? 0)
        #expect(cpu >= 0.6, "burn used \(cpu)s of CPU")
        #expect(cpu <= 0.6 + 1.5, "burn used \(cpu)s of CPU")
        #expect(cpu <= (burn.durationSeconds ?? 0) + 0.05, "more CPU than wall time for a single-threaded job")

        let touch = try json(RunInfo.self, try await ctl(daemon, "run", "touch", "--wait", "--json"))
        #expect(touch.outcome == "succeeded")
        let peak = try #require(touch.maxRssBytes, "the peak of a 160 MiB job is its own, above the daemon's")
        #expect(peak >= 160 * Self.mebibyte)
        #expect(peak <= 160 * Self.mebibyte + 64 * Self.mebibyte, "peak \(peak)")
        #expect(touch.maxRssAtMostBytes == nil)

        // A tiny job's peak cannot be told from the daemon's own memory: only a bound is given.
        let tiny = try json(RunInfo.self, try await ctl(daemon, "run", "tiny", "--wait", "--json"))
        #expect(tiny.maxRssBytes == nil)
        #expect((tiny.maxRssAtMostBytes ?? 0) > 0)
        #expect(tiny.cpuUserSeconds != nil && tiny.cpuSystemSeconds != nil)

        // The log line of the end carries the figures; so does /metrics.
        let finished = try await daemon.waitForLog("run finished", "job=touch")
        #expect(finished.contains("exit_code=0"))
        #expect(DaemonHarness.field("max_rss_bytes", in: finished).flatMap(Int.init) == Int(peak))
        #expect(DaemonHarness.field("cpu_user", in: finished).flatMap(Double.init) != nil)
        let metrics = try await ControlClient(socketPath: daemon.socketPath).request(.get, "/metrics")
        let text = String(decoding: metrics.body, as: UTF8.self)
        func value(_ series: String) -> Double? {
            text.split(separator: "\n").first { $0.hasPrefix(series + " ") }.flatMap { Double($0.split(separator: " ").last ?? "") }
        }
        #expect((value("jobrunner_run_cpu_seconds_total{job=\"burn\"}") ?? 0) >= 0.6)
        #expect(value("jobrunner_run_max_rss_bytes{job=\"touch\"}") == Double(peak))
        #expect(text.contains("# HELP jobrunner_runs_total "))
        #expect(text.contains("# HELP jobrunner_fire_lateness_seconds "))
        #expect(text.contains("# HELP jobrunner_run_cpu_seconds_total "))

        // `runs` shows the cost; after a restart the history still has it.
        let table = try await ctl(daemon, "runs", "touch").output.split(separator: "\n").map(String.init)
        #expect(table.first?.contains("  CPU  ") == true && table.first?.contains("  MEMORY  ") == true, "\(table)")
        let shown = String(format: "%.0fM", Double(peak) / Double(Self.mebibyte))
        #expect(table.dropFirst().first?.contains("  \(shown)  ") == true, "\(shown) in \(table)")
        daemon.signal(SIGTERM)
        #expect(try await daemon.waitForExit() == 0)
        daemon.cleanUp(keepDirectory: true)
        let again = try DaemonHarness(config: config, in: directory)
        defer { again.cleanUp() }
        try await again.waitUntilReady()
        let stored = try json(RunsResponse.self, try await ctl(again, "runs", "--json")).runs
        #expect(stored.first { $0.id == touch.id }?.maxRssBytes == peak)
        #expect(stored.first { $0.id == burn.id }?.cpuUserSeconds == burn.cpuUserSeconds)
        #expect(stored.first { $0.id == tiny.id }?.maxRssAtMostBytes == tiny.maxRssAtMostBytes)
    }

    @Test func logsHaveAHeaderTakeAbbreviationsAndFollowEveryRun() async throws {
        let daemon = try DaemonHarness(config: """
            jobs:
              greet:
                shell: "echo hello; echo oops >&2"
              never:
                shell: "true"
                schedule: "0 3 * * *"
            """)
        defer { daemon.cleanUp() }
        try await daemon.waitUntilReady()
        let first = try json(RunInfo.self, try await ctl(daemon, "run", "greet", "--wait", "--json"))
        let second = try json(RunInfo.self, try await ctl(daemon, "run", "greet", "--wait", "--json"))

        // The last 8 characters name a run; the header says which run, how and when.
        let logs = try await ctl(daemon, "logs", String(first.id.suffix(8)))
        #expect(logs.status == 0, "\(logs.output)")
        let lines = logs.output.split(separator: "\n").map(String.init)
        #expect(lines.first?.hasPrefix("-- run \(first.id) of greet: attempt 1, trigger manual, started ") == true, "\(lines)")
        #expect(lines.first?.contains("succeeded") == true)
        #expect(lines.first?.contains("CPU (") == true)
        #expect(Set(lines.dropFirst()) == ["hello", "oops"])
        // The job's latest run, with the time each line was read.
        let stamped = try await ctl(daemon, "logs", "--timestamps", "greet").output.split(separator: "\n").dropFirst()
        #expect(stamped.count == 2)
        for line in stamped {
            let time = String(line.prefix { $0 != " " })
            #expect(time.hasPrefix("20") && time.hasSuffix("Z"), "\(line)")
            #expect(line.hasSuffix(" hello") || line.hasSuffix(" oops"))
        }
        #expect(try await ctl(daemon, "logs", "--no-header", first.id).output.split(separator: "\n").count == 2)
        // A prefix both runs share is refused as ambiguous, naming them.
        let shared = String(zip(first.id, second.id).prefix { $0 == $1 }.map(\.0))
        let ambiguous = try await ctl(daemon, "logs", String(shared.prefix(max(4, min(shared.count, 20)))))
        #expect(ambiguous.status == 1)
        #expect(ambiguous.output.contains("names more than one run"), "\(ambiguous.output)")
        let cancelled = try await ctl(daemon, "cancel", String(first.id.suffix(8)))
        #expect(cancelled.output.contains("already finished"), "an abbreviation works for cancel too: \(cancelled.output)")

        let never = try await ctl(daemon, "logs", "never")
        #expect(never.status == 1)
        #expect(never.output == "jobrunnerctl: job 'never' has not run yet (jobrunnerctl show never says when it fires next)\n")
        let unknown = try await ctl(daemon, "logs", "nosuch")
        #expect(unknown.output == "jobrunnerctl: no run or job named 'nosuch'\n")

        // `runs` by time.
        let recent = try json(RunsResponse.self, try await ctl(daemon, "runs", "--since", "1h", "--json")).runs
        #expect(Set(recent.map(\.id)) == [first.id, second.id])
        #expect(try json(RunsResponse.self, try await ctl(daemon, "runs", "--until", "1h", "--json")).runs.isEmpty)
        let bad = try await ctl(daemon, "runs", "--since", "last tuesday")
        #expect(bad.status == 64, "a usage error: \(bad.output)")
        #expect(bad.output.contains("--since: 'last tuesday' is not a time"))

        // Every run's output, as it happens, each line with its job and short run id.
        let follower = try ChildProcess(productsDirectory + "/jobrunnerctl", ["logs", "-f", "--socket", daemon.socketPath])
        defer { follower.kill() }
        var seen: String?
        for _ in 0..<20 where seen == nil {
            let run = try json(RunInfo.self, try await ctl(daemon, "run", "greet", "--wait", "--json"))
            seen = try? await follower.lines.first(within: .seconds(1), "greet's line") { $0 == "greet[\(run.id.suffix(8))] hello" }
        }
        #expect(seen != nil, "the follower never showed greet's output: \(follower.outputText)")
        // A follower still connected does not hold up the daemon's stop; its stream ends.
        daemon.signal(SIGTERM)
        #expect(try await daemon.waitForExit(within: .seconds(15)) == 0)
        #expect(try await follower.waitForExit(within: .seconds(5)) == 0)
    }

    @Test func runWaitWaitsThroughRetriesAndRetriesKeepTheirTrigger() async throws {
        let directory = TemporaryDirectory("jobrunner-wait")
        defer { directory.remove() }
        let counter = directory.file("attempts")
        let daemon = try DaemonHarness(config: """
            jobs:
              flaky:
                shell: "n=$(cat '\(counter)' 2>/dev/null || echo 0); n=$((n+1)); echo $n > '\(counter)'; [ $n -ge 3 ]"
                retry: {attempts: 3, backoff: 200ms}
            """)
        defer { daemon.cleanUp() }
        try await daemon.waitUntilReady()

        let waited = try await ctl(daemon, "run", "flaky", "--wait")
        #expect(waited.status == 0, "\(waited.output)")
        #expect(waited.output.contains(": succeeded on attempt 3 after "), "\(waited.output)")
        #expect((try? String(contentsOfFile: counter, encoding: .utf8)) == "3\n", "three attempts ran, as the job itself counted")
        let attempts = try json(RunsResponse.self, try await ctl(daemon, "runs", "flaky", "--json")).runs
        #expect(attempts.map(\.attempt).sorted() == [1, 2, 3])
        #expect(attempts.allSatisfy { $0.trigger == "manual" }, "\(attempts.map(\.trigger))")
        #expect(Set(attempts.map(\.fireId)).count == 1)

        // --first-attempt: back after attempt 1 (it failed), while the retries go on.
        try? FileManager.default.removeItem(atPath: counter)
        let first = try await ctl(daemon, "run", "flaky", "--wait", "--first-attempt")
        #expect(first.status == 1, "\(first.output)")
        #expect(first.output.contains("failed (exit status 1)"))
        #expect(!first.output.contains("on attempt"))
        try await poll("the retries ran on", within: .seconds(20)) {
            (try? String(contentsOfFile: counter, encoding: .utf8)) == "3\n"
        }
    }

    @Test func theDaemonsLogIsTypedAndSaysWhoAndWhat() async throws {
        let json = try DaemonHarness(config: "jobs:\n  fail:\n    shell: \"exit 3\"\n", arguments: ["--log-format", "json"])
        defer { json.cleanUp() }
        try await json.waitUntilReady()
        _ = try await ctl(json, "run", "fail", "--wait")
        let finished = try await json.waitForLog("\"message\":\"run finished\"")
        let entry = try #require(try JSONSerialization.jsonObject(with: Data(finished.utf8)) as? [String: Any])
        #expect(entry["exit_code"] as? Int == 3)
        #expect(entry["pid"] is Int, "pid is a number: \(finished)")
        #expect(entry["duration"] is Double || entry["duration"] is Int, "duration is a number of seconds: \(finished)")
        #expect(entry["cpu_user"] != nil && entry["outcome"] as? String == "failed")

        let text = try DaemonHarness(config: "jobs:\n  greet:\n    shell: \"echo hello\"\n  sneaky:\n    shell: \"printf 'a\\\\033[2Kb\\\\rc\\\\n'\"\n")
        defer { text.cleanUp() }
        try await text.waitUntilReady()
        let run = try self.json(RunInfo.self, try await ctl(text, "run", "greet", "--wait", "--json"))
        // Job output reads as the job's, not as a message of the daemon.
        try await text.sawLog(" greet[\(run.id.suffix(8))] stdout: hello")
        // Control characters a job prints are escaped: it cannot rewrite the line on a terminal.
        let sneaky = try self.json(RunInfo.self, try await ctl(text, "run", "sneaky", "--wait", "--json"))
        try await text.sawLog(" sneaky[\(sneaky.id.suffix(8))] stdout: a\\x1b[2Kb\\rc")
        // Whoever asked for the run is on record.
        try await text.sawLog("control request", "path=/v1/jobs/greet/run", "peer_uid=\(getuid())", "peer_pid=")
        // A reload names what it changed.
        text.writeConfig("jobs:\n  greet:\n    shell: \"echo hello again\"\n  added:\n    shell: \"true\"\n")
        _ = try await ctl(text, "reload")
        try await text.waitForLog("configuration applied", "added=added", "changed=greet", "removed=sneaky")
        let finished2 = try await text.sawLog("run finished", "job=greet")
        #expect(DaemonHarness.field("duration", in: finished2).flatMap(Double.init) != nil, "duration in seconds: \(finished2)")
    }

    @Test func smallTraps() async throws {
        let daemon = try DaemonHarness(config: "jobs:\n  a:\n    shell: \"true\"\n    schedule: \"*/5 * * * *\"\n  b:\n    shell: \"true\"\n")
        defer { daemon.cleanUp() }
        try await daemon.waitUntilReady()
        // One version string everywhere.
        let status = try json(StatusResponse.self, try await ctl(daemon, "status", "--json"))
        #expect(try await ctl(["--version"]).output == status.version + "\n")
        let daemonVersion = try await ChildProcess.run(productsDirectory + "/jobrunnerd", ["--version"])
        #expect(daemonVersion.output == status.version + "\n")
        // A directory given as the socket is named as such.
        let directory = try await ctl(["status", "--socket", daemon.directory.path])
        #expect(directory.output.contains("not a socket (it is a directory)"), "\(directory.output)")
        // A refused connection names the socket's owner, group and mode (whatever they are),
        // tried as an unprivileged user (root passes any mode).
        if getuid() == 0 {
            // A copy of the client where that user can run it, whatever the checkout's modes.
            chmod(daemon.directory.path, 0o755)
            let client = daemon.directory.file("jobrunnerctl")
            try FileManager.default.copyItem(atPath: productsDirectory + "/jobrunnerctl", toPath: client)
            let refused = try await ChildProcess.run("/usr/bin/setpriv", ["--reuid=65534", "--regid=65534", "--clear-groups",
                                                                           client, "status", "--socket", daemon.socketPath])
            let group = getgrgid(getgid()).map { String(cString: $0.pointee.gr_name) } ?? "gid \(getgid())"
            #expect(refused.status == 77, "\(refused.output)")
            #expect(refused.output.contains("permission denied (the socket is for root and the group \(group), mode 660"), "\(refused.output)")
        }
        // A cron expression with a field missing is answered as cron.
        let typo = try await ctl(["next", "*/5 * * *"])
        #expect(typo.status == 2)
        #expect(typo.output.contains("cron: expected 5 fields"), "\(typo.output)")
        // check-config's help gives its default once.
        let help = try await ctl(["check-config", "--help"])
        #expect(help.output.components(separatedBy: "/etc/jobrunner/jobrunner.yaml").count == 2, "\(help.output)")
        // timers: the scheduled job by default, both with --all.
        let timers = try await ctl(daemon, "timers")
        #expect(timers.output.contains(" a ") || timers.output.contains("  a  "), "\(timers.output)")
        #expect(timers.output.contains("1 job listed. 1 manual-only or disabled not shown: pass --all."), "\(timers.output)")
        #expect(try await ctl(daemon, "timers", "--all").output.contains("2 jobs listed."))
        // show: the definition, next fires and the (empty) history.
        let show = try await ctl(daemon, "show", "a")
        #expect(show.output.contains("next fires "), "\(show.output)")
        #expect(show.output.contains("last runs    none") || show.output.contains("last runs     none"), "\(show.output)")
        #expect(show.output.split(separator: "\n").filter { $0.contains("T") && $0.contains("(in ") }.count == 5, "\(show.output)")
        // status labels its totals.
        _ = try await ctl(daemon, "run", "b", "--wait")
        #expect(try await ctl(daemon, "status").output.contains("1 succeeded (since the daemon started "))
    }
}
