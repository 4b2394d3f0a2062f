import JobRunnerSupervision
import JobRunnerHistory
import JobRunnerAPI
import JobRunnerCluster
import JobRunnerConfig
import JobRunnerControl
import JobRunnerCore
import JobRunnerSchedule
import JobRunnerStore
import Prometheus

#if canImport(Glibc)
import Glibc
#endif

/// The control API over the engine: reads the scheduler and the run registry and shapes them
/// into the API's JSON types.
struct EngineControlHandler: ControlHandler {
    static let version = JobRunnerVersion.string

    let scheduler: Scheduler
    let registry: RunRegistry
    let history: any HistoryStore
    let writer: HistoryWriter
    let reloader: Reloader
    let daemon: DaemonState
    let clock: any SchedulerClock
    let metricsRegistry: PrometheusCollectorRegistry
    let access: AccessPolicy
    /// This node's cluster, if it is a node of one.
    let cluster: ClusterCoordinator?
    /// Every run's output as it is printed.
    let broadcast: OutputBroadcast

    func status() async -> StatusResponse {
        let summary = await scheduler.summary()
        let facts = daemon.snapshot
        var response = StatusResponse(
            version: Self.version,
            pid: getpid(),
            startedAt: facts.startedAt.description,
            uptimeSeconds: (clock.uptime() - facts.startedUptime).secondsValue,
            state: summary.state.rawValue,
            config: ConfigStatus(path: facts.configPath, generation: summary.generation, lastReload: facts.lastReload),
            jobs: summary.jobCount,
            running: summary.runningCount,
            waiting: summary.waitingCount,
            nextFire: summary.nextFire.map { NextFire(job: $0.job, at: $0.at.description) },
            runTotals: registry.totals(),
            historyError: writer.failure
        )
        if let cluster { response.cluster = await clusterStatus(cluster) }
        return response
    }

    private func clusterStatus(_ cluster: ClusterCoordinator) async -> ClusterStatus {
        var status = ClusterStatus(node: cluster.nodeName, database: cluster.databaseDescription,
                                   leaseSeconds: cluster.lease.secondsValue, nodes: [])
        do {
            let nodes = try await cluster.nodes()
            let mine = nodes.first { $0.name == cluster.nodeName }?.configHash
            status.nodes = nodes.map { node in
                ClusterNodeInfo(name: node.name, state: node.state, pid: node.pid, version: node.version,
                                startedAt: node.startedAt.description, lastHeartbeat: node.heartbeatAt.description,
                                heartbeatAgeSeconds: node.heartbeatAge, running: node.running, configHash: node.configHash,
                                configDiffers: node.state == "alive" && mine != nil && node.configHash != mine)
            }
        } catch {
            status.error = ClusterDatabase.describe(error)
        }
        return status
    }

    func jobs() async -> [JobInfo] {
        let now = clock.now()
        var result: [JobInfo] = []
        for state in await scheduler.jobStates() {
            result.append(await jobInfo(state, now: now))
        }
        return result
    }

    func job(named name: String) async -> JobInfo? {
        guard let state = await scheduler.jobState(name) else { return nil }
        return await jobInfo(state, now: clock.now())
    }

    func setPaused(job name: String, _ paused: Bool) async -> JobInfo? {
        let found = paused ? await scheduler.pause(job: name) : await scheduler.resume(job: name)
        if found { await cluster?.announcePause(job: name, paused: paused) }
        return found ? await job(named: name) : nil
    }

    /// The last run comes from memory when the daemon has seen one since it started, else from
    /// the history.
    private func jobInfo(_ state: Scheduler.JobState, now: Timestamp) async -> JobInfo {
        var info = Self.jobInfo(state, registry: registry, now: now)
        if info.lastRun == nil, let stored = try? await history.runs(job: state.definition.name, limit: 1).first {
            info.lastRun = Self.runInfo(stored, now: now)
        }
        return info
    }

    func nextFires(job name: String, count: Int) async -> NextResponse? {
        guard let state = await scheduler.jobState(name), let times = await scheduler.upcoming(job: name, count: count) else {
            return nil
        }
        let zone = state.definition.timeZone
        return NextResponse(normalized: state.definition.trigger?.description ?? "(manual)", timeZone: zone.identifier,
                            next: times.map { zone.rfc3339($0) })
    }

    func run(id: String) async -> RunDetail? {
        let runID = RunID(rawValue: id)
        var found = registry.record(runID)
        if found == nil { found = (try? await history.run(id: runID)) ?? nil }
        guard let record = found else { return nil }
        let lines = record.output?.lines ?? []
        return RunDetail(run: Self.runInfo(record, now: clock.now()),
                         output: lines.map { OutputLineInfo(stream: $0.stream.rawValue, text: $0.text, at: $0.at?.description, step: $0.step) })
    }

