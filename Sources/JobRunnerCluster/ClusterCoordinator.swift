import JobRunnerHistory
import Foundation
import JobRunnerConfig
import JobRunnerCore
import JobRunnerSchedule
import Logging
import Metrics
import PostgresNIO
import ServiceLifecycle
import Synchronization

/// This node's membership of the cluster: it joins (one row in `jobrunner.nodes`), heartbeats
/// every lease/4 on the database's clock, claims occurrences, declares silent nodes dead and
/// takes their runs over, notices when its own lease was lost (then stands down and rejoins),
/// and carries control requests between nodes with LISTEN/NOTIFY.
public final class ClusterCoordinator: ClusterCoordination, Service {
    /// One node as the cluster sees it.
    public struct Node: Sendable, Hashable {
        public var name: String
        public var state: String
        public var incarnation: Int64
        public var pid: Int64
        public var version: String
        public var configHash: String
        public var running: Int
        public var startedAt: Timestamp
        public var heartbeatAt: Timestamp
        /// Seconds since its last heartbeat, on the database's clock.
        public var heartbeatAge: Double
    }

    static let channel = "jobrunner"

    private struct State {
        var incarnation: Int64 = 0
        var clusterStart = Timestamp(microseconds: 0)
        var configHash: String
        var member = false
        var lastBeat = ContinuousClock.now
        /// Since when heartbeats succeed without a gap (a node only declares others dead once it
        /// has itself been connected for a lease: after a database restart every node gets to
        /// heartbeat first).
        var connectedSince: ContinuousClock.Instant?
        var scheduler: Scheduler?
        /// The live nodes' names, refreshed with every heartbeat (for `prefers`).
        var liveNames: [String] = []
        /// What this node's previous incarnation left unfinished, settled at the first
        /// heartbeat (the scheduler runs by then).
        var inherited: [OrphanedRun] = []
        /// Commands read so far: the highest id, and the recent ids (ids may commit out of order).
        var lastCommand: Int64 = 0
        /// Commands up to this id were written before this incarnation joined: never carried out
        /// (a restarted node would otherwise replay the last ones it read before).
        var commandFloor: Int64 = 0
        var seenCommands: Set<Int64> = []
        var polling = false
        /// Occurrences whose claim a sweep or a join moved to this node (their fires are taken
        /// over): a claim asked again never counts them as its own.
        var takenOver: Set<String> = []
        var pollAgain = false
    }

    public let nodeName: String
    public let lease: Duration
    let database: ClusterDatabase
    let machineID: String
    let version: String
    let logger: Logger
    private let state: Mutex<State>

    public init(database: ClusterDatabase, settings: ClusterSettings, machineID: String, version: String, configHash: String,
                logger: Logger) {
        self.database = database
        self.nodeName = settings.nodeName
        self.lease = settings.lease
        self.machineID = machineID
        self.version = version
        var logger = logger
        logger[metadataKey: "node"] = "\(settings.nodeName)"
        self.logger = logger
        self.state = Mutex(State(configHash: configHash))
    }

    public var clusterStart: Timestamp { state.withLock { $0.clusterStart } }
    /// The database, without its password.
    public var databaseDescription: String { database.url.description }
    public var incarnation: Int64 { state.withLock { $0.incarnation } }

    /// The scheduler to drive (set once, before the services run).
    public func attach(_ scheduler: Scheduler) {
        state.withLock { $0.scheduler = scheduler }
    }

    /// The config fingerprint shown to the other nodes (updated on reload).
    public func setConfigHash(_ hash: String) {
        state.withLock { $0.configHash = hash }
    }

    private var scheduler: Scheduler? { state.withLock { $0.scheduler } }

    public let handoff: Duration = .milliseconds(250)

    /// Rendezvous hashing: the live node with the highest hash of (node, job, occurrence) is
    /// preferred. Every node computes the same answer from the same list of live nodes.
    public func prefers(_ request: ClaimRequest) -> Bool {
        let names = state.withLock { $0.liveNames }
        guard names.count > 1, names.contains(nodeName) else { return true }
        let key = "|\(request.job)|\(request.occurrence.microseconds)"
        let best = names.max { StableHash.of($0 + key) < StableHash.of($1 + key) }
        return best == nodeName
    }

    /// Reads which nodes are alive (their heartbeat within their lease).
    private func refreshLiveNodes() async throws {
        let names = try await database.within(lease / 2, "reading the live nodes") { [database, logger] in
            var names: [String] = []
            for try await name in try await database.client.query("""
                SELECT name FROM jobrunner.nodes
                WHERE state = 'alive' AND heartbeat_at >= now() - make_interval(secs => lease_ms / 1000.0) ORDER BY name
                """, logger: logger).decode(String.self)
            {
                names.append(name)
            }
            return names
        }
        state.withLock { $0.liveNames = names }
        Gauge(label: "jobrunner_cluster_nodes").record(names.count)
    }

    // MARK: - Joining

