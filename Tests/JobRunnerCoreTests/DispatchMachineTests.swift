import JobRunnerConfig
import JobRunnerCore
import JobRunnerSchedule
import Logging
import TestSupport
import Testing

/// The engine's rules, with plain values: no processes, no clocks, no sleeps. A `Drive` holds a
/// machine and the time, feeds it ticks and events, and keeps every action it returned.
struct Drive {
    var machine: DispatchMachine
    var now: Timestamp
    var uptime: Duration = .seconds(1000)
    var actions: [DispatchAction] = []

    init(_ jobs: [JobDefinition], at start: String = "2026-01-01T10:30:00Z", maxConcurrentRuns: Int = 64, pools: [String: Int] = [:],
         shutdownGrace: Duration = .seconds(30), memories: [String: JobMemory] = [:], node: String? = nil,
         clusterWidePools: Set<String> = [], clusterStart: String? = nil) {
        now = Timestamp(rfc3339: start)!
        var daemon = DaemonSettings(timeZone: .utc, maxConcurrentRuns: maxConcurrentRuns, shutdownGrace: shutdownGrace, pools: pools)
        daemon.clusterWidePools = clusterWidePools
        machine = DispatchMachine(configuration: Configuration(path: "t.yaml", daemon: daemon, jobs: jobs), now: now, uptime: uptime,
                                  memories: memories, node: node,
                                  clusterStart: node == nil ? nil : clusterStart.flatMap { Timestamp(rfc3339: $0) } ?? now)
        actions = machine.take()
        actions += machine.start(now: now, uptime: uptime)
    }

    @discardableResult
    mutating func advance(to text: String) -> [DispatchAction] {
        let target = Timestamp(rfc3339: text)!
        uptime += now.duration(to: target)
        now = target
        return tick()
    }

    @discardableResult
    mutating func advance(by duration: Duration) -> [DispatchAction] {
        now = now.advanced(by: duration)
        uptime += duration
        return tick()
    }

    @discardableResult
    mutating func tick() -> [DispatchAction] {
        let new = machine.tick(now: now, uptime: uptime)
        actions += new
        #expect(machine.indexesAreConsistent, "the machine's indexes disagree with its entries")
        return new
    }

    @discardableResult
    mutating func send(_ event: DispatchEvent) -> [DispatchAction] {
        let new = machine.handle(event, now: now, uptime: uptime)
        actions += new
        #expect(machine.indexesAreConsistent, "the machine's indexes disagree with its entries")
        return new
    }

    /// Ends a started run with `outcome` (as its process exiting would), and its sweep.
    @discardableResult
    mutating func end(_ id: RunID, _ outcome: RunOutcome) -> [DispatchAction] {
        var new = send(.ended(id, RunResult(outcome: outcome, startedAt: now, endedAt: now, pid: 42, exitStatus: nil)))
        new += send(.swept(id))
        return new
    }

    mutating func record(_ new: [DispatchAction]) -> [DispatchAction] {
        actions += new
        #expect(machine.indexesAreConsistent, "the machine's indexes disagree with its entries")
        return new
    }

    static func starts(_ actions: [DispatchAction]) -> [RunRequest] {
        actions.compactMap { if case .start(let request) = $0 { request } else { nil } }
    }

    static func stops(_ actions: [DispatchAction]) -> [RunID] {
        actions.compactMap { if case .stop(let id) = $0 { id } else { nil } }
    }

    /// Records journalled as ended (finished or settled).
    static func ended(_ actions: [DispatchAction]) -> [RunRecord] {
        actions.compactMap { action -> RunRecord? in
            switch action {
            case .journal(.finished(let record)), .journal(.settled(let record, _)): record
            default: nil
            }
        }
    }

    static func fired(_ actions: [DispatchAction]) -> [RunRecord] {
        actions.compactMap { if case .journal(.fired(let record, _)) = $0 { record } else { nil } }
    }

    static func hooks(_ actions: [DispatchAction]) -> [String] {
        actions.compactMap { if case .runHook(_, let kind, _, _) = $0 { kind } else { nil } }
    }

