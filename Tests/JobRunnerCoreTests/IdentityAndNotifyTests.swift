import Foundation
import JobRunnerConfig
import JobRunnerCore
import JobRunnerSchedule
import NIOPosix
import Synchronization
import TestSupport
import Testing

/// Who a run runs as, its limits and environment, what it says on its notify socket, and its hooks.
@Suite(.timeLimit(.minutes(1))) struct IdentityAndNotifyTests {
    let supervisor = makeSupervisor()

    func lines(of definition: JobDefinition, supervisor: Supervisor? = nil) async -> (RunResult, [String]) {
        let collected = Mutex<[String]>([])
        let result = await (supervisor ?? self.supervisor).run(request(definition), onLine: { line in
            collected.withLock { $0.append(line.text) }
        })
        return (result, collected.withLock { $0 })
    }

    @Test(.enabled(if: getuid() == 0, "runs as another user only when the tests run as root"))
    func runsAsNobodyWithItsGroups() async throws {
        var definition = try job("who", shell: "id -u; id -g; id -G; echo $HOME $USER; umask")
        definition.identity = RunIdentity(user: "nobody", uid: 65534, gid: 65534, groups: [65534], home: "/nonexistent", shell: "/usr/sbin/nologin")
        definition.umask = 0o027
        let (result, output) = await lines(of: definition)
        #expect(result.outcome == .succeeded)
        #expect(output == ["65534", "65534", "65534", "/nonexistent nobody", "0027"])
    }

    @Test func resourceLimitsAndNiceAreSeenByTheJob() async throws {
        var definition = try job("limits", shell: "ulimit -n; ulimit -c; ulimit -f; cut -d' ' -f19 /proc/self/stat")
        definition.limits.openFiles = 256
        definition.limits.coreSize = 0
        definition.limits.fileSize = 1024 * 1024
        definition.nice = 7
        let (result, output) = await lines(of: definition)
        #expect(result.outcome == .succeeded)
        // dash's ulimit -f counts 512-byte blocks.
        #expect(output == ["256", "0", "2048", "7"])
    }

    @Test func inheritEnvironmentChoosesWhatComesFromTheDaemon() async throws {
        var definition = try job("env", shell: "true")
        definition.command = .argv(["/usr/bin/env"])
        definition.inheritEnvironment = ["JOBRUNNER_TEST_SHARED"]
        let daemon = ["JOBRUNNER_TEST_SHARED": "shared", "JOBRUNNER_TEST_OTHER": "not inherited", "PATH": "/usr/bin:/bin"]
        let (_, output) = await lines(of: definition, supervisor: makeSupervisor(environment: daemon))
        let names = Set(output.compactMap { $0.split(separator: "=").first.map(String.init) })
        #expect(names == ["JOBRUNNER_TEST_SHARED", "JOBRUNNER_JOB", "JOBRUNNER_RUN_ID", "JOBRUNNER_SCHEDULED_TIME", "JOBRUNNER_ATTEMPT"])
    }

    @Test func systemdNotifyStatusBecomesTheRunsProgress() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let supervisor = Supervisor(eventLoopGroup: MultiThreadedEventLoopGroup.singleton, runtimeDirectory: directory.file("run"),
                                    environment: testEnvironment, logger: testLogger, wallClock: { Timestamp(seconds: Int64(Date().timeIntervalSince1970)) })
        let handle = RunHandle()
        let definition = try job("progress", shell: "systemd-notify --status=50%; systemd-notify --ready; echo $NOTIFY_SOCKET")
        let collected = Mutex<[String]>([])
        let result = await supervisor.run(request(definition), handle: handle, onLine: { line in collected.withLock { $0.append(line.text) } })
        #expect(result.outcome == .succeeded)
        #expect(handle.statusText == "50%")
        #expect(handle.isReady)
        let socket = try #require(collected.withLock { $0 }.first)
        #expect(socket.hasPrefix(directory.file("run") + "/runs/"))
        #expect(socket.hasSuffix("/notify"))
        // Removed when the run ended.
        #expect(!FileManager.default.fileExists(atPath: socket))
    }

    @Test func extendTimeoutLetsARunOutliveItsTimeout() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let supervisor = Supervisor(eventLoopGroup: MultiThreadedEventLoopGroup.singleton, runtimeDirectory: directory.file("run"),
                                    environment: testEnvironment, logger: testLogger, wallClock: { Timestamp(seconds: Int64(Date().timeIntervalSince1970)) })
        let extended = try job("extended", shell: "systemd-notify EXTEND_TIMEOUT_USEC=5000000; sleep 1.5", timeout: .milliseconds(700))
        #expect(await supervisor.run(request(extended)).outcome == .succeeded)
        let plain = try job("plain", shell: "sleep 1.5", timeout: .milliseconds(700))
        #expect(await supervisor.run(request(plain)).outcome == .timedOut)
    }

    @Test func hooksGetTheOutcomeAndTheOutputTail() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let report = directory.file("hook.txt")
        var definition = try job("hooked", shell: "echo first line; echo second line; exit 4")
        definition.onFailure = .shell("{ env | grep ^JOBRUNNER_ | sort; cat; } > \(report)")
        let request = request(definition)
        let tail = OutputTail(capacity: 1024)
        let result = await supervisor.run(request, output: tail)
        #expect(result.outcome == .failed(exitCode: 4))
        let hookOutcome = await supervisor.runHook(definition.onFailure!, kind: "on_failure", for: request, result: result, output: tail.text)
        #expect(hookOutcome == .succeeded)
        let written = try String(contentsOfFile: report, encoding: .utf8).split(separator: "\n").map(String.init)
        #expect(written.contains("JOBRUNNER_OUTCOME=failed"))
        #expect(written.contains("JOBRUNNER_EXIT_CODE=4"))
        #expect(written.contains("JOBRUNNER_JOB=hooked"))
        #expect(written.contains("JOBRUNNER_RUN_ID=\(request.id)"))
        #expect(written.suffix(2) == ["first line", "second line"])
    }

    @Test func aHookHasItsOwnTimeout() async throws {
        var definition = try job("slow-hook", shell: "exit 1")
        definition.hookTimeout = .milliseconds(300)
        definition.killGrace = .milliseconds(100)
        let request = request(definition)
        let result = await supervisor.run(request)
        let started = ContinuousClock.now
        let outcome = await supervisor.runHook(.shell("sleep 30"), kind: "on_failure", for: request, result: result, output: "")
        #expect(outcome == .timedOut)
        #expect(ContinuousClock.now - started < .seconds(5))
    }
}