    /// Joins the cluster: registers this node (a new incarnation), and starts a new cluster
    /// generation when no other node is alive. Refuses a node name held by a live node on
    /// another machine or process.
    public func join() async throws {
        // The join writes `heartbeat_at = now()`, the transaction's start: no earlier than this.
        let began = ContinuousClock.now
        let (incarnation, start, inherited, lastCommand) = try await database.transaction(within: lease, "joining the cluster") {
            [self] connection -> (Int64, Int64, [OrphanedRun], Int64) in
            // A node frozen inside this transaction would hold the lock from every other joining
            // node: the server ends such a session after half a lease.
            let idle = "\(max(1000, lease.wholeMicroseconds / 2000))ms"
            try await connection.query(PostgresQuery(unsafeSQL: "SET LOCAL idle_in_transaction_session_timeout = '\(idle)'"), logger: logger)
            try await connection.query("SELECT pg_advisory_xact_lock(hashtext('jobrunner.join'))", logger: logger)
            let holders = try await connection.query("""
                SELECT machine_id, pid, extract(epoch FROM now() - heartbeat_at)::float8 FROM jobrunner.nodes
                WHERE name = \(nodeName) AND state = 'alive' AND heartbeat_at >= now() - make_interval(secs => lease_ms / 1000.0)
                """, logger: logger)
            for try await (machine, pid, age) in holders.decode((String, Int64, Double).self) {
                let samePlace = machine == machineID && (pid == Int64(getpid()) || kill(pid_t(pid), 0) != 0)
                if !samePlace {
                    throw ClusterError("node name '\(nodeName)' is held by a live node (machine \(machine.prefix(8)), pid \(pid), "
                        + "heartbeat \(age.isFinite ? String(format: "%.0f", age) : "?")s ago); give each node its own daemon.cluster.node_name")
                }
            }
            var others: Int64 = 0
            for try await count in try await connection.query("""
                SELECT count(*) FROM jobrunner.nodes WHERE state = 'alive' AND name <> \(nodeName)
                AND heartbeat_at >= now() - make_interval(secs => lease_ms / 1000.0)
                """, logger: logger).decode(Int64.self)
            {
                others = count
            }
            if others == 0 {
                try await connection.query("""
                    INSERT INTO jobrunner.cluster (id, started_at, generation) VALUES (1, \(WallClock.now().microseconds), 1)
                    ON CONFLICT (id) DO UPDATE SET started_at = excluded.started_at, generation = cluster.generation + 1
                    """, logger: logger)
            }
            var start: Int64 = 0
            for try await value in try await connection.query("SELECT started_at FROM jobrunner.cluster WHERE id = 1", logger: logger)
                .decode(Int64.self)
            {
                start = value
            }
            let hash = state.withLock { $0.configHash }
            var incarnation: Int64 = 1
            for try await value in try await connection.query("""
                INSERT INTO jobrunner.nodes (name, incarnation, state, machine_id, pid, version, config_hash, lease_ms, started_at, heartbeat_at)
                VALUES (\(nodeName), 1, 'alive', \(machineID), \(Int64(getpid())), \(version), \(hash),
                        \(lease.wholeMicroseconds / 1000), now(), now())
                ON CONFLICT (name) DO UPDATE SET incarnation = nodes.incarnation + 1, state = 'alive', machine_id = excluded.machine_id,
                    pid = excluded.pid, version = excluded.version, config_hash = excluded.config_hash, running = 0,
                    lease_ms = excluded.lease_ms, started_at = now(), heartbeat_at = now()
                RETURNING incarnation
                """, logger: logger).decode(Int64.self)
            {
                incarnation = value
            }
            // Slots held by this node's previous incarnation are not held by anything alive.
            try await connection.query("DELETE FROM jobrunner.pool_slots WHERE node = \(nodeName)", logger: logger)
            try await connection.query("DELETE FROM jobrunner.pool_waiters WHERE node = \(nodeName)", logger: logger)
            // What the previous incarnation left (a restart within its lease: no survivor ever
            // declares it dead): its unfinished runs, and the occurrences it claimed without
            // recording a run. Settled here, by the takeover's rules, at the first heartbeat.
            var inherited: [OrphanedRun] = []
            if incarnation > 1 {
                // Read, not ended: the daemon's own recovery ends those runs next and kills what
                // their processes left on this machine.
                inherited = try await Self.unfinishedWork(runsOf: [nodeName], claimsOf: [nodeName], taker: nodeName, on: connection,
                                                          end: nil, lease: lease, logger: logger)
            }
            var lastCommand: Int64 = 0
            for try await value in try await connection.query("SELECT COALESCE(max(id), 0) FROM jobrunner.commands", logger: logger)
                .decode(Int64.self)
            {
                lastCommand = value
            }
            return (incarnation, start, inherited, lastCommand)
        }
        // Taken in once the join has committed (a join given up on and asked again would
        // otherwise hand the same work over twice).
        noteTakenOver(inherited)
        state.withLock { state in
            state.inherited += inherited
            // At this process's first join: what was written before it started is not for it.
            if state.lastCommand == 0 { state.commandFloor = lastCommand }
            state.lastCommand = max(state.lastCommand, lastCommand)
        }
        state.withLock { state in
            state.incarnation = incarnation
            state.clusterStart = Timestamp(microseconds: start)
            state.member = true
            state.lastBeat = began
            state.connectedSince = state.connectedSince ?? .now
        }
        try? await refreshLiveNodes()
        logger.notice("joined the cluster", metadata: [
            "incarnation": .number(incarnation), "cluster_started": "\(Timestamp(microseconds: start))",
            "lease": .seconds(lease),
        ])
    }

