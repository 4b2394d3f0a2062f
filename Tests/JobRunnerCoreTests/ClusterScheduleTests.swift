import JobRunnerSupervision
import JobRunnerConfig
import JobRunnerCore
import JobRunnerSchedule
import TestSupport
import Testing

/// In a cluster every node must name the same instants, whenever it started.
@Suite struct ClusterScheduleTests {
    @Test func alignedIntervalsAreEpochMultiples() {
        let trigger = JobTrigger.interval(.seconds(30))
        let at = { (seconds: Double) in Timestamp(microseconds: Int64(seconds * 1_000_000)) }
        #expect(trigger.nextOccurrence(after: at(1000.5), in: .utc, aligned: true) == at(1020))
        #expect(trigger.nextOccurrence(after: at(1020), in: .utc, aligned: true) == at(1050), "strictly after")
        #expect(trigger.nextOccurrence(after: at(-5), in: .utc, aligned: true) == at(0))
        // Unaligned (a single daemon), an interval has no wall-clock occurrences.
        #expect(trigger.nextOccurrence(after: at(1000.5), in: .utc, aligned: false) == nil)
        // 90 s from 01:00:00 UTC: every node agrees on 01:00:30, 01:02:00, … whatever its start.
        let ninety = JobTrigger.interval(.seconds(90))
        #expect(ninety.nextOccurrence(after: at(3600), in: .utc, aligned: true) == at(3690))
    }

    @Test func derivedRandomDelayIsTheSameOnEveryNode() throws {
        var definition = try job("j", shell: "true", every: .seconds(60))
        definition.randomDelay = .seconds(30)
        let occurrence = Timestamp(microseconds: 1_800_000_000_000_000)
        let first = Scheduler.delay(for: definition, occurrence: occurrence, seed: 7, derived: true)
        let again = Scheduler.delay(for: definition, occurrence: occurrence, seed: 7, derived: true)
        #expect(first == again)
        #expect(first >= .zero && first < .seconds(30))
        let delays = Set((0..<50).map { step in
            Scheduler.delay(for: definition, occurrence: occurrence.advanced(by: .seconds(60 * step)), seed: 7, derived: true)
        })
        #expect(delays.count > 40, "delays should spread over occurrences: \(delays.count) distinct")
    }
}
