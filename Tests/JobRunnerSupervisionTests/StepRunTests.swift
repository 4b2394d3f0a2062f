import Foundation
import JobRunnerConfig
import JobRunnerCore
import JobRunnerSchedule
import JobRunnerSupervision
import Synchronization
import TestSupport
import Testing

/// Runs made of steps, with real processes: each step in its own session, the job's kill
/// sequence for a cancelled sibling, nothing left in /proc.
@Suite(.timeLimit(.minutes(1))) struct StepRunTests {
    let supervisor = makeSupervisor()

    func stepJob(_ name: String, _ steps: [JobStep], timeout: Duration? = nil, killGrace: Duration = .seconds(1)) -> JobDefinition {
        JobDefinition(name: name, command: .argv(["/bin/false"]), steps: steps, timeout: timeout, killGrace: killGrace)
    }

    func byName(_ result: RunResult) -> [String: StepResult] {
        Dictionary(uniqueKeysWithValues: result.steps.map { ($0.name, $0) })
    }

    @Test func stepsRunInOrderEachWithItsNameAndOutputAndTheSequenceStopsAtAFailure() async throws {
        let directory = TemporaryDirectory("jobrunner-steps")
        defer { directory.remove() }
        let log = directory.file("order")
        let job = stepJob("seq", [
            .process("first", .shell("echo \"$JOBRUNNER_STEP $$\" >> \(log); echo hello")),
            .process("second", .shell("echo \"$JOBRUNNER_STEP $$\" >> \(log); echo oops >&2; exit 4")),
            .process("third", .shell("echo \"$JOBRUNNER_STEP\" >> \(log)")),
        ])
        let lines = Mutex<[OutputLine]>([])
        let result = await supervisor.run(request(job), onLine: { line in lines.withLock { $0.append(line) } })
        #expect(result.outcome == .failed(exitCode: 4))
        let written = try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n").map { $0.split(separator: " ") }
        #expect(written.map { String($0[0]) } == ["first", "second"], "the third step never ran")
        // Each step was a process of its own.
        #expect(Set(written.map { $0[1] }).count == 2)
        let steps = byName(result)
        #expect(steps["first"]?.outcome == .succeeded)
        #expect(steps["second"]?.outcome == .failed(exitCode: 4))
        #expect(steps["third"]?.outcome == .skipped(reason: StepResult.notStarted))
        #expect(steps["first"]?.pid != nil && steps["first"]?.usage != nil)
        #expect(result.pid == steps["first"]?.pid, "the run's pid is its first step's")
        let printed = lines.withLock { $0 }.map { "\($0.step ?? "-") \($0.stream.rawValue) \($0.text)" }
        #expect(printed.sorted() == ["first stdout hello", "second stderr oops"])
    }

    @Test func aFailingStepCancelsASiblingThatIgnoresSigtermAndNothingIsLeft() async throws {
        let job = stepJob("group", [
            .parallel("uploads", [
                .process("upload-a", .shell("sleep 0.3; exit 3")),
                .process("upload-b", .shell("trap '' TERM; sleep 300 & wait; sleep 300")),
            ]),
            .process("ping", .argv(["/bin/true"])),
        ], killGrace: .milliseconds(700))
        let run = request(job)
        let supervisor = self.supervisor
        let started = ContinuousClock.now
        let task = Task { await supervisor.run(run) }
        try await poll("both steps run", within: .seconds(5)) { ProcessTable.ofRun(run.id.rawValue).count >= 3 }
        let collected = ProcessTable.ofRun(run.id.rawValue)
        let result = await task.value
        let elapsed = ContinuousClock.now - started
        #expect(result.outcome == .failed(exitCode: 3))
        let steps = byName(result)
        #expect(steps["upload-a"]?.outcome == .failed(exitCode: 3))
        #expect(steps["upload-b"]?.outcome == .cancelled)
        #expect(steps["ping"]?.outcome == .skipped(reason: StepResult.notStarted))
        #expect(result.steps.failureSummary == "upload-a exit 3; upload-b cancelled")
        // upload-b ignored SIGTERM: it went at kill_grace, not before and not much later.
        #expect(elapsed >= .milliseconds(1000), "\(elapsed)")
        #expect(elapsed < .seconds(5), "\(elapsed)")
        await supervisor.sweepLeftovers(of: run)
        let left = ProcessTable.leftovers(ofRun: run.id.rawValue, collected: collected)
        #expect(left.isEmpty, "left behind: \(left)")
    }

    @Test func aGroupsMaxHoldsForRealProcesses() async throws {
        let directory = TemporaryDirectory("jobrunner-steps")
        defer { directory.remove() }
        let slots = directory.file("running")
        let counts = directory.file("counts")
        mkdir(slots, 0o755)
        // Each step marks itself running, counts who is, waits a little, and leaves.
        let body = "touch \(slots)/$JOBRUNNER_STEP; ls \(slots) | wc -l >> \(counts); sleep 0.2; rm \(slots)/$JOBRUNNER_STEP"
        let job = stepJob("max", [.parallel("five", max: 2, (1...5).map { .process("s\($0)", .shell(body)) })])
        let result = await supervisor.run(request(job))
        #expect(result.outcome == .succeeded)
        let seen = try String(contentsOfFile: counts, encoding: .utf8).split(separator: "\n").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        #expect(seen.count == 5, "every step ran once")
        #expect(seen.max()! <= 2, "at most 2 at once: \(seen)")
    }

    @Test func theRunsTimeoutTearsDownAGroupMidway() async throws {
        let job = stepJob("slow", [
            .process("quick", .argv(["/bin/true"])),
            .parallel("both", [
                .process("a", .shell("exec sleep 300")),
                .process("b", .shell("trap '' TERM; sleep 300 & wait; sleep 300")),
            ]),
            .process("never", .argv(["/bin/true"])),
        ], timeout: .milliseconds(800), killGrace: .milliseconds(300))
        let run = request(job)
        let supervisor = self.supervisor
        let task = Task { await supervisor.run(run) }
        try await poll("the group runs", within: .seconds(5)) { ProcessTable.ofRun(run.id.rawValue).count >= 3 }
        let collected = ProcessTable.ofRun(run.id.rawValue)
        let result = await task.value
        #expect(result.outcome == .timedOut)
        let steps = byName(result)
        #expect(steps["quick"]?.outcome == .succeeded)
        #expect(steps["a"]?.outcome == .cancelled)
        #expect(steps["b"]?.outcome == .cancelled)
        #expect(steps["never"]?.outcome == .skipped(reason: StepResult.notStarted))
        await supervisor.sweepLeftovers(of: run)
        #expect(ProcessTable.leftovers(ofRun: run.id.rawValue, collected: collected).isEmpty)
    }

    @Test func aStepsOwnTimeoutFailsTheStepAndTheRun() async throws {
        let job = stepJob("step-timeout", [
            .process("slow", .shell("exec sleep 300"), timeout: .milliseconds(300)),
            .process("after", .argv(["/bin/true"])),
        ])
        let result = await supervisor.run(request(job))
        #expect(result.outcome == .timedOut)
        #expect(byName(result)["slow"]?.outcome == .timedOut)
        #expect(byName(result)["after"]?.outcome == .skipped(reason: StepResult.notStarted))
    }

    @Test func cancellingTheRunCancelsItsSteps() async throws {
        let job = stepJob("cancel", [.parallel("g", [.process("a", .shell("exec sleep 300")), .process("b", .shell("exec sleep 301"))])])
        let run = request(job)
        let handle = RunHandle()
        let supervisor = self.supervisor
        let task = Task { await supervisor.run(run, handle: handle) }
        try await poll("both steps run", within: .seconds(5)) { ProcessTable.ofRun(run.id.rawValue).count == 2 }
        handle.cancel()
        let result = await task.value
        #expect(result.outcome == .cancelled)
        #expect(result.steps.filter { $0.kind != .parallel }.map(\.outcome) == [.cancelled, .cancelled])
        #expect(ProcessTable.ofRun(run.id.rawValue).isEmpty)
    }
}
