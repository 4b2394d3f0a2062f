import Foundation
import TestSupport
import Testing

/// `jobrunnerd --check-config` and a bad configuration at start.
@Suite(.timeLimit(.minutes(1))) struct ConfigCheckTests {
    func runDaemon(_ arguments: [String], environment: [String: String] = [:]) async throws -> (status: Int32, output: String) {
        var env = ProcessInfo.processInfo.environment
        for (key, value) in environment { env[key] = value }
        return try await ChildProcess.run(productsDirectory + "/jobrunnerd", arguments, environment: env, within: .seconds(30))
    }

    @Test func validConfigExitsZero() async throws {
        let result = try await runDaemon(["--check-config", "--config", repositoryRoot + "/config/jobrunner.full.yaml"])
        #expect(result.status == 0)
        #expect(result.output.contains("OK, 7 jobs"))
    }

    @Test func invalidConfigPrintsEveryErrorAndExits78() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.write("bad.yaml", """
            jobs:
              a:
                command: ["/bin/true"]
                timout: 5s
              b:
                schedule: "0 0 32 * *"
                shell: "true"
            """)
        let result = try await runDaemon(["--check-config", "--config", path])
        #expect(result.status == 78)
        let lines = result.output.split(separator: "\n").map(String.init)
        #expect(lines == [
            "\(path):4:5: unknown key 'timout' in job 'a' (did you mean 'timeout'?)",
            "\(path):6:20: job 'b': schedule '0 0 32 * *': field 3 (day of month): 32 is out of range 1–31",
        ])
    }

    @Test func badConfigAtStartExits78AndTellsSystemd() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.write("bad.yaml", "jobs:\n  a:\n    shell: true\n    every: often\n")
        let notify = NotifyListener(path: directory.file("notify.sock"))
        defer { notify.close() }
        let result = try await runDaemon(["--config", path, "--state-directory", directory.file("state"), "--socket",
                                          directory.file("s.sock")], environment: ["NOTIFY_SOCKET": notify.path])
        #expect(result.status == 78)
        #expect(result.output.contains("\(path):4:12: job 'a': every: 'often' is not a duration"))
        let message = try await notify.waitFor("ERRNO=")
        #expect(message.contains("STATUS=invalid configuration: \(path):4:12:"))
        #expect(message.contains("ERRNO=22"))
    }
}