    static func claims(_ actions: [DispatchAction]) -> [[ClaimRequest]] {
        actions.compactMap { if case .claim(let requests) = $0 { requests } else { nil } }
    }
}

@Suite struct DispatchMachineTests {
    static func every(_ job: JobDefinition, _ change: (inout JobDefinition) -> Void) -> JobDefinition {
        var copy = job
        change(&copy)
        return copy
    }

    static func minutely(_ name: String, overlap: OverlapPolicy = .skip, pool: String? = nil) throws -> JobDefinition {
        var definition = try job(name, shell: "true", schedule: "* * * * *")
        definition.overlap = overlap
        definition.pool = pool
        return definition
    }

    // MARK: - Firing and overlap

    @Test func aJobFiresAtItsOccurrenceAndNotBefore() throws {
        var drive = Drive([try Self.minutely("tick")])
        #expect(Drive.starts(drive.advance(to: "2026-01-01T10:30:59Z")).isEmpty)
        let started = Drive.starts(drive.advance(to: "2026-01-01T10:31:00Z"))
        #expect(started.map(\.job.name) == ["tick"])
        #expect(started.first?.scheduledTime == Timestamp(rfc3339: "2026-01-01T10:31:00Z"))
        // The fire was journalled (with its occurrence) before its start.
        let fired = drive.actions.firstIndex { if case .journal(.fired(_, let occurrence)) = $0 { occurrence != nil } else { false } }
        let start = drive.actions.firstIndex { if case .start = $0 { true } else { false } }
        #expect(fired != nil && start != nil && fired! < start!)
        // The next is armed 50 ms before its time.
        #expect(drive.machine.nextDeadline(now: drive.now, uptime: drive.uptime) == Timestamp(rfc3339: "2026-01-01T10:31:59.95Z"))
    }

    @Test func aFireIsRecordedAheadOfItsTimeAndStartsAtIt() throws {
        var drive = Drive([try Self.minutely("tick")])
        let armed = drive.advance(to: "2026-01-01T10:30:59.960Z")
        // Recorded (so it is on disk by its time), not started.
        #expect(Drive.fired(armed).map(\.scheduledTime) == [Timestamp(rfc3339: "2026-01-01T10:31:00Z")])
        #expect(Drive.starts(armed).isEmpty)
        #expect(drive.machine.nextDeadline(now: drive.now, uptime: drive.uptime) == Timestamp(rfc3339: "2026-01-01T10:31:00Z"))
        let due = drive.advance(to: "2026-01-01T10:31:00Z")
        #expect(Drive.fired(due).isEmpty, "recorded once")
        #expect(Drive.starts(due).map(\.scheduledTime) == [Timestamp(rfc3339: "2026-01-01T10:31:00Z")])
    }

    @Test func anArmedFireFollowsThePauseAndOverlapOfItsTime() throws {
        var drive = Drive([try Self.minutely("paused"), try Self.minutely("busy")])
        drive.advance(to: "2026-01-01T10:30:59.960Z")
        // Between its recording and its time: a pause, and a manual run of the other job.
        _ = drive.record(drive.machine.setPaused(job: "paused", true).1)
        let manual = drive.record(drive.machine.runNow(job: "busy", now: drive.now).1)
        #expect(Drive.starts(manual).map(\.job.name) == ["busy"])
        let due = drive.advance(to: "2026-01-01T10:31:00Z")
        #expect(Set(Drive.ended(due).map { "\($0.job): \($0.outcome?.detail ?? "")" }) == ["paused: paused", "busy: previous run still running"])
        #expect(Drive.starts(due).isEmpty)
    }

    @Test func skipRecordsTheOverlappingFire() throws {
        var drive = Drive([try Self.minutely("job")])
        let first = try #require(Drive.starts(drive.advance(to: "2026-01-01T10:31:00Z")).first)
        let second = drive.advance(to: "2026-01-01T10:32:00Z")
        #expect(Drive.starts(second).isEmpty)
        #expect(Drive.ended(second).map(\.outcome) == [.skipped(reason: "previous run still running")])
        drive.end(first.id, .succeeded)
        #expect(drive.machine.runningCount == 0)
    }

