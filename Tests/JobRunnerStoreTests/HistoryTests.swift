import JobRunnerHistory
import Foundation
import JobRunnerConfig
import JobRunnerCore
import JobRunnerSchedule
import JobRunnerStore
import Logging
import ServiceLifecycle
import TestSupport
import Testing

let quiet: Logger = {
    var logger = Logger(label: "store-test")
    logger.logLevel = .critical
    return logger
}()

/// Opens a history file (a blocking call, made synchronously).
func openHistory(_ path: String) throws -> SQLiteHistory {
    try SQLiteHistory(path: path)
}

func record(_ job: String, _ id: String, scheduled: Int64, outcome: RunOutcome? = nil) -> RunRecord {
    var record = RunRecord(id: RunID(rawValue: id), job: job, trigger: .schedule, scheduledTime: Timestamp(seconds: scheduled),
                           queuedAt: Timestamp(seconds: scheduled))
    if let outcome {
        record.outcome = outcome
        record.startedAt = Timestamp(seconds: scheduled)
        record.endedAt = Timestamp(seconds: scheduled + 1)
        record.output = OutputTail(capacity: 100, lines: [OutputLine(stream: .stdout, text: "done \(id)")])
    }
    return record
}

/// A writer running as a service, stopped (and flushed) by `stop()`.
struct RunningWriter {
    let writer: HistoryWriter
    let group: ServiceGroup
    let task: Task<Void, Never>

    let health = EventQueue<String>()

    init(_ history: SQLiteHistory, keepPerJob: Int = 100, maxAge: Duration = .seconds(86_400)) {
        let health = self.health
        writer = HistoryWriter(history: history, retention: .init(keepPerJob: keepPerJob, maxAge: maxAge), logger: quiet,
                               onHealthChange: { health.push($0 ?? "healthy") })
        group = ServiceGroup(configuration: .init(services: [writer], logger: quiet))
        let group = self.group
        task = Task { try? await group.run() }
    }

    func stop() async {
        await group.triggerGracefulShutdown()
        await task.value
    }
}

