import JobRunnerConfig
import JobRunnerCore
import JobRunnerSchedule
import TestSupport
import Testing

/// `after:` in the engine's rules: which final outcomes fire which jobs, after retries, and
/// what a reload does to the chain.
@Suite struct ChainTests {
    static func follower(_ name: String, after conditions: [(String, AfterCondition.Outcome)]) throws -> JobDefinition {
        var definition = try job(name, shell: "true")
        definition.after = conditions.map { AfterCondition(job: $0.0, outcome: $0.1) }
        return definition
    }

    static func build() throws -> JobDefinition {
        var build = try job("build", shell: "true")
        build.retry = RetryPolicy(attempts: 2, backoff: .seconds(10), on: [.failure])
        return build
    }

    static func jobs() throws -> [JobDefinition] {
        [try build(), try follower("report", after: [("build", .succeeded)]), try follower("alert", after: [("build", .failed)]),
         try follower("audit", after: [("build", .any)])]
    }

    @Test func aSuccessFiresTheJobsThatFollowItOnSuccessWithTheirCause() throws {
        var drive = Drive(try Self.jobs())
        let (record, actions) = drive.machine.runNow(job: "build", now: drive.now)
        _ = drive.record(actions)
        let build = try #require(record)
        let fired = Drive.starts(drive.end(build.id, .succeeded))
        #expect(Set(fired.map(\.job.name)) == ["report", "audit"])
        #expect(fired.allSatisfy { $0.triggeredBy == "build/\(build.id)" })
        let records = Drive.fired(drive.actions).filter { $0.trigger == .after }
        #expect(records.count == 2 && records.allSatisfy { $0.triggeredBy == "build/\(build.id)" })
        // The followers' own ends fire nothing (nobody follows them).
        for request in fired { #expect(Drive.starts(drive.end(request.id, .succeeded)).isEmpty) }
    }

    @Test func onlyTheFinalOutcomeAfterRetriesCounts() throws {
        var drive = Drive(try Self.jobs())
        let (record, actions) = drive.machine.runNow(job: "build", now: drive.now)
        _ = drive.record(actions)
        let first = try #require(record)
        // The first attempt fails: it is retried, and nothing follows yet.
        #expect(Drive.starts(drive.end(first.id, .failed(exitCode: 1))).isEmpty)
        let second = try #require(Drive.starts(drive.advance(by: .seconds(10))).first)
        #expect(second.attempt == 2)
        // The retry fails too: that is the fire's final outcome.
        let fired = Drive.starts(drive.end(second.id, .failed(exitCode: 2)))
        #expect(Set(fired.map(\.job.name)) == ["alert", "audit"])
        #expect(fired.allSatisfy { $0.triggeredBy == "build/\(second.id)" })
    }

    @Test func cancelledOrDisabledOrRemovedFollowersDoNotFire() throws {
        var jobs = try Self.jobs()
        jobs[3].enabled = false
        var drive = Drive(jobs)
        let (record, actions) = drive.machine.runNow(job: "build", now: drive.now)
        _ = drive.record(actions)
        let build = try #require(record)
        // A cancelled run (stopped by request) fires nothing.
        _ = drive.machine.cancel(run: build.id, now: drive.now)
        #expect(Drive.starts(drive.end(build.id, .cancelled)).isEmpty)

        // A reload that removes `report` drops its trigger.
        let (_, reloaded) = drive.machine.apply(Configuration(path: "t.yaml", daemon: drive.machine.settings,
                                                              jobs: [try Self.build(), try Self.follower("alert", after: [("build", .failed)])]),
                                                now: drive.now, uptime: drive.uptime)
        _ = drive.record(reloaded)
        let (again, more) = drive.machine.runNow(job: "build", now: drive.now)
        _ = drive.record(more)
        #expect(Drive.starts(drive.end(try #require(again).id, .succeeded)).isEmpty)
    }

    @Test func aRetriedFollowerKeepsItsCause() throws {
        var report = try Self.follower("report", after: [("build", .succeeded)])
        report.retry = RetryPolicy(attempts: 2, backoff: .seconds(5), on: [.failure])
        var drive = Drive([try Self.build(), report])
        let (record, actions) = drive.machine.runNow(job: "build", now: drive.now)
        _ = drive.record(actions)
        let build = try #require(record)
        let follower = try #require(Drive.starts(drive.end(build.id, .succeeded)).first)
        _ = drive.end(follower.id, .failed(exitCode: 1))
        let retry = try #require(Drive.starts(drive.advance(by: .seconds(5))).first)
        #expect(retry.attempt == 2 && retry.triggeredBy == "build/\(build.id)")
        #expect(Drive.fired(drive.actions).last { $0.job == "report" }?.trigger == .after)
    }
}

/// Retries of HTTP outcomes: `status` (5xx and 429, after `Retry-After` within max_backoff)
/// and `connect`.
@Suite struct HTTPRetryTests {
    static func caller(on: Set<RetryCondition>) throws -> JobDefinition {
        var call = try job("call", shell: "true")
        call.http = HTTPCall(url: "http://127.0.0.1/")
        call.retry = RetryPolicy(attempts: 2, backoff: .seconds(10), maxBackoff: .seconds(60), on: on)
        return call
    }