    @Test func queueKeepsUpToMaxAndStartsInOrderWhenTheRunEnds() throws {
        var drive = Drive([try Self.minutely("q", overlap: .queue(max: 1))])
        let first = try #require(Drive.starts(drive.advance(to: "2026-01-01T10:31:00Z")).first)
        #expect(Drive.fired(drive.advance(to: "2026-01-01T10:32:00Z")).map(\.waitingFor) == ["the previous run"])
        #expect(Drive.ended(drive.advance(to: "2026-01-01T10:33:00Z")).map(\.outcome) == [.skipped(reason: "queue full (max_queue 1)")])
        let next = Drive.starts(drive.end(first.id, .succeeded))
        #expect(next.map(\.scheduledTime) == [Timestamp(rfc3339: "2026-01-01T10:32:00Z")])
    }

    @Test func replaceStopsTheRunningRunThenStarts() throws {
        var drive = Drive([try Self.minutely("r", overlap: .replace)])
        let first = try #require(Drive.starts(drive.advance(to: "2026-01-01T10:31:00Z")).first)
        let replacing = drive.advance(to: "2026-01-01T10:32:00Z")
        #expect(Drive.stops(replacing) == [first.id])
        #expect(Drive.starts(replacing).isEmpty, "the new fire waits for the old one to stop")
        let after = drive.end(first.id, .cancelled)
        #expect(Drive.starts(after).map(\.scheduledTime) == [Timestamp(rfc3339: "2026-01-01T10:32:00Z")])
        // Stopped on purpose: never retried, no hook.
        #expect(Drive.hooks(after).isEmpty)
    }

    @Test func allowRunsSideBySideUpToMaxInstances() throws {
        var drive = Drive([try Self.minutely("a", overlap: .allow(maxInstances: 2))])
        drive.advance(to: "2026-01-01T10:31:00Z")
        drive.advance(to: "2026-01-01T10:32:00Z")
        #expect(drive.machine.runningCount == 2)
        #expect(Drive.ended(drive.advance(to: "2026-01-01T10:33:00Z")).map(\.outcome) == [.skipped(reason: "max_instances (2) reached")])
    }

    // MARK: - Limits and pools

    @Test func maxConcurrentRunsQueuesInFireOrder() throws {
        var drive = Drive([try Self.minutely("first"), try Self.minutely("second"), try Self.minutely("third")], maxConcurrentRuns: 1)
        let started = Drive.starts(drive.advance(to: "2026-01-01T10:31:00Z"))
        #expect(started.map(\.job.name) == ["first"])
        #expect(drive.machine.waitingForSlotCount == 2)
        #expect(Drive.starts(drive.end(started[0].id, .succeeded)).map(\.job.name) == ["second"])
    }

    @Test func aFullPoolDoesNotHoldUpOthers() throws {
        var drive = Drive([try Self.minutely("p1", pool: "db"), try Self.minutely("p2", pool: "db"), try Self.minutely("p3", pool: "db"),
                           try Self.minutely("free")], pools: ["db": 2])
        let started = Drive.starts(drive.advance(to: "2026-01-01T10:31:00Z"))
        #expect(started.map(\.job.name) == ["p1", "p2", "free"])
        #expect(drive.actions.contains { if case .waitingFor(_, "pool 'db'") = $0 { true } else { false } })
        #expect(Drive.starts(drive.end(started[0].id, .succeeded)).map(\.job.name) == ["p3"])
    }

    // MARK: - Retries and hooks