    /// Leaves the cluster on a clean stop, so nobody waits a lease for this node.
    func leave() async {
        let incarnation = self.incarnation
        do {
            _ = try await database.within(.seconds(5), "leaving the cluster") { [database, nodeName, logger] in
                try await database.client.query("""
                    UPDATE jobrunner.nodes SET state = 'left', running = 0 WHERE name = \(nodeName) AND incarnation = \(incarnation)
                    """, logger: logger)
                try await database.client.query("DELETE FROM jobrunner.pool_slots WHERE node = \(nodeName)", logger: logger)
                try await database.client.query("DELETE FROM jobrunner.pool_waiters WHERE node = \(nodeName)", logger: logger)
            }
            logger.info("left the cluster")
        } catch {
            logger.warning("could not mark this node as left; others will declare it dead after its lease",
                           metadata: ["error": "\(ClusterDatabase.describe(error))"])
        }
    }

    // MARK: - Claims

    public func claim(_ requests: [ClaimRequest]) async -> [ClaimResult] {
        guard !requests.isEmpty else { return [] }
        let started = ContinuousClock.now
        let jobs = requests.map(\.job)
        let occurrences = requests.map(\.occurrence.microseconds)
        var lastError = ""
        var attempt = 0
        while ContinuousClock.now - started < lease {
            let (member, incarnation) = state.withLock { ($0.member, $0.incarnation) }
            guard member else { return count(Array(repeating: .notMember, count: requests.count), since: started) }
            do {
                // One statement: insert every claim this node can make (only while its own row
                // says it is alive), then report per request who holds it, and whether another
                // live node is running the job right now (for overlap: skip).
                let isRetry = attempt > 0
                let takenOver = isRetry ? state.withLock { $0.takenOver } : []
                let results = try await database.within(lease / 2, "claiming occurrences") { [self] in
                let rows = try await database.client.query("""
                    WITH me AS (
                        SELECT 1 FROM jobrunner.nodes WHERE name = \(nodeName) AND incarnation = \(incarnation) AND state = 'alive'),
                    input AS (
                        SELECT * FROM unnest(\(jobs)::text[], \(occurrences)::int8[]) WITH ORDINALITY AS t(job, occurrence, position)),
                    claimed AS (
                        INSERT INTO jobrunner.occurrences (job, occurrence, node)
                        SELECT job, occurrence, \(nodeName) FROM input WHERE EXISTS (SELECT 1 FROM me)
                        ON CONFLICT DO NOTHING RETURNING job, occurrence)
                    SELECT i.position, EXISTS (SELECT 1 FROM me), c.job IS NOT NULL, o.node,
                        (SELECT r.node FROM jobrunner.runs r JOIN jobrunner.nodes n ON n.name = r.node AND n.state = 'alive'
                         WHERE r.job = i.job AND r.ended_at IS NULL AND r.started_at IS NOT NULL AND r.node <> \(nodeName) LIMIT 1),
                        COALESCE(o.node = \(nodeName) AND o.claimed_at >= (
                            SELECT started_at FROM jobrunner.nodes WHERE name = \(nodeName) AND incarnation = \(incarnation)), false)
                    FROM input i
                    LEFT JOIN claimed c ON c.job = i.job AND c.occurrence = i.occurrence
                    LEFT JOIN jobrunner.occurrences o ON o.job = i.job AND o.occurrence = i.occurrence
                    """, logger: logger)
                var results = Array(repeating: ClaimResult.lost(to: "another node"), count: requests.count)
                for try await (position, alive, won, holder, busy, madeHere) in rows.decode((Int64, Bool, Bool, String?, String?, Bool).self) {
                    let index = Int(position) - 1
                    guard results.indices.contains(index) else { continue }
                    // Asked again after an error, the claim may be the one the lost answer was
                    // about: made by this incarnation (since it joined), it is this fire's. One an
                    // earlier incarnation made is settled as inherited, not here.
                    let ours = isRetry && madeHere && !takenOver.contains(Self.key(requests[index].job, requests[index].occurrence.microseconds))
                    results[index] = won || ours ? .won(busyOn: busy) : !alive ? .notMember : .lost(to: holder ?? "another node")
                }
                return results
                }
                return count(results, since: started)
            } catch {
                lastError = ClusterDatabase.describe(error)
            }
            attempt += 1
            try? await Pause.sleep(for: .milliseconds(min(1000, 100 * attempt)))
        }
        return count(Array(repeating: .unavailable(reason: lastError), count: requests.count), since: started)
    }

    private func count(_ results: [ClaimResult], since started: ContinuousClock.Instant) -> [ClaimResult] {
        for result in results {
            Counter(label: "jobrunner_claims_total", dimensions: [("result", result.label)]).increment()
        }
        Metrics.Timer(label: "jobrunner_claim_duration_seconds").recordMicroseconds((ContinuousClock.now - started).wholeMicroseconds)
        return results
    }

    // MARK: - Cluster-wide pools