    /// Runs newest first: what memory holds (live runs and the recent finished ones, always
    /// current) merged with the history on disk (which may lag a batch behind).
    func runs(_ query: RunsQuery) async throws(APIError) -> [RunInfo] {
        func instant(_ name: String, _ text: String?) throws(APIError) -> Timestamp? {
            guard let text else { return nil }
            guard let instant = Timestamp(rfc3339: text) else {
                throw APIError.badRequest("\(name) must be an RFC 3339 time (2026-12-01T03:00:00Z), not '\(text)'")
            }
            return instant
        }
        let filter = RunQuery(job: query.job, outcome: query.outcome, before: query.before, since: try instant("since", query.since),
                              until: try instant("until", query.until), limit: query.limit)
        let now = clock.now()
        return await records(filter).map { Self.runInfo($0, now: now) }
    }

    private func records(_ filter: RunQuery) async -> [RunRecord] {
        var byID: [RunID: RunRecord] = [:]
        for record in (try? await history.runs(filter)) ?? [] where filter.matches(record) {
            byID[record.id] = record
        }
        for record in registry.active() + registry.history() where filter.matches(record) {
            byID[record.id] = record
        }
        return Array(byID.values.sorted { $0.id > $1.id }.prefix(filter.limit))
    }

    func resolveRun(_ given: String) async throws(APIError) -> String {
        // Ids are lowercase; one copied in capitals names the same run.
        let text = given.lowercased()
        if RunID(validating: text) != nil { return text }
        guard RunID.isAbbreviation(text) else {
            throw APIError.notFound("no run with id '\(given)' (a run id is 26 characters; an abbreviation, at least 4 of its first or last ones)")
        }
        let matches = await records(RunQuery(abbreviation: text, limit: 3))
        switch matches.count {
        case 0: throw APIError.notFound("no run with id '\(given)'")
        case 1: return matches[0].id.rawValue
        default:
            throw APIError.conflict("'\(given)' names more than one run (\(matches.prefix(2).map(\.id.rawValue).joined(separator: ", ")), …): give more of the id")
        }
    }

    func followAllOutput() async -> any AsyncSequence<OutputEvent, Never> & Sendable {
        broadcast.follow().map { @Sendable event -> OutputEvent in
            switch event {
            case .line(let tagged):
                .line(OutputLineInfo(stream: tagged.line.stream.rawValue, text: tagged.line.text, at: tagged.line.at?.description,
                                     job: tagged.job, run: tagged.run.rawValue, step: tagged.line.step))
            case .dropped(let count): .dropped(count)
            case .idle: .idle
            }
        }
    }

    func cancel(run id: String) async throws(APIError) -> CancelResponse {
        let now = clock.now()
        let result = await scheduler.cancel(run: RunID(rawValue: id))
        if case .notFound = result, let cluster, let stored = (try? await history.run(id: RunID(rawValue: id))) ?? nil,
            let node = stored.node, node != cluster.nodeName
        {
            // A run of another node: ask it (it stops the run with the job's kill sequence).
            guard stored.outcome == nil else {
                throw APIError.conflict("run \(id) already finished on node \(node) (\(stored.outcome?.name ?? "finished"))")
            }
            do {
                try await cluster.requestCancel(run: id, on: node)
            } catch {
                throw APIError.unavailable("cannot reach node \(node) through the cluster database: \(ClusterDatabase.describe(error))")
            }
            return CancelResponse(result: "requested", run: Self.runInfo(stored, now: now))
        }
        switch result {
        case .stopping(let record):
            return CancelResponse(result: "stopping", run: Self.runInfo(record, now: now))
        case .dropped(let record):
            return CancelResponse(result: "dropped", run: Self.runInfo(record, now: now))
        case .alreadyFinished(let record):
            throw APIError.conflict("run \(id) already finished (\(record.outcome?.name ?? "finished"))")
        case .notFound:
            throw APIError.notFound("no run with id '\(id)'")
        }
    }

    func reload() async -> ReloadResult {
        await reloader.requestReload()
    }

    func mayMutate(_ peer: PeerCredentials) -> Bool {
        access.allows(peer)
    }

    func runNow(job name: String, wait: Bool, firstAttempt: Bool, node: String?) async throws(APIError) -> RunInfo {
        if let node, node != cluster?.nodeName {
            return try await runRemotely(job: name, on: node, wait: wait, firstAttempt: firstAttempt)
        }
        guard let record = await scheduler.runNow(job: name) else {
            throw APIError.notFound("no job named '\(name)'")
        }
        guard wait, record.outcome == nil else { return Self.runInfo(record, now: clock.now()) }
        let finished = await (firstAttempt ? registry.waitForEnd(record.id) : registry.waitForFinalOutcome(record.id)) ?? record
        return Self.runInfo(finished, now: clock.now())
    }

