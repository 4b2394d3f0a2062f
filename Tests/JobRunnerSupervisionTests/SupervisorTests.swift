import JobRunnerSupervision
import Foundation
import NIOPosix
import JobRunnerConfig
import JobRunnerCore
import JobRunnerSchedule
import Synchronization
import TestSupport
import Testing

/// Real processes, real signals.
@Suite(.timeLimit(.minutes(1))) struct SupervisorTests {
    let supervisor = makeSupervisor()

    @Test func outcomesAreValues() async throws {
        let ok = await supervisor.run(request(try job("ok", shell: "exit 0")))
        #expect(ok.outcome == .succeeded)
        let failed = await supervisor.run(request(try job("failed", shell: "exit 7")))
        #expect(failed.outcome == .failed(exitCode: 7))
        let signalled = await supervisor.run(request(try job("signalled", shell: "kill -USR1 $$")))
        #expect(signalled.outcome == .signalled(SIGUSR1))
    }

    @Test func outputIsReadLineByLineFromBothStreams() async throws {
        let tail = OutputTail(capacity: 1024)
        let lines = Mutex<[OutputLine]>([])
        let result = await supervisor.run(
            request(try job("out", shell: "echo one; echo two >&2; printf 'three'")), output: tail,
            onLine: { line in lines.withLock { $0.append(line) } })
        #expect(result.outcome == .succeeded)
        let received = lines.withLock { $0 }
        #expect(received.filter { $0.stream == .stdout }.map(\.text) == ["one", "three"])
        #expect(received.filter { $0.stream == .stderr }.map(\.text) == ["two"])
        #expect(tail.lines.count == 3)
    }

    @Test func longLinesAreSplitNotFatal() async throws {
        let lines = Mutex<[Int]>([])
        // 200 KiB without a newline.
        let result = await supervisor.run(
            request(try job("long", shell: "head -c 204800 /dev/zero | tr '\\0' x")),
            onLine: { line in lines.withLock { $0.append(line.text.utf8.count) } })
        #expect(result.outcome == .succeeded)
        #expect(lines.withLock { $0 } == [65536, 65536, 65536, 8192])
    }

    @Test func timeoutReachesTheWholeProcessGroup() async throws {
        // The background grandchild ignores SIGTERM; it must still be gone afterwards.
        let shell = "sh -c 'trap \"\" TERM; exec sleep 300' & exec sleep 301"
        let timed = request(try job("timeout", shell: "exec sh -c \"\(shell)\"", timeout: .seconds(1), killGrace: .seconds(5)))
        let pids = EventQueue<Int32>()
        let supervisor = self.supervisor
        let started = ContinuousClock.now
        let task = Task { await supervisor.run(timed, onStarted: { pid, _ in pids.push(pid) }) }
        let leader = try await pids.next()
        // Both processes, collected while the run is alive (the timeout is a second away).
        try await poll("two processes carry the run's id", within: .milliseconds(900)) { ProcessTable.ofRun(timed.id.rawValue).count == 2 }
        let collected = ProcessTable.ofRun(timed.id.rawValue)
        let result = await task.value
        #expect(result.outcome == .timedOut)
        // The leader died of SIGTERM, so the survivor was killed at once, not after kill_grace.
        #expect(ContinuousClock.now - started < .seconds(4))
        let left = ProcessTable.leftovers(ofRun: timed.id.rawValue, session: leader, collected: collected)
        #expect(left.isEmpty, "left behind: \(left)")
    }

    @Test func aRunWhoseOutputIsHeldOpenFromOutsideEndsAtTheDrainLimit() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let escaped = directory.file("escaped")
        // A process in a session of its own keeps the run's stdout and stderr open after the run's exit.
        let shell = "echo before; setsid sh -c 'echo $$ > \(escaped).new; mv \(escaped).new \(escaped); exec sleep 60' & "
            + "while [ ! -e \(escaped) ]; do sleep 0.01; done"
        let lines = Mutex<[String]>([])
        let started = ContinuousClock.now
        let result = await supervisor.run(request(try job("held", shell: shell, timeout: .seconds(20))), onLine: { line in lines.withLock { $0.append(line.text) } })
        let elapsed = ContinuousClock.now - started
        if let pid = Int32((try? String(contentsOfFile: escaped, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "") {
            kill(pid, SIGKILL)
        }
        #expect(result.outcome == .succeeded)
        #expect(lines.withLock { $0 } == ["before"])
        // Not before the drain limit (2 s), and not much after it.
        #expect(elapsed >= .seconds(2), "\(elapsed)")
        #expect(elapsed < .seconds(6), "\(elapsed)")
    }

    @Test func leaderIgnoringSigtermIsKilledAfterGrace() async throws {
        let started = ContinuousClock.now
        let result = await supervisor.run(request(try job("stubborn", shell: "trap '' TERM; sleep 300 & wait; sleep 300",
                                                           timeout: .milliseconds(200), killGrace: .milliseconds(500))))
        let elapsed = ContinuousClock.now - started
        #expect(result.outcome == .timedOut)
        #expect(elapsed >= .milliseconds(700))
        #expect(elapsed < .seconds(5))
    }

    @Test func spawnFailures() async throws {
        let missing = JobDefinition(name: "missing", command: .argv(["no-such-program-here"]))
        guard case .spawnFailed(let reason) = await supervisor.run(request(missing)).outcome else {
            Issue.record("expected spawn_failed")
            return
        }
        #expect(reason.contains("not found in PATH"))

        var badDirectory = JobDefinition(name: "dir", command: .argv(["/bin/true"]))
        badDirectory.workingDirectory = "/no/such/directory"
        let outcome = await supervisor.run(request(badDirectory)).outcome
        #expect(outcome == .spawnFailed(reason: "working directory /no/such/directory: No such file or directory"))

        let notExecutable = JobDefinition(name: "noexec", command: .argv(["/etc/hostname"]))
        guard case .spawnFailed(let execReason) = await supervisor.run(request(notExecutable)).outcome else {
            Issue.record("expected spawn_failed")
            return
        }
        #expect(execReason.hasPrefix("exec /etc/hostname:"))
    }

    @Test func environmentIsExactlyTheDocumentedSet() async throws {
        let lines = Mutex<[String]>([])
        // The daemon's environment: a secret, a home, a language; only PATH, LANG and LC_ALL pass.
        let daemon = ["JOBRUNNER_TEST_SECRET": "must-not-leak", "HOME": "/root", "LANG": "C.UTF-8", "PATH": "/usr/bin:/bin"]
        var definition = try job("env", shell: "env", environment: ["GREETING": "hello world"])
        definition.command = .argv(["/usr/bin/env"])
        let result = await makeSupervisor(environment: daemon).run(request(definition), onLine: { line in
            lines.withLock { $0.append(line.text) }
        })
        #expect(result.outcome == .succeeded)
        let names = Set(lines.withLock { $0 }.compactMap { $0.split(separator: "=", maxSplits: 1).first.map(String.init) })
        #expect(names == ["PATH", "LANG", "GREETING", "JOBRUNNER_JOB", "JOBRUNNER_RUN_ID", "JOBRUNNER_SCHEDULED_TIME", "JOBRUNNER_ATTEMPT"])
        #expect(lines.withLock { $0 }.contains("GREETING=hello world"))
        #expect(lines.withLock { $0 }.contains("JOBRUNNER_JOB=env"))
        #expect(lines.withLock { $0 }.contains("JOBRUNNER_SCHEDULED_TIME=2027-01-15T08:00:00Z"))
    }

    @Test func stdinIsDevNullAndSignalsAreDefault() async throws {
        let lines = Mutex<[String]>([])
        // `cat` reads stdin to its end at once; SigIgn shows ignored signals (SIGPIPE must not be).
        let result = await supervisor.run(request(try job("stdin", shell: "cat; grep SigIgn /proc/self/status")),
                                          onLine: { line in lines.withLock { $0.append(line.text) } })
        #expect(result.outcome == .succeeded)
        #expect(lines.withLock { $0 } == ["SigIgn:\t0000000000000000"])
    }

    @Test func cancellationRunsTheKillSequence() async throws {
        let started = EventQueue<Int32>()
        let cancelled = request(try job("cancel", shell: "exec sleep 300", killGrace: .seconds(5)))
        let supervisor = self.supervisor
        let task = Task {
            await supervisor.run(cancelled, onStarted: { pid, _ in started.push(pid) })
        }
        let pid = try await started.next()
        let alive = ProcessTable.ofRun(cancelled.id.rawValue)
        #expect(alive.map(\.pid) == [pid])
        task.cancel()
        let result = await task.value
        #expect(result.outcome == .cancelled)
        #expect(result.pid == pid)
        #expect(ProcessTable.leftovers(ofRun: cancelled.id.rawValue, session: pid, collected: alive).isEmpty)
    }

    @Test func withoutCloseRangeNoDaemonDescriptorReachesAJobWithALowNofileLimit() async throws {
        // Descriptors of the daemon, open (not close-on-exec) above the job's nofile limit.
        var opened: [Int32] = []
        for _ in 0..<40 { opened.append(open("/dev/null", O_RDONLY)) }
        defer { for fd in opened { close(fd) } }
        #expect(opened.allSatisfy { $0 >= 0 } && opened.max()! > 40)
        let supervisor = Supervisor(eventLoopGroup: MultiThreadedEventLoopGroup.singleton, environment: testEnvironment,
                                    descriptorFallbackForTests: true, logger: testLogger,
                                    wallClock: { Timestamp(seconds: Int64(Date().timeIntervalSince1970)) })
        var definition = JobDefinition(name: "fds", command: .argv(["/bin/ls", "/proc/self/fd"]))
        definition.limits.openFiles = 16
        let lines = Mutex<[String]>([])
        let result = await supervisor.run(request(definition), onLine: { line in lines.withLock { $0.append(line.text) } })
        #expect(result.outcome == .succeeded)
        // 0, 1, 2 and the directory ls itself opened to list.
        #expect(lines.withLock { $0 }.compactMap(Int.init).sorted() == [0, 1, 2, 3], "\(lines.withLock { $0 })")
    }

    @Test func aFollowerThatFallsBehindKeepsItsBudgetAndIsToldWhatItMissed() async throws {
        // 4,000 lines of 1,000 bytes (4 MB); the follower reads nothing until the run has ended.
        let tail = OutputTail(capacity: 64 * 1024)
        let (kept, follower) = tail.follow()
        #expect(kept.isEmpty)
        let result = await supervisor.run(request(try job("loud", shell: "yes $(head -c 999 /dev/zero | tr '\\0' x) | head -n 4000")),
                                          output: tail)
        #expect(result.outcome == .succeeded)
        tail.finish()
        var lines = 0
        var bytes = 0
        var dropped = 0
        var order: [String] = []
        for await event in follower {
            switch event {
            case .line(let line):
                lines += 1
                bytes += line.text.utf8.count + 1
                if order.last != "line" { order.append("line") }
            case .dropped(let count):
                dropped += count
                order.append("dropped")
            case .idle:
                break
            }
        }
        // What fit in the budget first, then one gap for the rest: nothing lost silently.
        #expect(bytes <= OutputFollower.budget, "\(bytes) bytes held")
        #expect(lines + dropped == 4_000, "\(lines) lines and \(dropped) dropped")
        #expect(lines >= 1_000 && dropped > 0)
        #expect(order == ["line", "dropped"], "\(order)")
    }
}