    @Test func retriesBackOffThenTheHookRunsAfterTheLastAttempt() throws {
        var flaky = try job("flaky", shell: "exit 3", schedule: "0 * * * *")
        flaky.retry = RetryPolicy(attempts: 3, backoff: .seconds(10), maxBackoff: .seconds(15), on: [.failure])
        flaky.onFailure = .shell("alert")
        var drive = Drive([flaky])
        let first = try #require(Drive.starts(drive.advance(to: "2026-01-01T11:00:00Z")).first)
        let afterFirst = drive.end(first.id, .failed(exitCode: 3))
        #expect(Drive.hooks(afterFirst).isEmpty)
        let retry = try #require(Drive.fired(afterFirst).first)
        #expect(retry.attempt == 2 && retry.fireID == first.id)
        #expect(Drive.starts(drive.advance(by: .seconds(9))).isEmpty)
        let second = try #require(Drive.starts(drive.advance(by: .seconds(1))).first)
        #expect(second.attempt == 2)
        drive.end(second.id, .failed(exitCode: 3))
        // Backoff doubles, capped at max_backoff (15 s).
        #expect(Drive.starts(drive.advance(by: .seconds(14))).isEmpty)
        let third = try #require(Drive.starts(drive.advance(by: .seconds(1))).first)
        let last = drive.send(.ended(third.id, RunResult(outcome: .failed(exitCode: 3), startedAt: drive.now, endedAt: drive.now, pid: 1, exitStatus: nil)))
        #expect(Drive.fired(last).isEmpty, "no fourth attempt")
        // The hook waits for the run's leftovers to be swept.
        #expect(Drive.hooks(last).isEmpty)
        #expect(Drive.hooks(drive.send(.swept(third.id))) == ["on_failure"])
    }

    // MARK: - Reloads

    @Test func aReloadDiffsByNameWithRunsAndWaitingFires() throws {
        var keep = try Self.minutely("keep")
        keep.onRemove = .finish
        var cancel = try Self.minutely("cancel")
        cancel.onRemove = .cancel
        var restart = try Self.minutely("restart")
        restart.onReload = .restart
        var waiting = try Self.minutely("waiting")
        waiting.retry = RetryPolicy(attempts: 2, backoff: .seconds(60), on: [.failure])
        var drive = Drive([keep, cancel, restart, waiting])
        let started = Drive.starts(drive.advance(to: "2026-01-01T10:31:00Z"))
        let id = { (name: String) in started.first { $0.job.name == name }!.id }
        // `waiting` fails and is in its retry's backoff.
        drive.end(id("waiting"), .failed(exitCode: 1))
        let newRestart = Self.every(restart) { $0.environment = ["VERSION": "2"] }
        let newWaiting = Self.every(waiting) { $0.environment = ["VERSION": "2"] }
        let added = try Self.minutely("added")
        let configuration = Configuration(path: "t.yaml", daemon: drive.machine.settings, jobs: [newRestart, newWaiting, added])
        let (summary, actions) = drive.machine.apply(configuration, now: drive.now, uptime: drive.uptime)
        #expect(summary.added == ["added"])
        #expect(Set(summary.changed) == ["restart", "waiting"])
        #expect(Set(summary.removed) == ["keep", "cancel"])
        #expect(summary.generation == 2)
        // on_remove: cancel stops its run; finish lets it go on; on_reload: restart stops and refires.
        #expect(Set(Drive.stops(actions)) == [id("cancel"), id("restart")])
        // The changed job's retry is dropped.
        let dropped = Drive.ended(actions)
        #expect(dropped.count == 1 && dropped[0].job == "waiting" && dropped[0].outcome == .cancelled)
        #expect(dropped[0].statusText == "retry dropped: job changed by reload")
        #expect(Drive.fired(actions).map(\.job) == ["restart"])
        #expect(drive.machine.jobStates(now: drive.now, uptime: drive.uptime).map(\.definition.name) == ["restart", "waiting", "added"])
        // The restarted job's new fire starts once its old run has stopped.
        #expect(Drive.starts(drive.end(id("restart"), .cancelled)).first?.job.environment == ["VERSION": "2"])
    }

    /// A configuration built by hand may name a job twice (a loaded one cannot): the name keeps
    /// its first place and its last definition, and the machine holds it once.
    @Test func aReloadNamingAJobTwiceKeepsOneJob() throws {
        var drive = Drive([try Self.minutely("a"), try Self.minutely("b")])
        let first = Self.every(try Self.minutely("b")) { $0.timeout = .seconds(5) }
        let last = Self.every(try Self.minutely("b")) { $0.timeout = .seconds(7) }
        _ = drive.machine.apply(Configuration(path: "t.yaml", daemon: drive.machine.settings, jobs: [first, try Self.minutely("a"), last]),
                                now: drive.now, uptime: drive.uptime)
        let states = drive.machine.jobStates(now: drive.now, uptime: drive.uptime)
        #expect(states.map(\.definition.name) == ["b", "a"])
        #expect(states.first?.definition.timeout == .seconds(7))
        #expect(Drive.starts(drive.advance(to: "2026-01-01T10:31:00Z")).map(\.job.name).sorted() == ["a", "b"])
    }