    func firstAttemptEnds(_ result: RunResult, on: Set<RetryCondition>) throws -> (Drive, [DispatchAction], RunID) {
        var drive = Drive([try Self.caller(on: on)])
        let (record, actions) = drive.machine.runNow(job: "call", now: drive.now)
        _ = drive.record(actions)
        let id = try #require(record).id
        let after = drive.send(.ended(id, result)) + drive.send(.swept(id))
        return (drive, after, id)
    }

    func result(_ outcome: RunOutcome, retryAfter: Duration? = nil) -> RunResult {
        var result = RunResult(outcome: outcome, startedAt: Timestamp(seconds: 1), endedAt: Timestamp(seconds: 1), pid: nil, exitStatus: nil)
        result.retryAfter = retryAfter
        return result
    }

    @Test func serverErrorsAndTooManyRequestsAreRetriedOtherStatusesNot() throws {
        for (status, retried) in [(503, true), (500, true), (429, true), (404, false), (302, false)] {
            let (_, after, _) = try firstAttemptEnds(result(.httpStatus(status)), on: [.status])
            #expect(Drive.fired(after).contains { $0.attempt == 2 } == retried, "status \(status)")
        }
        let (_, notAsked, _) = try firstAttemptEnds(result(.httpStatus(503)), on: [.failure])
        #expect(!Drive.fired(notAsked).contains { $0.attempt == 2 }, "status is not retried unless asked")
    }

    @Test func connectionFailuresAreRetriedOnConnectButTLSTroubleIsNot() throws {
        let (_, refused, _) = try firstAttemptEnds(result(.requestFailed(reason: "refused", connection: true)), on: [.connect])
        #expect(Drive.fired(refused).contains { $0.attempt == 2 })
        let (_, tls, _) = try firstAttemptEnds(result(.requestFailed(reason: "TLS", connection: false)), on: [.connect])
        #expect(!Drive.fired(tls).contains { $0.attempt == 2 })
    }

    @Test func retryAfterSetsTheDelayWithinMaxBackoff() throws {
        var (drive, after, _) = try firstAttemptEnds(result(.httpStatus(429), retryAfter: .seconds(2)), on: [.status])
        #expect(Drive.fired(after).first?.waitingFor == "retry backoff (2s)")
        #expect(Drive.starts(drive.advance(by: .seconds(1))).isEmpty)
        #expect(Drive.starts(drive.advance(by: .seconds(1))).count == 1)

        let (_, capped, _) = try firstAttemptEnds(result(.httpStatus(503), retryAfter: .seconds(3600)), on: [.status])
        #expect(Drive.fired(capped).first?.waitingFor == "retry backoff (1m)")
    }
}

/// A reload that changes the followed job while its run goes on keeps the chain.
@Suite struct ChainReloadTests {
    @Test func aRunOfAJobChangedByReloadStillFiresItsFollowers() throws {
        var build = try job("build", shell: "true")
        var report = try job("report", shell: "true")
        report.after = [AfterCondition(job: "build")]
        var drive = Drive([build, report])
        let (record, actions) = drive.machine.runNow(job: "build", now: drive.now)
        _ = drive.record(actions)
        let id = try #require(record).id
        _ = drive.send(.started(id, pid: 42, at: drive.now))
        build.timeout = .seconds(60)
        let (_, reloaded) = drive.machine.apply(Configuration(path: "t.yaml", daemon: drive.machine.settings, jobs: [build, report]),
                                                now: drive.now, uptime: drive.uptime)
        _ = drive.record(reloaded)
        #expect(Drive.starts(drive.end(id, .succeeded)).map(\.job.name) == ["report"])
    }
}

/// A follower left unstarted by a dead node runs on the taker, still knowing what fired it.
@Suite struct ChainTakeoverTests {
    @Test func aTakenOverFollowerKeepsItsCause() throws {
        var report = try job("report", shell: "true")
        report.after = [AfterCondition(job: "build")]
        var drive = Drive([try job("build", shell: "true"), report], node: "n2")
        let orphan = OrphanedRun(id: RunID(rawValue: "o1"), job: "report", node: "n1", trigger: .after, scheduledTime: drive.now,
                                 attempt: 1, fireID: RunID(rawValue: "o1"), started: false, triggeredBy: "build/b1")
        let (taken, actions) = drive.machine.takeOver([orphan], now: drive.now, uptime: drive.uptime)
        _ = drive.record(actions)
        #expect(taken == 1)
        let started = try #require(Drive.starts(actions).first)
        #expect(started.job.name == "report" && started.triggeredBy == "build/b1")
        #expect(Drive.fired(actions).first?.trigger == .after)
    }
}
