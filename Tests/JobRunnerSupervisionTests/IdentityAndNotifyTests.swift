import JobRunnerSupervision
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

    static let notifying = Supervisor(eventLoopGroup: MultiThreadedEventLoopGroup.singleton, notify: true, environment: testEnvironment,
                                      logger: testLogger, wallClock: { Timestamp(seconds: Int64(Date().timeIntervalSince1970)) })

    @Test func systemdNotifyStatusBecomesTheRunsProgress() async throws {
        let handle = RunHandle()
        let definition = try job("progress", shell: "systemd-notify --status=50%; systemd-notify --ready; echo $NOTIFY_SOCKET")
        let collected = Mutex<[String]>([])
        let progress = request(definition)
        let result = await Self.notifying.run(progress, handle: handle, onLine: { line in collected.withLock { $0.append(line.text) } })
        #expect(result.outcome == .succeeded)
        #expect(handle.statusText == "50%")
        #expect(handle.isReady)
        // An abstract socket of its own, named after the run: no file to clean up.
        let socket = try #require(collected.withLock { $0 }.first)
        #expect(socket.hasPrefix("@jobrunner/\(getpid())/"), "\(socket)")
        #expect(socket.hasSuffix("-\(progress.id)"))
        #expect(!FileManager.default.fileExists(atPath: String(socket.dropFirst())))
    }

    @Test func extendTimeoutLetsARunOutliveItsTimeout() async throws {
        let extended = try job("extended", shell: "systemd-notify EXTEND_TIMEOUT_USEC=5000000; sleep 1.5", timeout: .milliseconds(700))
        #expect(await Self.notifying.run(request(extended)).outcome == .succeeded)
        let plain = try job("plain", shell: "sleep 1.5", timeout: .milliseconds(700))
        #expect(await Self.notifying.run(request(plain)).outcome == .timedOut)
        // A job cannot push its deadline past what arithmetic allows: the largest number is
        // capped, and the run still ends (here by its own exit).
        let huge = try job("huge", shell: "systemd-notify EXTEND_TIMEOUT_USEC=18446744073709551615; exit 0", timeout: .milliseconds(700))
        #expect(await Self.notifying.run(request(huge)).outcome == .succeeded)
    }

    @Test func aStepsExtendTimeoutPushesOutItsOwnAndTheRunsTimeoutsAndStatusReachesTheRun() async throws {
        let steps: [JobStep] = [
            .process("slow", .shell("systemd-notify --status=halfway; systemd-notify EXTEND_TIMEOUT_USEC=5000000; sleep 1.5"),
                     timeout: .milliseconds(700)),
        ]
        let handle = RunHandle()
        let extended = JobDefinition(name: "extended", command: .argv(["/bin/false"]), steps: steps, timeout: .milliseconds(700))
        let result = await Self.notifying.run(request(extended), handle: handle)
        #expect(result.outcome == .succeeded, "\(result.steps)")
        #expect(handle.statusText == "halfway")
        // Without the extension both timeouts hold.
        let plain = JobDefinition(name: "plain", command: .argv(["/bin/false"]), steps: [.process("slow", .shell("sleep 1.5"))],
                                  timeout: .milliseconds(700))
        #expect(await Self.notifying.run(request(plain)).outcome == .timedOut)
    }

    @Test(.enabled(if: getuid() == 0, "sends as another user only when the tests run as root"))
    func datagramsFromAnotherUserAreDropped() async throws {
        // The run (as root here) waits for a message from nobody; nobody's datagram is dropped,
        // root's own is read.
        let handle = RunHandle()
        let definition = try job("spoofed", shell: """
            setpriv --reuid=65534 --regid=65534 --clear-groups systemd-notify --status=spoofed; \
            systemd-notify --status=genuine
            """)
        let before = NotifyHub.shared.droppedDatagrams
        let result = await Self.notifying.run(request(definition), handle: handle)
        #expect(result.outcome == .succeeded)
        #expect(handle.statusText == "genuine")
        #expect(NotifyHub.shared.droppedDatagrams > before)
    }

    @Test func notifyMessagesParse() {
        #expect(NotifyMessage.parse(Array("STATUS=ok\nREADY=1\nX=y\nnonsense".utf8)) == [.status("ok"), .ready])
        #expect(NotifyMessage.parse(Array("EXTEND_TIMEOUT_USEC=99999999999999999999999".utf8)) == [])
        #expect(NotifyMessage.parse(Array("EXTEND_TIMEOUT_USEC=-5".utf8)) == [])
        #expect(NotifyMessage.parse(Array("EXTEND_TIMEOUT_USEC=18446744073709551615".utf8)) == [.extendTimeout(DurationText.maximum)])
        #expect(NotifyMessage.parse(Array(("STATUS=" + String(repeating: "x", count: 5000)).utf8)) == [.status(String(repeating: "x", count: 1024))])
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
