import Foundation
import JobRunnerControl
import TestSupport
import Testing

/// `jobrunnerctl` against a real daemon.
@Suite(.timeLimit(.minutes(1))) struct CtlTests {
    func ctl(_ arguments: [String]) async throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: productsDirectory + "/jobrunnerctl")
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        let exited = EventQueue<Int32>()
        process.terminationHandler = { exited.push($0.terminationStatus) }
        try process.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        return (try await exited.next(within: .seconds(30)), output)
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
        #expect(result.status == 1)
        #expect(result.output == "jobrunnerctl: cannot connect to /tmp/no-such-jobrunner.sock: no such file — is jobrunnerd running?\n")
    }
}