    /// Asks another node to run a job now; with `wait`, follows the run in the shared history.
    private func runRemotely(job name: String, on node: String, wait: Bool, firstAttempt: Bool) async throws(APIError) -> RunInfo {
        guard let cluster else { throw APIError.badRequest("node=\(node): this daemon is not part of a cluster") }
        guard await scheduler.jobState(name) != nil else { throw APIError.notFound("no job named '\(name)'") }
        let nodes: [ClusterCoordinator.Node]
        do {
            nodes = try await cluster.nodes()
        } catch {
            throw APIError.unavailable("cannot read the cluster's nodes: \(ClusterDatabase.describe(error))")
        }
        guard nodes.contains(where: { $0.name == node && $0.state == "alive" }) else {
            let alive = nodes.filter { $0.state == "alive" }.map(\.name).joined(separator: ", ")
            throw APIError.notFound("no live node named '\(node)' (alive: \(alive.isEmpty ? "none" : alive))")
        }
        let now = clock.now()
        let id = RunIDGenerator().next(at: now)
        do {
            try await cluster.requestRun(job: name, on: node, id: id)
        } catch {
            throw APIError.unavailable("cannot reach node \(node) through the cluster database: \(ClusterDatabase.describe(error))")
        }
        var record = RunRecord(id: id, job: name, trigger: .manual, scheduledTime: now, queuedAt: now)
        record.node = node
        record.waitingFor = "node \(node)"
        guard wait else { return Self.runInfo(record, now: now) }
        // The other node writes the run (and each retry, before the attempt it follows ends)
        // to the shared history; follow the fire there.
        // A read that fails (the database away for a moment) is tried again, never taken for
        // "no further attempt".
        var following = id
        while !Task.isCancelled {
            if let stored = (try? await history.run(id: following)) ?? nil {
                record = stored
                if stored.outcome != nil {
                    if firstAttempt { break }
                    if let attempts = try? await history.runs(RunQuery(fireID: stored.fireID.rawValue, limit: 1)) {
                        guard let next = attempts.first, next.attempt > stored.attempt else { break }
                        following = next.id
                        continue
                    }
                }
            }
            try? await Pause.sleep(for: .milliseconds(250))
        }
        return Self.runInfo(record, now: clock.now())
    }

    func followOutput(run id: String) async -> (kept: [OutputLineInfo], more: (any AsyncSequence<OutputEvent, Never> & Sendable)?)? {
        let runID = RunID(rawValue: id)
        let convert: @Sendable (OutputLine) -> OutputLineInfo = {
            OutputLineInfo(stream: $0.stream.rawValue, text: $0.text, at: $0.at?.description, step: $0.step)
        }
        if let record = registry.record(runID) {
            guard let tail = record.output else { return ([], nil) }
            let (kept, follower) = tail.follow()
            let events = follower.map { @Sendable event -> OutputEvent in
                switch event {
                case .line(let line): .line(convert(line))
                case .dropped(let count): .dropped(count)
                case .idle: .idle
                }
            }
            return (kept.map(convert), record.outcome == nil ? events : nil)
        }
        guard let stored = (try? await history.run(id: runID)) ?? nil else { return nil }
        return ((stored.output?.lines ?? []).map(convert), nil)
    }

    func metrics() async -> String {
        EngineMetrics.withHelp(metricsRegistry.emitToString()) + EngineMetrics.renderJobMetrics(await scheduler.jobGauges())
    }

    // MARK: - Mapping

    static func jobInfo(_ state: Scheduler.JobState, registry: RunRegistry, now: Timestamp) -> JobInfo {
        let job = state.definition
        var command: [String]?
        var shell: String?
        switch job.command {
        case _ where !job.steps.isEmpty || job.http != nil: break
        case .argv(let argv): command = argv
        case .shell(let line): shell = line
        }
        return JobInfo(
            name: job.name,
            command: command,
            shell: shell,
            schedule: job.trigger?.description,
            timeZone: job.timeZone.identifier,
            timeoutSeconds: job.timeout?.secondsValue,
            killGraceSeconds: job.killGrace.secondsValue,
            workingDirectory: job.workingDirectory,
            environment: job.environment.keys.sorted(),
            state: state.paused ? "paused" : job.enabled ? "enabled" : "disabled",
            nextFire: state.nextFire?.description,
            source: "\(job.location.file):\(job.location.line)",
            lastRun: registry.lastRun(job: job.name).map { runInfo($0, now: now) },
            active: registry.active(job: job.name).map { runInfo($0, now: now) },
            policies: policies(job),
            steps: stepInfos(job),
            after: job.after.isEmpty ? nil : job.after.map { "\($0.job) \($0.outcome.rawValue)" },
            http: job.http?.description
        )
    }