    public func acquireSlot(pool: String, size: Int, run: RunID, since: Timestamp) async -> Bool {
        let incarnation = self.incarnation
        do {
            return try await database.transaction(within: lease / 2, "asking for a pool slot") { [self] connection -> Bool in
                try await connection.query("""
                    INSERT INTO jobrunner.pool_waiters (run_id, pool, node, since) VALUES (\(run.rawValue), \(pool), \(nodeName), \(since.microseconds))
                    ON CONFLICT (run_id) DO NOTHING
                    """, logger: logger)
                var granted = false
                // Granted already, by an ask whose answer was given up on.
                for try await _ in try await connection.query("""
                    SELECT 1 FROM jobrunner.pool_slots WHERE run_id = \(run.rawValue) AND node = \(nodeName)
                    """, logger: logger).decode(Int32.self)
                {
                    granted = true
                }
                if !granted {
                    for try await _ in try await connection.query("""
                        INSERT INTO jobrunner.pool_slots (pool, slot, node, run_id)
                        SELECT \(pool), s, \(nodeName), \(run.rawValue) FROM generate_series(0, \(Int32(size)) - 1) AS s
                        WHERE EXISTS (SELECT 1 FROM jobrunner.nodes WHERE name = \(nodeName) AND incarnation = \(incarnation) AND state = 'alive')
                          AND NOT EXISTS (SELECT 1 FROM jobrunner.pool_slots p WHERE p.pool = \(pool) AND p.slot = s)
                          AND NOT EXISTS (
                              SELECT 1 FROM jobrunner.pool_waiters w JOIN jobrunner.nodes n ON n.name = w.node AND n.state = 'alive'
                              WHERE w.pool = \(pool) AND w.run_id <> \(run.rawValue)
                                AND (w.since, w.run_id) < (\(since.microseconds), \(run.rawValue)))
                        LIMIT 1
                        ON CONFLICT DO NOTHING RETURNING slot
                        """, logger: logger).decode(Int32.self)
                    {
                        granted = true
                    }
                }
                if granted {
                    try await connection.query("DELETE FROM jobrunner.pool_waiters WHERE run_id = \(run.rawValue)", logger: logger)
                }
                return granted
            }
        } catch {
            logger.warning("cannot take a cluster-wide pool slot", metadata: ["pool": "\(pool)", "error": "\(ClusterDatabase.describe(error))"])
            return false
        }
    }

    public func releaseSlot(pool: String, run: RunID) async {
        do {
            try await database.within(lease / 2, "giving back a pool slot") { [database, logger] () async throws -> Void in
                try await database.client.query("DELETE FROM jobrunner.pool_slots WHERE run_id = \(run.rawValue)", logger: logger)
                try await database.client.query("DELETE FROM jobrunner.pool_waiters WHERE run_id = \(run.rawValue)", logger: logger)
            }
        } catch {
            // Freed when this node leaves or is declared dead.
            logger.warning("cannot give back a cluster-wide pool slot", metadata: ["pool": "\(pool)", "error": "\(ClusterDatabase.describe(error))"])
        }
    }

    // MARK: - Starting runs

    /// How long before its lease ends by its own clock a node stops starting runs: a node
    /// declared dead by a survivor (whose clock may run a little faster, and whose sweep comes
    /// at its own time) has stopped starting before then.
    var fencingMargin: Duration { lease / 4 }

    /// Whether this node's lease is valid by its own monotonic clock.
    var leaseHolds: Bool {
        state.withLock { $0.member && ContinuousClock.now - $0.lastBeat < lease - fencingMargin }
    }

    public func dispatch(_ run: RunID) async -> DispatchVerdict {
        // Near the end of the lease (heartbeats late): the start waits for the next heartbeat,
        // for as long as the lease lasts; past it, this node stands down.
        while !leaseHolds {
            let (member, silent) = state.withLock { ($0.member, ContinuousClock.now - $0.lastBeat) }
            if !member || silent >= lease {
                let reason = member
                    ? "this node's cluster lease ran out by its own clock (last heartbeat \(DurationText.format(silent)) ago, lease \(DurationText.format(lease)))"
                    : "this node is not a live cluster member"
                logger.warning("run not started", metadata: ["run_id": "\(run)", "reason": "\(reason)"])
                if member { await loseLease(reason) }
                return .refused(reason)
            }
            try? await Pause.sleep(for: .milliseconds(20))
        }
        let reason: String
        switch await recordDispatch(run) {
        case .recorded:
            // The lease may have run out while the statement was out.
            guard !leaseHolds else { return .allowed }
            reason = "this node's cluster lease ran out"
        case .notHeld:
            reason = "the cluster database does not hold this run for this node (its fire is not recorded, its occurrence is claimed by another node, or this node was declared dead)"
        case .failed(let error):
            reason = "the cluster database is unreachable: \(error)"
        }
        logger.warning("run not started", metadata: ["run_id": "\(run)", "reason": "\(reason)"])
        return .refused(reason)
    }

    enum DispatchRecord: Sendable {
        case recorded, notHeld, failed(String)
    }

    private struct DispatchBatch: ~Copyable {
        /// Runs waiting for the statement after the one out; the first is resumed with nil to
        /// send it (the leader), the others get their answer.
        var waiting: [(RunID, CheckedContinuation<DispatchRecord?, Never>)] = []
        var inFlight = false
    }

    private let dispatchBatch = Mutex(DispatchBatch())

    /// Marks a run dispatched. Starts asked for while a statement is out go together in the
    /// next one (group commit): a burst costs a few round trips, not one per run. The caller
    /// that finds no statement out sends one itself, for itself and whoever waits; when it
    /// returns, the next waiter (if any) sends the next.
    private func recordDispatch(_ run: RunID) async -> DispatchRecord {
        let answer: DispatchRecord? = await withCheckedContinuation { continuation in
            let follow = dispatchBatch.withLock { batch -> Bool in
                guard batch.inFlight else {
                    batch.inFlight = true
                    return false
                }
                batch.waiting.append((run, continuation))
                return true
            }
            if !follow { continuation.resume(returning: nil) }
        }
        if let answer { return answer }
        // Leading: this run and everyone waiting now.
        let others = dispatchBatch.withLock { batch -> [(RunID, CheckedContinuation<DispatchRecord?, Never>)] in
            defer { batch.waiting = [] }
            return batch.waiting
        }
        let results = await markDispatched([run] + others.map(\.0))
        for (other, continuation) in others { continuation.resume(returning: results(other)) }
        // Hand the next statement to the first run that came meanwhile.
        let next = dispatchBatch.withLock { batch -> CheckedContinuation<DispatchRecord?, Never>? in
            guard !batch.waiting.isEmpty else {
                batch.inFlight = false
                return nil
            }
            return batch.waiting.removeFirst().1
        }
        next?.resume(returning: nil)
        return results(run)
    }