    @Test func anUnchangedScheduleKeepsItsNextFire() throws {
        var drive = Drive([try Self.minutely("job")])
        let before = drive.machine.nextDeadline(now: drive.now, uptime: drive.uptime)
        let changed = Self.every(try Self.minutely("job")) { $0.timeout = .seconds(5) }
        _ = drive.machine.apply(Configuration(path: "t.yaml", daemon: drive.machine.settings, jobs: [changed]), now: drive.now.advanced(by: .seconds(20)),
                                uptime: drive.uptime + .seconds(20))
        #expect(drive.machine.nextDeadline(now: drive.now, uptime: drive.uptime) == before)
    }

    // MARK: - Pause, catch-up, startup

    @Test func aPausedJobsFiresAreSkippedButAManualRunGoes() throws {
        var drive = Drive([try Self.minutely("job")])
        let (found, pausing) = drive.machine.setPaused(job: "job", true)
        #expect(found)
        #expect(pausing.contains { if case .journal(.paused(job: "job", true)) = $0 { true } else { false } })
        #expect(Drive.ended(drive.advance(to: "2026-01-01T10:31:00Z")).map(\.outcome) == [.skipped(reason: "paused")])
        let (record, manual) = drive.machine.runNow(job: "job", now: drive.now)
        #expect(record?.trigger == .manual)
        #expect(Drive.starts(manual).count == 1)
        #expect(drive.machine.setPaused(job: "nope", true).0 == false)
    }