    static func policies(_ job: JobDefinition) -> JobPolicies {
        func line(_ command: JobCommand?) -> String? {
            switch command {
            case .argv(let argv)?: argv.joined(separator: " ")
            case .shell(let text)?: text
            case nil: nil
            }
        }
        let limits = job.limits
        var named: [String: UInt64] = [:]
        for (name, value) in [("open_files", limits.openFiles), ("processes", limits.processes), ("cpu_seconds", limits.cpuSeconds),
                              ("address_space", limits.addressSpace), ("core_size", limits.coreSize), ("file_size", limits.fileSize)] {
            if let value { named[name] = value }
        }
        return JobPolicies(
            user: job.identity?.user,
            overlap: job.overlap.description,
            pool: job.pool,
            retry: job.retry.map { RetryInfo(attempts: $0.attempts, backoffSeconds: $0.backoff.secondsValue,
                                             maxBackoffSeconds: $0.maxBackoff.secondsValue, on: $0.on.map(\.rawValue).sorted()) },
            randomDelaySeconds: job.randomDelay?.secondsValue,
            runOnStart: job.runOnStart,
            catchUp: job.catchUp.rawValue,
            onSuccess: line(job.onSuccess),
            onFailure: line(job.onFailure),
            limits: named,
            umask: job.umask.map { "0" + String($0, radix: 8) },
            nice: job.nice
        )
    }

    static func runInfo(_ record: RunRecord, now: Timestamp) -> RunInfo {
        RunInfo(
            id: record.id.rawValue,
            job: record.job,
            trigger: record.trigger.rawValue,
            attempt: record.attempt,
            fireId: record.fireID.rawValue,
            state: record.phase.rawValue,
            scheduledTime: record.scheduledTime.description,
            queuedAt: record.queuedAt.description,
            startedAt: record.startedAt?.description,
            endedAt: record.endedAt?.description,
            durationSeconds: record.duration(now: now)?.secondsValue,
            pid: record.pid,
            outcome: record.outcome?.name,
            exitCode: record.outcome?.exitCode,
            signal: record.outcome?.signal,
            detail: record.outcome?.detail,
            statusText: record.progress,
            waitingFor: record.waitingFor,
            node: record.node,
            cpuUserSeconds: record.usage?.userSeconds,
            cpuSystemSeconds: record.usage?.systemSeconds,
            maxRssBytes: record.usage?.maxResidentBytes,
            maxRssAtMostBytes: record.usage?.maxResidentBound,
            steps: record.steps.isEmpty ? nil : record.steps.map { stepInfo($0, now: now) },
            failures: record.steps.failureSummary,
            triggeredBy: record.triggeredBy,
            httpStatus: record.outcome?.httpStatus
        )
    }

    static func stepInfo(_ step: StepResult, now: Timestamp) -> StepInfo {
        StepInfo(
            name: step.name, kind: step.kind.rawValue, depth: step.depth, outcome: step.outcome.name, exitCode: step.outcome.exitCode,
            signal: step.outcome.signal, detail: step.outcome.detail, startedAt: step.startedAt?.description,
            endedAt: step.endedAt?.description,
            durationSeconds: step.startedAt.flatMap { started in step.endedAt.map { started.duration(to: $0).secondsValue } },
            pid: step.pid, cpuUserSeconds: step.usage?.userSeconds, cpuSystemSeconds: step.usage?.systemSeconds,
            continueOnFailure: step.continueOnFailure, httpStatus: step.httpStatus
        )
    }

    /// A job's steps, flattened in tree order.
    static func stepInfos(_ job: JobDefinition) -> [JobStepInfo]? {
        guard !job.steps.isEmpty else { return nil }
        return job.steps.flatMap { $0.flattened() }.map { entry in
            let step = entry.step
            switch step.work {
            case .process(let command):
                return JobStepInfo(name: step.name, kind: step.kind.rawValue, depth: entry.depth, command: command.description,
                                   timeoutSeconds: step.timeout?.secondsValue, continueOnFailure: step.continueOnFailure)
            case .http(let call):
                return JobStepInfo(name: step.name, kind: step.kind.rawValue, depth: entry.depth, command: call.description,
                                   timeoutSeconds: step.timeout?.secondsValue, continueOnFailure: step.continueOnFailure)
            case .parallel(let group):
                return JobStepInfo(name: step.name, kind: step.kind.rawValue, depth: entry.depth, max: group.max,
                                   continueOnFailure: step.continueOnFailure)
            }
        }
    }
}