    /// One statement marking `runs` dispatched; the answer for each.
    private func markDispatched(_ runs: [RunID]) async -> @Sendable (RunID) -> DispatchRecord {
        let incarnation = self.incarnation
        do {
            let held = try await database.within(lease / 2, "marking runs dispatched") { [self] in
            var recorded = Set<String>()
            for try await id in try await database.client.query("""
                UPDATE jobrunner.runs SET dispatched_at = \(WallClock.now().microseconds)
                WHERE id = ANY(\(runs.map(\.rawValue))::text[]) AND node = \(nodeName) AND ended_at IS NULL
                  AND EXISTS (SELECT 1 FROM jobrunner.nodes WHERE name = \(nodeName) AND incarnation = \(incarnation) AND state = 'alive')
                  -- A first attempt of a claimed occurrence starts only where its claim is now
                  -- (a survivor that took the claim over, or a node the claim was given back to,
                  -- runs it instead).
                  AND NOT EXISTS (SELECT 1 FROM jobrunner.occurrences o
                                  WHERE o.job = runs.job AND o.occurrence = runs.scheduled_at AND o.node <> \(nodeName)
                                    AND runs.attempt = 1 AND runs.trigger <> 'manual')
                RETURNING id
                """, logger: logger).decode(String.self)
            {
                recorded.insert(id)
            }
            return recorded
            }
            return { held.contains($0.rawValue) ? .recorded : .notHeld }
        } catch {
            let reason = ClusterDatabase.describe(error)
            return { _ in .failed(reason) }
        }
    }

    public func release(_ claims: [ClaimRequest]) async {
        guard !claims.isEmpty else { return }
        do {
            try await database.within(lease / 2, "giving back occurrences") { [database, nodeName, logger] () async throws -> Void in
                // Not one whose first attempt was marked dispatched (a mark given up on may
                // have landed): that one is a survivor's to settle as interrupted, not to re-run.
                try await database.client.query("""
                    UPDATE jobrunner.occurrences o SET node = '', claimed_at = now()
                    FROM unnest(\(claims.map(\.job))::text[], \(claims.map(\.occurrence.microseconds))::int8[]) AS t(job, occurrence)
                    WHERE o.job = t.job AND o.occurrence = t.occurrence AND o.node = \(nodeName)
                      AND NOT EXISTS (SELECT 1 FROM jobrunner.runs r WHERE r.job = o.job AND r.scheduled_at = o.occurrence
                                      AND r.attempt = 1 AND (r.dispatched_at IS NOT NULL OR r.started_at IS NOT NULL))
                    """, logger: logger)
            }
            logger.notice("gave back occurrences this node will not run", metadata: ["occurrences": .number(claims.count)])
        } catch {
            logger.warning("could not give back claimed occurrences; a survivor runs them once this node's lease ends",
                           metadata: ["error": "\(ClusterDatabase.describe(error))"])
        }
    }

    // MARK: - Control across nodes

    /// Asks `node` to cancel a run it holds.
    public func requestCancel(run id: String, on node: String) async throws {
        guard let run = RunID(validating: id) else { throw ClusterError("'\(id)' is not a run id") }
        try await send(.cancel(node: node, run: run))
    }

    /// Asks `node` to run a job now, with the run id given here (so the caller can follow it).
    public func requestRun(job: String, on node: String, id: RunID) async throws {
        try await send(.run(node: node, job: job, run: id))
    }

    /// Tells every other node that a job was paused or resumed here.
    public func announcePause(job: String, paused: Bool) async {
        do {
            try await send(.pause(job: job, paused: paused, from: nodeName))
        } catch {
            logger.warning("could not tell the other nodes about a pause", metadata: ["error": "\(ClusterDatabase.describe(error))"])
        }
    }

    /// Writes a command row and wakes the listeners (the notification carries nothing).
    func send(_ command: ClusterCommand) async throws {
        try await database.transaction(within: lease / 2, "sending a command") { [self] connection in
            try await connection.query("INSERT INTO jobrunner.commands (fields, sender) VALUES (\(command.fields), \(nodeName))", logger: logger)
            try await connection.query("SELECT pg_notify(\(Self.channel), '')", logger: logger)
        }
    }

