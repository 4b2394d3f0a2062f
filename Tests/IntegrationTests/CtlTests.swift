import Foundation
import JobRunnerAPI
import TestSupport
import Testing

/// `jobrunnerctl` against a real daemon.
@Suite(.timeLimit(.minutes(1))) struct CtlTests {
    func ctl(_ arguments: [String]) async throws -> (status: Int32, output: String) {
        try await ChildProcess.run(productsDirectory + "/jobrunnerctl", arguments, within: .seconds(30))
    }

    @Test func statusAndJobsTablesAndJSON() async throws {
        let daemon = try DaemonHarness(config: """
            jobs:
              backup:
                command: ["/bin/true"]
                schedule: "*/15 * * * *"
              report:
                shell: "exit 3"
                schedule: "@reboot"
            """)
        defer { daemon.cleanUp() }
        try await daemon.waitUntilReady()
        try await daemon.waitForLog("run finished", "job=report")

        let status = try await ctl(["status", "--socket", daemon.socketPath])
        #expect(status.status == 0)
        #expect(status.output.contains("daemon     jobrunnerd 0.1.0, pid \(daemon.pid), running"))
        #expect(status.output.contains("jobs       2, 0 running"))
        #expect(status.output.contains("runs       1 failed"))

        let jobs = try await ctl(["jobs", "--socket", daemon.socketPath])
        #expect(jobs.status == 0)
        let lines = jobs.output.split(separator: "\n").map(String.init)
        #expect(lines.count == 3)
        #expect(lines[0].hasPrefix("NAME    SCHEDULE      NEXT"))
        #expect(lines[1].hasPrefix("backup  */15 * * * *  in "))
        #expect(lines[2].hasPrefix("report  @reboot       -"))
        #expect(lines[2].contains("failed(3)"))

        let json = try await ctl(["jobs", "--json", "--socket", daemon.socketPath])
        let decoded = try APICoding.decoder().decode(JobsResponse.self, from: Data(json.output.utf8))
        #expect(decoded.jobs.map(\.name) == ["backup", "report"])
        #expect(decoded.jobs[1].lastRun?.outcome == "failed")
        #expect(decoded.jobs[1].lastRun?.exitCode == 3)
    }

    @Test func clearErrorWhenTheDaemonIsNotRunning() async throws {
        let result = try await ctl(["status", "--socket", "/tmp/no-such-jobrunner.sock"])
        #expect(result.status == 69)
        #expect(result.output == "jobrunnerctl: cannot connect to /tmp/no-such-jobrunner.sock: no such file — is jobrunnerd running?\n")
    }

    @Test func nextOfflineAndFromTheDaemon() async throws {
        let offline = try await ctl(["next", "30 2 * * *", "--count", "3", "--time-zone", "Europe/Berlin",
                                     "--from", "2026-03-28T12:00:00Z", "--json"])
        #expect(offline.status == 0)
        let response = try APICoding.decoder().decode(NextResponse.self, from: Data(offline.output.utf8))
        #expect(response == NextResponse(normalized: "30 2 * * *", timeZone: "Europe/Berlin", next: [
            "2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00", "2026-03-31T02:30:00+02:00",
        ]))

        let calendar = try await ctl(["next", "Mon..Fri 02:00", "--count", "2", "--time-zone", "UTC", "--from", "2026-11-27T00:00:00Z"])
        #expect(calendar.status == 0)
        #expect(calendar.output.hasPrefix("normalized  Mon..Fri *-*-* 02:00:00\ntime zone   UTC\nnext        2026-11-27T02:00:00Z  Fri  "))
        #expect(calendar.output.contains("\n            2026-11-30T02:00:00Z  Mon  "))

        let bad = try await ctl(["next", "0 0 32 * *"])
        #expect(bad.status == 2)
        #expect(bad.output == "jobrunnerctl: cron: field 3 (day of month): 32 is out of range 1–31\n")

        let daemon = try DaemonHarness(config: """
            jobs:
              nightly:
                shell: "true"
                on_calendar: "*-*-* 03:00:00"
                time_zone: Asia/Kolkata
            """)
        defer { daemon.cleanUp() }
        try await daemon.waitUntilReady()
        let fromDaemon = try await ctl(["next", "--job", "nightly", "--count", "2", "--json", "--socket", daemon.socketPath])
        #expect(fromDaemon.status == 0)
        let answer = try APICoding.decoder().decode(NextResponse.self, from: Data(fromDaemon.output.utf8))
        #expect(answer.timeZone == "Asia/Kolkata")
        #expect(answer.next.count == 2)
        #expect(answer.next.allSatisfy { $0.hasSuffix("T03:00:00+05:30") })
        let missing = try await ctl(["next", "--job", "nope", "--socket", daemon.socketPath])
        #expect(missing.status == 1)
        #expect(missing.output == "jobrunnerctl: no job named 'nope'\n")
    }
}
