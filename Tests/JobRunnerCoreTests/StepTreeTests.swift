import JobRunnerConfig
import JobRunnerCore
import TestSupport
import Testing

/// The rules of a run made of steps, without processes (``ScriptedLeaf`` plays each step).
@Suite(.timeLimit(.minutes(1))) struct StepTreeTests {
    func step(_ name: String, continueOnFailure: Bool = false) -> JobStep {
        .process(name, .argv(["/bin/true"]), continueOnFailure: continueOnFailure)
    }

    func outcomes(_ report: StepTree.Report) -> [String] {
        report.steps.map { String(repeating: " ", count: $0.depth) + "\($0.name) \($0.outcome)" }
    }

    @Test func aSequenceStopsAtItsFirstFailureAndSkipsTheRest() async {
        let script = ScriptedLeaf(["b": .fail(3)])
        let report = await StepTree.run([step("a"), step("b"), step("c")], leaf: script.leaf)
        #expect(outcomes(report) == ["a succeeded", "b failed(3)", "c skipped(not started)"])
        #expect(report.failure == .failed(exitCode: 3))
        #expect(script.started == ["a", "b"])
        #expect(report.steps.failureSummary == "b exit 3")
    }

    @Test func aFailureThatMayContinueIsRecordedButStopsNothing() async {
        let script = ScriptedLeaf(["a": .fail(2)])
        let report = await StepTree.run([step("a", continueOnFailure: true), step("b")], leaf: script.leaf)
        #expect(outcomes(report) == ["a failed(2)", "b succeeded"])
        #expect(report.failure == nil)
        #expect(report.steps.failureSummary == "a exit 2 (continued)")
    }

    @Test func aGroupsFirstFailureCancelsItsRunningSiblingsAndSkipsTheOthers() async {
        let script = ScriptedLeaf(["x": .failAfter("y", 3), "y": .runUntilCancelled])
        let tree: [JobStep] = [.parallel("uploads", max: 2, [step("x"), step("y"), step("z")]), step("after")]
        let report = await StepTree.run(tree, leaf: script.leaf)
        #expect(outcomes(report) == [
            "uploads failed(3)", " x failed(3)", " y cancelled", " z skipped(not started)", "after skipped(not started)",
        ])
        #expect(report.failure == .failed(exitCode: 3))
        #expect(report.steps.failureSummary == "x exit 3; y cancelled")
        #expect(!script.started.contains("z"))
    }

    @Test func aGroupRunsAtMostMaxAtOnceAndAllOfThem() async {
        let script = ScriptedLeaf(Dictionary(uniqueKeysWithValues: (1...6).map { ("s\($0)", ScriptedLeaf.Behaviour.succeedWhenRunning(2)) }))
        let report = await StepTree.run([.parallel("group", max: 2, (1...6).map { step("s\($0)") })], leaf: script.leaf)
        #expect(report.failure == nil)
        #expect(script.mostAtOnce == 2)
        #expect(Set(script.started) == Set((1...6).map { "s\($0)" }))
        #expect(report.steps.map(\.outcome).allSatisfy { $0 == .succeeded })
    }

    @Test func aGroupWithoutMaxRunsEveryStepAtOnce() async {
        let script = ScriptedLeaf(Dictionary(uniqueKeysWithValues: (1...4).map { ("s\($0)", ScriptedLeaf.Behaviour.succeedWhenRunning(4)) }))
        _ = await StepTree.run([.parallel("group", (1...4).map { step("s\($0)") })], leaf: script.leaf)
        #expect(script.mostAtOnce == 4)
    }

    @Test func aFailureInANestedGroupStopsTheOuterGroupAndTheSequence() async {
        let script = ScriptedLeaf(["inner-fail": .failAfter("outer-long", 5), "outer-long": .runUntilCancelled, "inner-ok": .succeed])
        let tree: [JobStep] = [
            .parallel("outer", [.parallel("inner", [step("inner-ok"), step("inner-fail")]), step("outer-long")]),
            step("last"),
        ]
        let report = await StepTree.run(tree, leaf: script.leaf)
        #expect(report.failure == .failed(exitCode: 5))
        let byName = Dictionary(uniqueKeysWithValues: report.steps.map { ($0.name, $0) })
        #expect(byName["outer-long"]?.outcome == .cancelled)
        #expect(byName["inner"]?.outcome == .failed(exitCode: 5))
        #expect(byName["outer"]?.outcome == .failed(exitCode: 5))
        #expect(byName["last"]?.outcome == .skipped(reason: StepResult.notStarted))
        #expect(report.steps.map(\.depth) == [0, 1, 2, 2, 1, 0])
    }

    @Test func cancellingTheTreeCancelsWhatRunsAndStartsNothingMore() async throws {
        let script = ScriptedLeaf(["a": .runUntilCancelled, "b": .runUntilCancelled])
        let task = Task { await StepTree.run([.parallel("both", [step("a"), step("b")]), step("c")], leaf: script.leaf) }
        _ = try await script.events.seen("a started") { $0 == "started a" }
        _ = try await script.events.seen("b started") { $0 == "started b" }
        task.cancel()
        let report = await task.value
        #expect(outcomes(report) == ["both cancelled", " a cancelled", " b cancelled", "c skipped(not started)"])
        #expect(report.failure == .cancelled)
    }

    @Test func aContinuingStepInAGroupDoesNotCancelItsSiblings() async {
        let script = ScriptedLeaf(["soft": .fail(1)])
        let report = await StepTree.run([.parallel("g", [step("soft", continueOnFailure: true), step("hard")])], leaf: script.leaf)
        #expect(report.failure == nil)
        #expect(outcomes(report) == ["g succeeded", " soft failed(1)", " hard succeeded"])
    }
}