    /// Reads the commands written since the last read, in order, and carries out those meant
    /// for this node. Rows that are not commands this daemon writes are logged and ignored.
    func pollCommands() async {
        let go = state.withLock { state -> Bool in
            if state.polling { state.pollAgain = true; return false }
            state.polling = true
            return true
        }
        guard go else { return }
        repeat {
            state.withLock { $0.pollAgain = false }
            let last = state.withLock { $0.lastCommand }
            do {
                // Ids are taken in order but may commit out of order: look back a little.
                let commands = try await database.within(lease / 2, "reading commands") { [database, logger] in
                    var commands: [(Int64, [String])] = []
                    for try await row in try await database.client.query("""
                        SELECT id, fields FROM jobrunner.commands WHERE id > \(last - 64) ORDER BY id LIMIT 1000
                        """, logger: logger).decode((Int64, [String]).self)
                    {
                        commands.append(row)
                    }
                    return commands
                }
                for (id, fields) in commands {
                    let fresh = state.withLock { state -> Bool in
                        guard id > state.commandFloor, state.seenCommands.insert(id).inserted, id > state.lastCommand - 64 else { return false }
                        state.lastCommand = max(state.lastCommand, id)
                        if state.seenCommands.count > 4096 {
                            let floor = state.lastCommand - 64
                            state.seenCommands = state.seenCommands.filter { $0 > floor }
                        }
                        return true
                    }
                    guard fresh else { continue }
                    if let command = ClusterCommand(fields: fields) {
                        await handle(command)
                    } else {
                        logger.warning("ignored a cluster command this daemon would not write", metadata: [
                            "id": "\(id)", "fields": "\(fields.prefix(6).map { String($0.prefix(80)) })",
                        ])
                    }
                }
            } catch {
                logger.warning("cannot read cluster commands", metadata: ["error": "\(ClusterDatabase.describe(error))"])
            }
        } while state.withLock { state -> Bool in
            if state.pollAgain { return true }
            state.polling = false
            return false
        }
    }

    private func handle(_ command: ClusterCommand) async {
        guard let scheduler else { return }
        switch command {
        case .cancel(let node, let run) where node == nodeName:
            let result = await scheduler.cancel(run: run)
            logger.notice("cancel requested by another node", metadata: ["run_id": "\(run)", "result": "\(result)"])
        case .run(let node, let job, let id) where node == nodeName:
            let record = await scheduler.runNow(job: job, id: id)
            logger.notice("run requested by another node", metadata: ["job": "\(job)", "run_id": "\(record?.id.rawValue ?? "-")"])
        case .pause(let job, let paused, let from) where from != nodeName:
            await scheduler.applyRemotePause(job: job, paused)
        default:
            break
        }
    }

    // MARK: - Nodes

    /// Every node the cluster knows, by name.
    public func nodes() async throws -> [Node] {
        try await Self.nodes(in: database)
    }

    static func nodes(in database: ClusterDatabase) async throws -> [Node] {
        let logger = database.logger
        let rows = try await database.client.query("""
            SELECT name, state, incarnation, pid, version, config_hash, running, (extract(epoch FROM started_at) * 1000000)::int8,
                   (extract(epoch FROM heartbeat_at) * 1000000)::int8, extract(epoch FROM now() - heartbeat_at)::float8
            FROM jobrunner.nodes ORDER BY name
            """, logger: logger)
        var result: [Node] = []
        for try await row in rows.decode((String, String, Int64, Int64, String, String, Int64, Int64, Int64, Double).self) {
            result.append(Node(name: row.0, state: row.1, incarnation: row.2, pid: row.3, version: row.4, configHash: row.5,
                               running: Int(row.6), startedAt: Timestamp(microseconds: row.7),
                               heartbeatAt: Timestamp(microseconds: row.8), heartbeatAge: row.9))
        }
        return result
    }

    // MARK: - Service

    public func run() async {
        await withDiscardingTaskGroup { group in
            group.addTask { await self.listen() }
            await withGracefulShutdownHandler {
                await self.keepAlive()
            } onGracefulShutdown: {}
            group.cancelAll()
        }
        await leave()
    }

