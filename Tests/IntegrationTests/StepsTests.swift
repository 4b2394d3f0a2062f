import Foundation
import JobRunnerAPI
import TestSupport
import Testing

/// Runs made of steps through a real daemon: retries rerun the tree (counted in a file each
/// attempt writes), every failure reaches the API, `show`, `logs` and `run --wait`, and the
/// steps outlive a restart in the history.
@Suite(.timeLimit(.minutes(2))) struct StepsTests {
    func ctl(_ daemon: DaemonHarness, _ arguments: String...) async throws -> (status: Int32, output: String) {
        try await ChildProcess.run(productsDirectory + "/jobrunnerctl", arguments + ["--socket", daemon.socketPath], within: .seconds(60))
    }

    func json<T: Decodable>(_ type: T.Type, _ result: (status: Int32, output: String)) throws -> T {
        try APICoding.decoder().decode(type, from: Data(result.output.utf8))
    }

    @Test func aTreeIsRetriedWholeAndEveryFailureIsShown() async throws {
        let directory = TemporaryDirectory("jobrunner-steps")
        defer { directory.remove() }
        let attempts = directory.file("attempts")
        let config = """
            jobs:
              nightly:
                kill_grace: 500ms
                retry: { attempts: 2, backoff: 100ms }
                steps:
                  - { name: dump, shell: "echo \\"$JOBRUNNER_ATTEMPT\\" >> \(attempts); echo dumped" }
                  - parallel:
                      steps:
                        - { name: upload-a, shell: "sleep 0.2; echo refused >&2; exit 3" }
                        - { name: upload-b, shell: "trap '' TERM; sleep 300 & wait; sleep 300" }
                  - { name: ping, shell: "true" }
            """
        let daemon = try DaemonHarness(config: config, in: directory)
        try await daemon.waitUntilReady()

        let run = try json(RunInfo.self, try await ctl(daemon, "run", "nightly", "--wait", "--json"))
        #expect(run.outcome == "failed")
        #expect(run.exitCode == 3)
        #expect(run.attempt == 2)
        #expect(run.failures == "upload-a exit 3; upload-b cancelled")
        // The whole tree ran twice: its first step wrote once per attempt.
        #expect(try String(contentsOfFile: attempts, encoding: .utf8) == "1\n2\n")
        let steps = try #require(run.steps)
        #expect(steps.map { "\($0.depth) \($0.name) \($0.outcome)" } == [
            "0 dump succeeded", "0 parallel-1 failed", "1 upload-a failed", "1 upload-b cancelled", "0 ping skipped",
        ])
        #expect(steps[0].pid != nil && steps[0].cpuUserSeconds != nil && steps[0].durationSeconds != nil)
        #expect(steps[4].detail == "not started")
        // Nothing of either attempt is left.
        #expect(ProcessTable.ofRuns([run.id, run.fireId]).isEmpty)

        // `logs`: the header with every failure, the tree, each line with its step.
        let logs = try await ctl(daemon, "logs", run.id)
        #expect(logs.status == 0, "\(logs.output)")
        let lines = logs.output.split(separator: "\n").map(String.init)
        #expect(lines.first?.contains("failed (exit status 3): upload-a exit 3; upload-b cancelled") == true, "\(lines)")
        #expect(lines.contains { $0.contains("STEP") && $0.contains("OUTCOME") }, "\(lines)")
        #expect(lines.contains { $0.hasPrefix("     upload-b") && $0.contains("cancelled") }, "\(lines)")
        #expect(lines.contains("[dump] dumped"), "\(lines)")
        #expect(lines.contains("[upload-a] refused"), "\(lines)")

        // `show`: the definition's tree and how the last run's steps ended.
        let show = try await ctl(daemon, "show", "nightly")
        #expect(show.output.contains("upload-a: sleep 0.2; echo refused >&2; exit 3"), "\(show.output)")
        #expect(show.output.contains("parallel-1 (at once)"), "\(show.output)")
        #expect(show.output.contains("steps of the last run (\(run.id))"), "\(show.output)")

        // `run --wait` prints the failures on its line.
        let waited = try await ctl(daemon, "run", "nightly", "--wait")
        #expect(waited.output.contains("upload-a exit 3; upload-b cancelled"), "\(waited.output)")

        // The daemon's log says which step printed a line, and the steps' end.
        _ = try await daemon.waitForLog("step finished", "step=upload-b", "outcome=cancelled")

        // After a restart the history still has the steps.
        daemon.signal(SIGTERM)
        #expect(try await daemon.waitForExit() == 0)
        daemon.cleanUp(keepDirectory: true)
        let again = try DaemonHarness(config: config, in: directory)
        defer { again.cleanUp() }
        try await again.waitUntilReady()
        let stored = try await ControlClient(socketPath: again.socketPath).get("/v1/runs/\(run.id)", as: RunDetail.self).run
        #expect(stored.steps == run.steps)
        #expect(stored.failures == run.failures)
    }

    @Test func aJobFollowsAnotherOnceItsFireEndsForGood() async throws {
        let directory = TemporaryDirectory("jobrunner-chain")
        defer { directory.remove() }
        let attempts = directory.file("attempts")
        let followed = directory.file("followed")
        let alerted = directory.file("alerted")
        // build fails its first attempt and succeeds its second; report follows its success,
        // alert its failure.
        let config = """
            jobs:
              build:
                retry: { attempts: 2, backoff: 100ms }
                shell: "echo x >> \(attempts); [ $(wc -l < \(attempts)) -ge 2 ]"
              report:
                after: [build]
                shell: "echo \\"$JOBRUNNER_TRIGGERED_BY\\" >> \(followed)"
              alert:
                after: { build: failed }
                shell: "echo \\"$JOBRUNNER_TRIGGERED_BY\\" >> \(alerted)"
            """
        let daemon = try DaemonHarness(config: config, in: directory)
        defer { daemon.cleanUp() }
        try await daemon.waitUntilReady()
        let build = try json(RunInfo.self, try await ctl(daemon, "run", "build", "--wait", "--json"))
        #expect(build.outcome == "succeeded" && build.attempt == 2)
        try await poll("report ran", within: .seconds(10)) {
            (try? String(contentsOfFile: followed, encoding: .utf8))?.hasSuffix("\n") == true
        }
        let report = try #require(try json(RunsResponse.self, try await ctl(daemon, "runs", "report", "--json")).runs.first)
        try await poll("report ended", within: .seconds(10)) {
            (try? await ControlClient(socketPath: daemon.socketPath).get("/v1/runs/\(report.id)", as: RunDetail.self).run.outcome) != nil
        }
        // Exactly once, counted in what the follower wrote, and told which run fired it.
        #expect(try String(contentsOfFile: followed, encoding: .utf8) == "build/\(build.id)\n")
        #expect(report.trigger == "after" && report.triggeredBy == "build/\(build.id)")
        #expect(!FileManager.default.fileExists(atPath: alerted), "build's failed first attempt was not its final outcome")

        // `timers` shows what a job follows.
        let timers = try await ctl(daemon, "timers")
        #expect(timers.output.contains("after build succeeded"), "\(timers.output)")
        let show = try await ctl(daemon, "show", "alert")
        #expect(show.output.contains("build failed"), "\(show.output)")
    }

    @Test func httpJobsRetryOnStatusAfterRetryAfterAndKeepTheirSecrets() async throws {
        let directory = TemporaryDirectory("jobrunner-http")
        defer { directory.remove() }
        let server = try await TestHTTPServer(in: directory)
        defer { server.stop() }
        let token = directory.write("token", "Bearer do-not-show-me\n")
        // The retry's own backoff is 60 s: it comes after 1 s because the server said so.
        let config = """
            jobs:
              busy:
                http: { url: "\(server.url("/busy/daemon/1"))", method: POST }
                retry: { attempts: 2, backoff: 60s, max_backoff: 60s, on: [status] }
              secret:
                http: { url: "\(server.url("/ok"))", header_files: { Authorization: \(token) } }
              missing:
                http: { url: "\(server.url("/status/404"))" }
              flaky:
                http: { url: "\(server.url("/flaky/daemon/1"))" }
                retry: { attempts: 3, backoff: 100ms, on: [status] }
            """
        let daemon = try DaemonHarness(config: config, in: directory)
        defer { daemon.cleanUp() }
        try await daemon.waitUntilReady()

        let busy = try json(RunInfo.self, try await ctl(daemon, "run", "busy", "--wait", "--json"))
        #expect(busy.outcome == "succeeded" && busy.attempt == 2)
        let first = try #require(try json(RunsResponse.self, try await ctl(daemon, "runs", "busy", "--json")).runs.last)
        #expect(first.outcome == "http_status" && first.httpStatus == 429 && first.detail == "HTTP 429")
        // The gap as the server saw it: when each of the two requests arrived.
        let arrivals = try await ChildProcess.run("/usr/bin/env", ["curl", "-s", server.url("/arrivals/busy/daemon/1")], within: .seconds(10))
        let times = arrivals.output.split(separator: "\n").compactMap { Double($0) }
        #expect(times.count == 2, "\(arrivals.output)")
        if times.count == 2 {
            #expect(times[1] - times[0] >= 0.95 && times[1] - times[0] < 10, "the retry arrived \(times[1] - times[0]) s after the first request")
        }
        #expect(busy.pid == nil)

        // 500, then 200 on the retry; the server counted two requests.
        let flaky = try json(RunInfo.self, try await ctl(daemon, "run", "flaky", "--wait", "--json"))
        #expect(flaky.outcome == "succeeded" && flaky.attempt == 2)
        let counted = try await ChildProcess.run("/usr/bin/env", ["curl", "-s", server.url("/count/flaky/daemon/1")], within: .seconds(10))
        #expect(counted.output == "2\n", "\(counted.output)")

        let missing = try json(RunInfo.self, try await ctl(daemon, "run", "missing", "--wait", "--json"))
        #expect(missing.outcome == "http_status" && missing.httpStatus == 404)
        let waited = try await ctl(daemon, "run", "missing", "--wait")
        #expect(waited.output.contains("http_status (HTTP 404)"), "\(waited.output)")

        let secret = try json(RunInfo.self, try await ctl(daemon, "run", "secret", "--wait", "--json"))
        #expect(secret.outcome == "succeeded")
        let logs = try await ctl(daemon, "logs", secret.id)
        #expect(logs.output.contains("HTTP/1.1 200 OK") && logs.output.contains("hello"), "\(logs.output)")
        let show = try await ctl(daemon, "show", "secret")
        #expect(show.output.contains("GET \(server.url("/ok"))"), "\(show.output)")
        let jobJSON = try await ctl(daemon, "show", "secret", "--json")
        _ = try await daemon.waitForLog("request finished", "job=secret")
        for text in [show.output, jobJSON.output, daemon.log.all.joined(separator: "\n")] {
            #expect(!text.contains("do-not-show-me"), "a header file's value was shown")
        }

        let metrics = String(decoding: try await ControlClient(socketPath: daemon.socketPath).request(.get, "/metrics").body, as: UTF8.self)
        #expect(metrics.contains("jobrunner_http_requests_total{job=\"busy\",step=\"\",status=\"429\"} 1"), "\(metrics)")
        #expect(metrics.contains("jobrunner_http_requests_total{job=\"busy\",step=\"\",status=\"200\"} 1"))
        #expect(metrics.contains("jobrunner_http_request_duration_seconds_count{job=\"busy\"} 2"))
    }
}