    @Test func catchUpRunsWhatWasMissedAsEachJobSays() throws {
        let memory = JobMemory(lastOccurrence: Timestamp(rfc3339: "2026-01-01T10:25:00Z"), firstSeen: Timestamp(rfc3339: "2025-01-01T00:00:00Z"))
        var once = try Self.minutely("once")
        once.catchUp = .once
        var all = try Self.minutely("all")
        all.catchUp = .all
        all.catchUpMax = 3
        let none = try Self.minutely("none")
        let drive = Drive([once, all, none], memories: ["once": memory, "all": memory, "none": memory])
        let fired = Drive.fired(drive.actions)
        #expect(fired.filter { $0.job == "once" }.map(\.scheduledTime) == [Timestamp(rfc3339: "2026-01-01T10:30:00Z")])
        #expect(fired.filter { $0.job == "all" }.map(\.scheduledTime)
            == ["10:28", "10:29", "10:30"].map { Timestamp(rfc3339: "2026-01-01T\($0):00Z") })
        #expect(fired.allSatisfy { $0.trigger == .catchUp })
        #expect(!fired.contains { $0.job == "none" })
        #expect(drive.actions.contains { if case .log(_, let message, _) = $0 { message.contains("catch_up: none") } else { false } })
    }

    @Test func startupFiresOnceAtStart() throws {
        var boot = try job("boot", shell: "true", schedule: "@reboot")
        boot.runOnStart = false
        var onStart = try Self.minutely("onstart")
        onStart.runOnStart = true
        let drive = Drive([boot, onStart])
        #expect(Set(Drive.starts(drive.actions).map(\.job.name)) == ["boot", "onstart"])
        #expect(Drive.fired(drive.actions).allSatisfy { $0.trigger == .startup })
    }

    @Test func aClockJumpRunsTheLatestOccurrenceOnce() throws {
        var drive = Drive([try Self.minutely("job")])
        let jumped = drive.advance(to: "2026-01-01T12:00:30Z")
        #expect(Drive.starts(jumped).map(\.scheduledTime) == [Timestamp(rfc3339: "2026-01-01T12:00:00Z")])
        #expect(jumped.contains { if case .log(.warning, let message, _) = $0 { message.contains("missed occurrences") } else { false } })
    }

    // MARK: - Cancel and drain

    @Test func cancellingAWaitingFireDropsItAndARunningOneStopsIt() throws {
        var drive = Drive([try Self.minutely("first"), try Self.minutely("second")], maxConcurrentRuns: 1)
        let first = try #require(Drive.starts(drive.advance(to: "2026-01-01T10:31:00Z")).first)
        let second = try #require(Drive.fired(drive.actions).first { $0.job == "second" })
        let (dropped, dropActions) = drive.machine.cancel(run: second.id, now: drive.now)
        guard case .dropped(let record) = dropped else { Issue.record("expected dropped: \(dropped)"); return }
        #expect(record.outcome == .cancelled)
        #expect(Drive.ended(dropActions).map(\.id) == [second.id])
        let (stopping, stopActions) = drive.machine.cancel(run: first.id, now: drive.now)
        guard case .stopping = stopping else { Issue.record("expected stopping: \(stopping)"); return }
        #expect(Drive.stops(stopActions) == [first.id])
        let (unknown, _) = drive.machine.cancel(run: RunID(rawValue: "nope"), now: drive.now)
        guard case .notFound = unknown else { Issue.record("expected notFound"); return }
    }

    @Test func drainDropsWhatWaitsAndStopsWhatRunsWhenGraceEnds() throws {
        var drive = Drive([try Self.minutely("first"), try Self.minutely("second")], maxConcurrentRuns: 1)
        let first = try #require(Drive.starts(drive.advance(to: "2026-01-01T10:31:00Z")).first)
        let drained = drive.record(drive.machine.drain(now: drive.now))
        #expect(Drive.ended(drained).map(\.job) == ["second"])
        #expect(Drive.ended(drained).allSatisfy { $0.outcome == .cancelled })
        #expect(drive.machine.runningCount == 1)
        // Nothing fires while draining.
        #expect(Drive.starts(drive.advance(to: "2026-01-01T10:32:00Z")).isEmpty)
        #expect(Drive.stops(drive.machine.stopAll()) == [first.id])
        // A stopped run is never retried.
        let ended = drive.end(first.id, .cancelled)
        #expect(Drive.fired(ended).isEmpty)
        #expect(drive.machine.runningCount == 0)
    }

    // MARK: - Cluster

    @Test func inAClusterAnOccurrenceFiresOnlyOnceClaimed() throws {
        var drive = Drive([try Self.minutely("a"), try Self.minutely("b")], node: "n1")
        let due = drive.advance(to: "2026-01-01T10:31:00Z")
        #expect(Drive.starts(due).isEmpty)
        #expect(Drive.fired(due).isEmpty, "nothing is recorded before the claim")
        let batch = try #require(Drive.claims(due).first)
        #expect(batch.map(\.job) == ["a", "b"])
        #expect(Drive.claims(drive.tick()).isEmpty, "a claim is sent once")
        let answered = drive.send(.claimed(batch, [.won(busyOn: nil), .lost(to: "n2")]))
        #expect(Drive.starts(answered).map(\.job.name) == ["a"])
        #expect(Drive.fired(answered).first?.node == "n1")
    }

    @Test func aWonClaimIsSkippedWhenAnotherNodeRunsTheJob() throws {
        var drive = Drive([try Self.minutely("a")], node: "n1")
        let batch = try #require(Drive.claims(drive.advance(to: "2026-01-01T10:31:00Z")).first)
        let answered = drive.send(.claimed(batch, [.won(busyOn: "n2")]))
        #expect(Drive.ended(answered).map(\.outcome) == [.skipped(reason: "previous run still running on node n2")])
    }

    @Test func aClusterWidePoolWaitsForItsSlot() throws {
        var drive = Drive([try Self.minutely("dump", pool: "db")], pools: ["db": 1], node: "n1", clusterWidePools: ["db"])
        let batch = try #require(Drive.claims(drive.advance(to: "2026-01-01T10:31:00Z")).first)
        let won = drive.send(.claimed(batch, [.won(busyOn: nil)]))
        #expect(Drive.starts(won).isEmpty)
        let asked = won.compactMap { if case .acquireSlot(let pool, _, let run, _) = $0 { (pool, run) } else { nil } }
        #expect(asked.count == 1 && asked[0].0 == "db")
        #expect(Drive.starts(drive.send(.slot(asked[0].1, pool: "db", granted: true))).count == 1)
        // Its end gives the slot back.
        let ended = drive.end(asked[0].1, .succeeded)
        #expect(ended.contains { if case .releaseSlot("db", asked[0].1) = $0 { true } else { false } })
    }

    @Test func standingDownStopsRunsAndDropsWaitingAsInterrupted() throws {
        var drive = Drive([try Self.minutely("first"), try Self.minutely("second")], maxConcurrentRuns: 1)
        let first = try #require(Drive.starts(drive.advance(to: "2026-01-01T10:31:00Z")).first)
        let actions = drive.record(drive.machine.standDown(reason: "cluster lease lost", now: drive.now))
        #expect(Drive.stops(actions) == [first.id])
        #expect(Drive.ended(actions).map(\.outcome) == [.interrupted])
        #expect(Drive.ended(actions).first?.statusText == "cluster lease lost")
    }

    static func released(_ actions: [DispatchAction]) -> [ClaimRequest] {
        actions.flatMap { action -> [ClaimRequest] in
            if case .releaseClaims(let claims) = action { return claims }
            return []
        }
    }

    @Test func aClusterStartupFireIsRecordedUnderTheKeyItIsClaimedWith() throws {
        var job = try Self.minutely("boot")
        job.runOnStart = true
        // This node joins a cluster that started an hour ago.
        var drive = Drive([job], node: "n1", clusterStart: "2026-01-01T09:30:00Z")
        drive.advance(by: .milliseconds(5))
        let batch = try #require(Drive.claims(drive.actions).first)
        let won = drive.send(.claimed(batch, [.won(busyOn: nil)]))
        let record = try #require(Drive.fired(won).first)
        #expect(record.trigger == .startup)
        #expect(batch.first?.occurrence == Timestamp(rfc3339: "2026-01-01T09:30:00Z"))
        #expect(batch.first?.occurrence == record.scheduledTime, "claimed under \(batch), recorded at \(record.scheduledTime)")
    }

    @Test func aDrainingNodeGivesBackWhatItClaimedAndWillNotRun() throws {
        // One run at a time: the second occurrence won waits for a slot.
        var drive = Drive([try Self.minutely("a"), try Self.minutely("b"), try Self.minutely("c")], maxConcurrentRuns: 1, node: "n1")
        let batch = try #require(Drive.claims(drive.advance(to: "2026-01-01T10:31:00Z")).first)
        let answered = drive.send(.claimed(Array(batch.prefix(2)), [.won(busyOn: nil), .won(busyOn: nil)]))
        #expect(Drive.starts(answered).count == 1)
        let drained = drive.record(drive.machine.drain(now: drive.now))
        let waiting = batch[1]
        #expect(Self.released(drained) == [waiting], "the fire waiting for a slot goes back: \(drained)")
        // c's claim is answered after the drain began: won, and given back at once.
        let late = drive.send(.claimed([batch[2]], [.won(busyOn: nil)]))
        #expect(Drive.starts(late).isEmpty)
        #expect(Self.released(late) == [batch[2]])
        // Handed a dead node's unstarted fire while draining: back too.
        let orphan = OrphanedRun(id: RunID(rawValue: "o1"), job: "a", node: "dead", trigger: .schedule, scheduledTime: drive.now,
                                 attempt: 1, fireID: RunID(rawValue: "o1"), started: false)
        let (taken, handed) = drive.machine.takeOver([orphan], now: drive.now, uptime: drive.uptime)
        #expect(taken == 0 && Self.released(handed) == [ClaimRequest(job: "a", occurrence: drive.now)])
    }

    @Test func standingDownGivesBackClaimsNeverDispatched() throws {
        var drive = Drive([try Self.minutely("a"), try Self.minutely("b")], maxConcurrentRuns: 1, node: "n1")
        let batch = try #require(Drive.claims(drive.advance(to: "2026-01-01T10:31:00Z")).first)
        let answered = drive.send(.claimed(batch, [.won(busyOn: nil), .won(busyOn: nil)]))
        let started = try #require(Drive.starts(answered).first)
        let actions = drive.record(drive.machine.standDown(reason: "cluster lease lost", now: drive.now))
        #expect(Drive.stops(actions) == [started.id])
        // The running one stays this node's (interrupted when it ends); the waiting one goes back.
        #expect(Self.released(actions).map(\.job) == batch.map(\.job).filter { $0 != started.job.name })
    }

    @Test func takingOverRunsUnstartedFiresAndRetriesStartedOnes() throws {
        var retried = try Self.minutely("retried")
        retried.retry = RetryPolicy(attempts: 2, backoff: .zero, on: [.failure])
        var drive = Drive([try Self.minutely("fresh"), retried, try Self.minutely("final")])
        let orphans = [
            OrphanedRun(id: RunID(rawValue: "o1"), job: "fresh", node: "dead", trigger: .schedule, scheduledTime: drive.now, attempt: 1,
                        fireID: RunID(rawValue: "o1"), started: false),
            OrphanedRun(id: RunID(rawValue: "o2"), job: "retried", node: "dead", trigger: .schedule, scheduledTime: drive.now, attempt: 1,
                        fireID: RunID(rawValue: "o2"), started: true),
            OrphanedRun(id: RunID(rawValue: "o3"), job: "final", node: "dead", trigger: .schedule, scheduledTime: drive.now, attempt: 1,
                        fireID: RunID(rawValue: "o3"), started: true),
        ]
        let (taken, actions) = drive.machine.takeOver(orphans, now: drive.now, uptime: drive.uptime)
        #expect(taken == 2)
        #expect(Drive.starts(actions).map(\.job.name) == ["fresh"])
        let retry = try #require(Drive.fired(actions).first { $0.job == "retried" })
        #expect(retry.attempt == 2 && retry.fireID == RunID(rawValue: "o2"))
    }

    @Test func ofAFireLeftWithTwoUnfinishedAttemptsOnlyTheLatestCarriesOn() throws {
        // The dead node wrote attempt 2 (its retry) but not yet the end of attempt 1.
        var retried = try Self.minutely("retried")
        retried.retry = RetryPolicy(attempts: 3, backoff: .zero, on: [.failure])
        var drive = Drive([retried])
        let fire = RunID(rawValue: "o1")
        let orphans = [
            OrphanedRun(id: fire, job: "retried", node: "dead", trigger: .manual, scheduledTime: drive.now, attempt: 1, fireID: fire,
                        started: true),
            OrphanedRun(id: RunID(rawValue: "o2"), job: "retried", node: "dead", trigger: .manual, scheduledTime: drive.now, attempt: 2,
                        fireID: fire, started: false),
        ]
        let (taken, actions) = drive.machine.takeOver(orphans, now: drive.now, uptime: drive.uptime)
        #expect(taken == 1)
        let fired = Drive.fired(actions).filter { $0.job == "retried" }
        #expect(fired.map(\.attempt) == [2], "attempt 2 once, not twice: \(fired.map(\.attempt))")
        #expect(fired.first?.trigger == .manual, "a retry keeps its fire's trigger")
    }

    @Test func aRetryIsOnRecordBeforeTheAttemptItFollowsEnds() throws {
        var flaky = try Self.minutely("flaky")
        flaky.retry = RetryPolicy(attempts: 2, backoff: .seconds(1), on: [.failure])
        var drive = Drive([flaky])
        let (record, manual) = drive.machine.runNow(job: "flaky", now: drive.now)
        let started = try #require(Drive.starts(drive.record(manual)).first)
        let ended = drive.send(.ended(started.id, RunResult(outcome: .failed(exitCode: 1), startedAt: drive.now, endedAt: drive.now,
                                                           pid: 1, exitStatus: .exited(1))))
        let journal = ended.compactMap { action -> String? in
            guard case .journal(let event) = action else { return nil }
            switch event {
            case .fired(let run, _): return "fired \(run.attempt) \(run.trigger.rawValue)"
            case .finished(let run): return "finished \(run.attempt)"
            default: return nil
            }
        }
        #expect(journal == ["fired 2 manual", "finished 1"], "\(journal)")
        #expect(record?.trigger == .manual)
    }
}