    /// Heartbeats and sweeps every lease/4 until shutdown.
    private func keepAlive() async {
        let interval = lease / 4
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            try? await Pause.sleep(for: interval)
            guard !Task.isShuttingDownGracefully && !Task.isCancelled else { break }
            await beat()
        }
    }

    private func beat() async {
        let (member, incarnation, hash) = state.withLock { ($0.member, $0.incarnation, $0.configHash) }
        guard member else {
            await rejoin()
            return
        }
        let running = await scheduler?.liveRunCount ?? 0
        // The lease runs from when the heartbeat was sent (the database's `heartbeat_at` is
        // then or later), not from when its answer came back.
        let sent = ContinuousClock.now
        do {
            let renewed = try await database.within(lease / 2, "heartbeat") { [database, nodeName, logger] in
                var found = false
                for try await _ in try await database.client.query("""
                    UPDATE jobrunner.nodes SET heartbeat_at = now(), config_hash = \(hash), running = \(Int64(running))
                    WHERE name = \(nodeName) AND incarnation = \(incarnation) AND state = 'alive' RETURNING 1
                    """, logger: logger).decode(Int32.self)
                {
                    found = true
                }
                return found
            }
            guard renewed else {
                await loseLease("another node declared this node dead (it was silent for longer than its lease)")
                return
            }
            state.withLock { $0.lastBeat = max($0.lastBeat, sent) }
            try? await refreshLiveNodes()
            await pollCommands()
            let inherited = state.withLock { state -> [OrphanedRun] in
                defer { state.inherited = [] }
                return state.inherited
            }
            if !inherited.isEmpty, let scheduler {
                logger.warning("settling what this node's previous incarnation left unfinished", metadata: ["runs": .number(inherited.count)])
                _ = await scheduler.takeOver(inherited)
            }
            // A draining node takes nothing over (what it would take, it would only give back).
            let engineRunning = await scheduler?.isRunning ?? false
            let canSweep = state.withLock { state -> Bool in
                if state.connectedSince == nil { state.connectedSince = .now }
                return ContinuousClock.now - state.connectedSince! >= lease
            }
            if canSweep && engineRunning { await sweep() }
        } catch {
            let (silentFor, wasConnected) = state.withLock { state -> (Duration, Bool) in
                defer { state.connectedSince = nil }
                return (ContinuousClock.now - state.lastBeat, state.connectedSince != nil)
            }
            if wasConnected {
                logger.error("cluster heartbeat failed", metadata: ["error": "\(ClusterDatabase.describe(error))"])
            }
            if silentFor > lease {
                await loseLease("no heartbeat reached the database for \(DurationText.format(silentFor)) (lease \(DurationText.format(lease)))")
            }
        }
    }

    /// Stops everything this node holds (others take it over) and rejoins as a new incarnation.
    private func loseLease(_ reason: String) async {
        let wasMember = state.withLock { state -> Bool in
            defer { state.member = false }
            return state.member
        }
        if wasMember {
            logger.error("cluster lease lost: \(reason); stopping this node's runs and rejoining")
            await scheduler?.standDown(reason: "cluster lease lost")
        }
        await rejoin()
    }

    private func rejoin() async {
        do {
            try await database.within(lease, "rejoining the cluster") { try await self.join() }
        } catch {
            logger.error("cannot rejoin the cluster yet", metadata: ["error": "\(ClusterDatabase.describe(error))"])
        }
    }

    /// Declares nodes silent for their lease dead, marks their unfinished runs `interrupted`
    /// and takes them over here.
    private func sweep() async {
        do {
            let now = WallClock.now().microseconds
            let orphans = try await database.transaction(within: lease / 2, "sweeping") { [self] connection -> [OrphanedRun] in
                // A node frozen inside a transaction of its own (SIGSTOP, a stalled VM) holds its
                // row locks until it runs again: this sweep gives up on them after a quarter of
                // the lease, and is tried again at the next beat, rather than holding back this
                // node's heartbeats.
                try await connection.query("""
                    SELECT set_config('lock_timeout', \("\(max(100, (lease / 4).wholeMicroseconds / 1000))ms"), true)
                    """, logger: logger)
                // No lock shared with other nodes here (a node frozen inside a transaction would
                // hold it): a restart's join and this sweep meet on the node's row, whose lock
                // orders them — a node that rejoined is no longer silent, one declared dead first
                // finds its work taken.
                var dead: [String] = []
                for try await name in try await connection.query("""
                    UPDATE jobrunner.nodes SET state = 'dead'
                    WHERE state = 'alive' AND name <> \(nodeName) AND heartbeat_at < now() - make_interval(secs => lease_ms / 1000.0)
                    RETURNING name
                    """, logger: logger).decode(String.self)
                {
                    dead.append(name)
                }
                var gone: [String] = []
                for try await name in try await connection.query("""
                    SELECT name FROM jobrunner.nodes WHERE state <> 'alive' AND name <> \(nodeName)
                    """, logger: logger).decode(String.self)
                {
                    gone.append(name)
                }
                var orphans = try await Self.unfinishedWork(runsOf: gone, claimsOf: dead, taker: nodeName, on: connection,
                                                            end: (now, "declared dead (silent for its lease)"), lease: lease, logger: logger)
                try await connection.query("""
                    DELETE FROM jobrunner.pool_slots WHERE node IN (SELECT name FROM jobrunner.nodes WHERE state <> 'alive')
                    """, logger: logger)
                try await connection.query("""
                    DELETE FROM jobrunner.pool_waiters WHERE node IN (SELECT name FROM jobrunner.nodes WHERE state <> 'alive')
                    """, logger: logger)
                // Occurrences a draining node gave back: the first node to see them runs them.
                let released = try await connection.query("""
                    UPDATE jobrunner.occurrences SET node = \(nodeName), claimed_at = now() WHERE node = ''
                    RETURNING job, occurrence
                    """, logger: logger)
                for try await (job, occurrence) in released.decode((String, Int64).self) {
                    orphans.append(Self.unrecordedClaim(job: job, occurrence: occurrence, node: "a draining node"))
                }
                try await connection.query("DELETE FROM jobrunner.commands WHERE created_at < now() - interval '1 hour'", logger: logger)
                return orphans
            }
            guard !orphans.isEmpty else { return }
            noteTakenOver(orphans)
            let nodes = Set(orphans.map(\.node)).sorted().joined(separator: ",")
            logger.warning("took over the unfinished runs of dead nodes", metadata: [
                "dead_nodes": "\(nodes)", "runs": .number(orphans.count),
            ])
            await scheduler?.takeOver(orphans)
        } catch {
            logger.warning("cluster sweep failed", metadata: ["error": "\(ClusterDatabase.describe(error))"])
        }
    }

    static func key(_ job: String, _ occurrence: Int64) -> String { "\(job)|\(occurrence)" }

    /// Remembers the occurrences of unstarted first attempts handed to this node (bounded: a
    /// claim asked again is answered within a lease, long before the set is cleared).
    private func noteTakenOver(_ orphans: [OrphanedRun]) {
        let keys = orphans.filter { !$0.started && $0.attempt == 1 }.map { Self.key($0.job, $0.scheduledTime.microseconds) }
        guard !keys.isEmpty else { return }
        state.withLock { state in
            if state.takenOver.count > 4096 { state.takenOver.removeAll() }
            state.takenOver.formUnion(keys)
        }
    }

    /// The unfinished runs of `runsOf` (ended as `interrupted` when `end` is given), and the
    /// occurrences `claimsOf` claimed in the last three leases without recording a run (moved
    /// to `taker`). A run whose process may have started (started, or dispatched) is retried
    /// per its job's policy by the taker; one that never was runs there, as does a claim.
    static func unfinishedWork(runsOf: [String], claimsOf: [String], taker: String, on connection: PostgresConnection,
                               end: (at: Int64, reason: String)?, lease: Duration, logger: Logger) async throws -> [OrphanedRun] {
        var orphans: [OrphanedRun] = []
        if !runsOf.isEmpty {
            let rows: PostgresRowSequence
            if let end {
                rows = try await connection.query("""
                    UPDATE jobrunner.runs r SET ended_at = \(end.at), outcome = 'interrupted', detail = 'node ' || r.node || ' ' || \(end.reason)
                    WHERE r.ended_at IS NULL AND r.node = ANY(\(runsOf)::text[])
                    RETURNING r.id, r.job, r.node, r.trigger, r.scheduled_at, r.attempt, r.fire_id,
                              r.started_at IS NOT NULL OR r.dispatched_at IS NOT NULL, r.triggered_by
                    """, logger: logger)
            } else {
                rows = try await connection.query("""
                    SELECT r.id, r.job, r.node, r.trigger, r.scheduled_at, r.attempt, r.fire_id,
                           r.started_at IS NOT NULL OR r.dispatched_at IS NOT NULL, r.triggered_by
                    FROM jobrunner.runs r WHERE r.ended_at IS NULL AND r.node = ANY(\(runsOf)::text[])
                    """, logger: logger)
            }
            for try await row in rows.decode((String, String, String, String, Int64, Int64, String, Bool, String?).self) {
                orphans.append(OrphanedRun(id: RunID(rawValue: row.0), job: row.1, node: row.2,
                                           trigger: RunTrigger(rawValue: row.3) ?? .schedule,
                                           scheduledTime: Timestamp(microseconds: row.4), attempt: Int(row.5),
                                           fireID: RunID(rawValue: row.6), started: row.7, triggeredBy: row.8))
            }
            // A first attempt that never started runs again only where its claim moves to (or
            // stays with) the taker: a claim given back or taken meanwhile belongs to another
            // node, which runs it.
            let refire = orphans.filter { !$0.started && $0.attempt == 1 && $0.trigger != .manual }
            if !refire.isEmpty {
                var moved = Set<String>()
                for try await (job, occurrence) in try await connection.query("""
                    UPDATE jobrunner.occurrences o SET node = \(taker)
                    FROM unnest(\(refire.map(\.job))::text[], \(refire.map(\.scheduledTime.microseconds))::int8[], \(refire.map(\.node))::text[])
                        AS t(job, occurrence, node)
                    WHERE o.job = t.job AND o.occurrence = t.occurrence AND o.node = t.node
                    RETURNING o.job, o.occurrence
                    """, logger: logger).decode((String, Int64).self)
                {
                    moved.insert(key(job, occurrence))
                }
                orphans.removeAll { orphan in
                    !orphan.started && orphan.attempt == 1 && orphan.trigger != .manual
                        && !moved.contains(key(orphan.job, orphan.scheduledTime.microseconds))
                }
            }
        }
        guard !claimsOf.isEmpty else { return orphans }
        let claims = try await connection.query("""
            UPDATE jobrunner.occurrences o SET node = \(taker)
            WHERE o.node = ANY(\(claimsOf)::text[]) AND o.claimed_at > now() - make_interval(secs => \(lease.secondsValue * 3))
              AND NOT EXISTS (SELECT 1 FROM jobrunner.runs r WHERE r.job = o.job AND r.scheduled_at = o.occurrence)
            RETURNING o.job, o.occurrence
            """, logger: logger)
        for try await (job, occurrence) in claims.decode((String, Int64).self) {
            orphans.append(unrecordedClaim(job: job, occurrence: occurrence, node: claimsOf.joined(separator: ",")))
        }
        return orphans
    }

    /// A claimed occurrence no run was recorded for: it never started anywhere.
    static func unrecordedClaim(job: String, occurrence: Int64, node: String) -> OrphanedRun {
        let id = RunID(rawValue: "claim-\(job)-\(occurrence)")
        return OrphanedRun(id: id, job: job, node: node, trigger: .schedule, scheduledTime: Timestamp(microseconds: occurrence),
                           attempt: 1, fireID: id, started: false)
    }

    /// Receives control messages; reconnects when the connection drops.
    private func listen() async {
        var failures = 0
        while !Task.isCancelled {
            do {
                try await database.client.withConnection { connection in
                    try await connection.listen(on: Self.channel) { notifications in
                        failures = 0
                        await self.pollCommands()
                        for try await _ in notifications {
                            await self.pollCommands()
                        }
                    }
                }
            } catch {
                if Task.isCancelled { return }
                failures += 1
                if failures == 1 {
                    logger.warning("cluster notifications interrupted; reconnecting", metadata: ["error": "\(ClusterDatabase.describe(error))"])
                }
            }
            try? await Pause.sleep(for: .milliseconds(min(2000, 200 * max(1, failures))))
        }
    }
}