@Suite(.timeLimit(.minutes(1))) struct HistoryTests {
    @Test func eventsAreWrittenInOrderAndReadBack() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let history = try openHistory(directory.file("state.sqlite"))
        let running = RunningWriter(history)
        let fired = record("backup", "01a", scheduled: 1_800_000_000)
        running.writer.record(.known(jobs: ["backup"], at: Timestamp(seconds: 1_799_999_000)))
        running.writer.record(.fired(fired, occurrence: fired.scheduledTime))
        await running.writer.flush()
        // Flushed: the fire is on disk before anything else happens.
        let waiting = try #require(try await history.run(id: fired.id))
        #expect(waiting.outcome == nil)
        running.writer.record(.started(id: fired.id, pid: 4242, at: Timestamp(seconds: 1_800_000_000)))
        running.writer.record(.finished(record("backup", "01a", scheduled: 1_800_000_000, outcome: .failed(exitCode: 3))))
        await running.stop()

        let stored = try #require(try await history.run(id: fired.id))
        #expect(stored.outcome == .failed(exitCode: 3))
        #expect(stored.pid == 4242)
        #expect(stored.output?.lines == [OutputLine(stream: .stdout, text: "done 01a")])
        let memory = try #require(try await history.jobMemories()["backup"])
        #expect(memory.lastOccurrence == Timestamp(seconds: 1_800_000_000))
        #expect(memory.firstSeen == Timestamp(seconds: 1_799_999_000))
        #expect(memory.paused == false)
    }

    @Test func outputTimesAndWhatARunCostAreKept() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let history = try openHistory(directory.file("state.sqlite"))
        let running = RunningWriter(history)
        var finished = record("backup", "01b", scheduled: 1_800_000_000, outcome: .succeeded)
        let start = Timestamp(microseconds: 1_800_000_000_250_000)
        let lines = [OutputLine(stream: .stdout, text: "one", at: start), OutputLine(stream: .stderr, text: "two", at: start),
                     OutputLine(stream: .stdout, text: "three", at: start.advanced(by: .microseconds(1_500))),
                     OutputLine(stream: .stdout, text: "back", at: start.advanced(by: .microseconds(-7)))]
        finished.output = OutputTail(capacity: 1000, lines: lines)
        finished.usage = ResourceUsage(userMicroseconds: 1_200_000, systemMicroseconds: 30_000, maxResidentBytes: 47_000_000)
        running.writer.record(.finished(finished))
        var small = record("backup", "01c", scheduled: 1_800_000_060, outcome: .succeeded)
        small.usage = ResourceUsage(userMicroseconds: 1_000, systemMicroseconds: 2_000, maxResidentBytes: nil, maxResidentBound: 49_000_000)
        running.writer.record(.finished(small))
        await running.stop()

        let stored = try #require(try await history.run(id: finished.id))
        #expect(stored.output?.lines == lines, "each line with its time, in order (a clock step back included)")
        #expect(stored.usage == finished.usage)
        #expect(try await history.run(id: small.id)?.usage == small.usage)
        // Times cost a few bytes a line: deltas from the line before.
        let encoded = StoredOutput.encode(lines)
        #expect(encoded == "O1800000000250000 one\nE0 two\nO1500 three\nO-1507 back")
        // Rows written before lines had times read back without them.
        #expect(StoredOutput.decode("o old\ne older") == [OutputLine(stream: .stdout, text: "old"), OutputLine(stream: .stderr, text: "older")])
    }

    @Test func stepsAndTheStepOfEachLineAreKept() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let history = try openHistory(directory.file("state.sqlite"))
        let running = RunningWriter(history)
        var finished = record("nightly", "01s", scheduled: 1_800_000_000, outcome: .failed(exitCode: 3))
        let at = Timestamp(microseconds: 1_800_000_000_000_000)
        let lines = [OutputLine(stream: .stdout, text: "dumped 3 tables", at: at, step: "dump"),
                     OutputLine(stream: .stderr, text: "upload refused", at: at.advanced(by: .microseconds(10)), step: "upload-a")]
        finished.output = OutputTail(capacity: 1000, lines: lines)
        finished.steps = [
            StepResult(name: "dump", kind: .shell, depth: 0, outcome: .succeeded, startedAt: at, endedAt: at.advanced(by: .seconds(2)),
                       pid: 101, usage: ResourceUsage(userMicroseconds: 5, systemMicroseconds: 6, maxResidentBytes: nil, maxResidentBound: 7)),
            StepResult(name: "parallel-1", kind: .parallel, depth: 0, outcome: .failed(exitCode: 3), startedAt: at, endedAt: at),
            StepResult(name: "upload-a", kind: .command, depth: 1, outcome: .failed(exitCode: 3), startedAt: at, endedAt: at, pid: 102),
            StepResult(name: "upload-b", kind: .command, depth: 1, outcome: .signalled(9), pid: 103),
            StepResult(name: "late", kind: .command, depth: 1, outcome: .spawnFailed(reason: "no such\tfile\nhere")),
            StepResult(name: "ping", kind: .shell, depth: 0, outcome: .skipped(reason: StepResult.notStarted), continueOnFailure: true),
        ]
        running.writer.record(.finished(finished))
        await running.stop()

        let stored = try #require(try await history.run(id: finished.id))
        #expect(stored.output?.lines == lines)
        var expected = finished.steps
        expected[4].outcome = .spawnFailed(reason: "no such file here")
        #expect(stored.steps == expected)
        #expect(StoredOutput.encode(lines) == "O1800000000000000@dump dumped 3 tables\nE10@upload-a upload refused")
        // A run of one command has no steps on record.
        #expect(StoredSteps.encode([]) == nil)
        #expect(StoredSteps.decode(nil).isEmpty && StoredSteps.decode("garbage\n1\t2").isEmpty)
    }

    @Test func unfinishedRunsAreMarkedInterruptedOnRecovery() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let path = directory.file("state.sqlite")
        do {
            let history = try openHistory(path)
            let running = RunningWriter(history)
            running.writer.record(.fired(record("a", "01", scheduled: 100), occurrence: nil))
            running.writer.record(.started(id: RunID(rawValue: "01"), pid: 99, at: Timestamp(seconds: 101)))
            running.writer.record(.fired(record("a", "02", scheduled: 200), occurrence: nil))
            running.writer.record(.settled(record("b", "03", scheduled: 300, outcome: .succeeded), occurrence: nil))
            await running.stop()
        }
        // A new daemon opens the same file.
        let history = try openHistory(path)
        let interrupted = try await history.recoverInterrupted(at: Timestamp(seconds: 400))
        #expect(Set(interrupted.map(\.id.rawValue)) == ["01", "02"])
        #expect(interrupted.first { $0.id.rawValue == "01" }?.pid == 99)
        let first = try #require(try await history.run(id: RunID(rawValue: "01")))
        #expect(first.outcome == .interrupted)
        #expect(first.endedAt == Timestamp(seconds: 400))
        #expect(try await history.run(id: RunID(rawValue: "03"))?.outcome == .succeeded)
        #expect(try await history.recoverInterrupted(at: Timestamp(seconds: 500)).isEmpty)
    }

    @Test func retentionKeepsExactlyTheConfiguredRows() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let history = try openHistory(directory.file("state.sqlite"))
        let running = RunningWriter(history, keepPerJob: 5, maxAge: .seconds(3600))
        let now = Int64(Date().timeIntervalSince1970)
        for index in 0..<12 {
            let id = String(format: "%04d", index)
            running.writer.record(.finished(record("busy", "b" + id, scheduled: now - 100 + Int64(index), outcome: .succeeded)))
        }
        for index in 0..<3 {
            running.writer.record(.finished(record("quiet", "q\(index)", scheduled: now - 50, outcome: .succeeded)))
        }
        // More jobs than one pruning transaction takes (100): the last, by name, is pruned too.
        for index in 0..<150 {
            running.writer.record(.finished(record(String(format: "f%03d", index), "f\(index)", scheduled: now - 60, outcome: .succeeded)))
        }
        for index in 0..<8 {
            running.writer.record(.finished(record("zz", "z\(index)", scheduled: now - 40 + Int64(index), outcome: .succeeded)))
        }
        // Two runs far older than max_age.
        running.writer.record(.finished(record("old", "o1", scheduled: now - 7200, outcome: .succeeded)))
        running.writer.record(.finished(record("old", "o2", scheduled: now - 7300, outcome: .succeeded)))
        await running.writer.flush()
        await running.writer.pruneAll()
        #expect(try await history.count(job: "busy") == 5)
        #expect(try await history.runs(job: "busy", limit: 10).map(\.id.rawValue) == ["b0011", "b0010", "b0009", "b0008", "b0007"])
        #expect(try await history.count(job: "quiet") == 3)
        #expect(try await history.count(job: "old") == 0)
        #expect(try await history.count(job: "zz") == 5)
        #expect(try await history.count(job: "f149") == 1)
        await running.stop()
    }

    @Test func pauseIsRemembered() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let history = try openHistory(directory.file("state.sqlite"))
        let running = RunningWriter(history)
        running.writer.record(.paused(job: "nightly", true))
        await running.stop()
        #expect(try await history.jobMemories()["nightly"]?.paused == true)
    }

    @Test(.enabled(if: getuid() == 0, "needs root to mount a small file system"))
    func aFullDiskDoesNotStopRunsAndWritingResumes() async throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let small = try SmallFileSystem(at: directory.file("small"), size: "2m")
        defer { small.unmount() }
        let mountPoint = small.path
        let history = try openHistory(mountPoint + "/state.sqlite")
        let running = RunningWriter(history)
        small.fill()
        let big = String(repeating: "x", count: 20_000)
        for index in 0..<40 {
            var entry = record("loud", String(format: "r%03d", index), scheduled: 1_000 + Int64(index), outcome: .succeeded)
            entry.output = OutputTail(capacity: 100_000, lines: [OutputLine(stream: .stdout, text: big)])
            running.writer.record(.finished(entry))
        }
        // flush() does not wait for a failing disk.
        await running.writer.flush()
        let failure = try await running.health.next()
        #expect(failure == "disk full" || failure == "I/O error", "failure: \(failure)")
        // Space returns: the backlog is written by the next retry.
        #expect(unlink(mountPoint + "/filler") == 0)
        running.writer.record(.finished(record("loud", "r999", scheduled: 5_000, outcome: .succeeded)))
        #expect(try await running.health.next(within: .seconds(20)) == "healthy")
        await running.stop()
        #expect(try await history.count(job: "loud") == 41)
    }
}
