import Foundation
import JobRunnerAPI
import TestSupport
import Testing

/// Several daemons sharing one schedule through a real PostgreSQL (a private server per test):
/// exactly once per occurrence, takeover of a dead node's runs, a frozen node standing down,
/// control across nodes, and a database restart under running nodes.
@Suite(.serialized, .timeLimit(.minutes(5))) struct ClusterTests {
    static let lease = 4

    static func config(_ server: PostgresServer, jobs: String, lease: Int = Self.lease) -> String {
        """
        daemon:
          shutdown_grace: 5s
          cluster:
            database: "\(server.url)"
            lease: \(lease)s
        jobs:
        \(jobs)
        """
    }

    /// Starts one daemon per name on the same configuration file text.
    static func startNodes(_ names: [String], config: String) async throws -> [String: DaemonHarness] {
        var nodes: [String: DaemonHarness] = [:]
        for name in names {
            nodes[name] = try DaemonHarness(config: config, arguments: ["--node-name", name], logLevel: "info")
        }
        for node in nodes.values { try await node.waitUntilReady() }
        return nodes
    }

    /// Starts one daemon per name, runs `body`, and stops them all, also when `body` throws;
    /// returns what `body` returns, for checks on the history once every node has stopped.
    @discardableResult
    static func withNodes<T>(_ names: [String], config: String, _ body: ([String: DaemonHarness]) async throws -> T) async throws -> T {
        let nodes = try await startNodes(names, config: config)
        do {
            let result = try await body(nodes)
            await stopAll(nodes)
            return result
        } catch {
            await stopAll(nodes)
            throw error
        }
    }

    static func stopAll(_ nodes: [String: DaemonHarness]) async {
        for node in nodes.values where node.isRunning { node.signal(SIGTERM) }
        for node in nodes.values { _ = try? await node.waitForExit(within: .seconds(20)) }
        for node in nodes.values { node.cleanUp() }
    }

    /// Polls the database (once a second, within `timeout`) until `condition` holds for a
    /// query's rows.
    @discardableResult
    static func waitForRows(_ server: PostgresServer, _ sql: String, within timeout: Duration = .seconds(30), _ what: String,
                            until condition: ([[String]]) -> Bool) async throws -> [[String]] {
        let deadline = ContinuousClock.now + timeout
        while true {
            let rows = try await server.query(sql)
            if condition(rows) { return rows }
            guard ContinuousClock.now < deadline else { throw TimeoutError("timed out waiting for \(what); last rows: \(rows.prefix(10))") }
            try await Task.sleep(for: .milliseconds(250))
        }
    }

    static func nowMicros() -> Int64 { Int64(Date().timeIntervalSince1970 * 1_000_000) }

    /// The history's rows, for reconciling the ledger with them.
    static func historyRows(_ server: PostgresServer) async throws -> [(id: String, job: String, scheduledMicros: Int64, outcome: String)] {
        try await server.query("SELECT id, job, scheduled_at, COALESCE(outcome, '') FROM jobrunner.runs").map {
            (id: $0[0], job: $0[1], scheduledMicros: Int64($0[2])!, outcome: $0[3])
        }
    }

    /// Counted in the lines the jobs wrote: every occurrence (one a second) of `jobs` between
    /// `from` and `to` ran exactly once across all nodes, except where `excused`; and the ledger
    /// and the history agree.
    static func expectEverySecondOnce(_ ledger: Ledger, _ server: PostgresServer, jobs: [String], from: Int64, to: Int64,
                                      excused: [String: Set<Int64>] = [:]) async throws {
        let audit = ledger.audit(jobs: jobs, seconds: from...to, excused: excused)
        #expect(audit.missingCount == 0, "occurrences never run: \(audit)")
        #expect(audit.doubledCount == 0, "occurrences run more than once: \(audit)")
        let problems = ledger.reconcile(with: try await historyRows(server), jobs: Set(jobs))
        #expect(problems.isEmpty, "\(problems.prefix(5))")
    }

    /// A job that writes a ledger line every second (`every: 1s` is aligned to whole seconds
    /// in a cluster).
    static func tick(_ name: String, _ ledger: Ledger, extra: String = "") -> String {
        "  \(name): { shell: \"\(ledger.append)\", every: 1s\(extra) }"
    }

    @Test func threeNodesRunEveryOccurrenceExactlyOnce() async throws {
        try await withPostgresServer { server in
            let ledger = Ledger(path: server.directory + "/ledger")
            let names = (1...20).map { "job\($0)" }
            // overlap: allow, so that a run slowed past a second on this shared machine is not
            // recorded as skipped: every occurrence must run exactly once.
            let jobs = names.map { Self.tick($0, ledger, extra: ", overlap: allow") }.joined(separator: "\n")
            let start = Self.nowMicros() / 1_000_000 + 2
            let end = start + 60
            try await Self.withNodes(["n1", "n2", "n3"], config: Self.config(server, jobs: jobs)) { _ in
                try await poll("lines beyond the 60 s window", within: .seconds(90), every: .milliseconds(250)) {
                    ledger.lines().filter { $0.scheduledSecond > end + 1 }.count >= 20
                }
            }
            try await Self.expectEverySecondOnce(ledger, server, jobs: names, from: start, to: end)
            let perNode = Dictionary(grouping: ledger.lines(), by: \.node).mapValues(\.count)
            #expect(perNode.count == 3, "runs went to fewer than three nodes: \(perNode)")
            let failed = try await server.query("SELECT job, scheduled_at, node, outcome, detail FROM jobrunner.runs WHERE outcome <> 'succeeded'")
            #expect(failed.isEmpty, "\(failed)")
            let states = try await server.query("SELECT name, state FROM jobrunner.nodes ORDER BY 1")
            #expect(states.map { $0[1] } == ["left", "left", "left"], "a clean stop leaves the cluster: \(states)")
        }
    }

    @Test func killedNodeRunsAreInterruptedAndRetriedElsewhere() async throws {
        try await withPostgresServer { server in
            let ledger = Ledger(path: server.directory + "/ledger")
            let jobs = """
                \(Self.tick("tick", ledger))
                  long:
                    shell: "\(ledger.append); exec sleep 60"
                    retry: { attempts: 2, backoff: 0s }
                """
            let (from, to, killedAt) = try await Self.withNodes(["a", "b", "c"], config: Self.config(server, jobs: jobs)) { nodes in
                let from = Self.nowMicros() / 1_000_000 + 2
                // A run on b, asked through a.
                let asked = try await ControlClient(socketPath: nodes["a"]!.socketPath)
                    .request(.post, "/v1/jobs/long/run?node=b").decode(RunInfo.self)
                #expect(asked.node == "b")
                try await nodes["b"]!.waitForLog("run started", "job=long", "run_id=\(asked.id)")
                try await Self.waitForRows(server, "SELECT started_at FROM jobrunner.runs WHERE id = '\(asked.id)'", "the run recorded as started") {
                    !($0.first?.first ?? "").isEmpty
                }
                // The node dies as a machine does: the daemon and every process it started.
                let victim = nodes["b"]!
                victim.signal(SIGKILL)
                _ = try await victim.waitForExit()
                let killedAt = Self.nowMicros() / 1_000_000
                for process in ProcessTable.carrying("JOBRUNNER_NODE", "b") { kill(process.pid, SIGKILL) }
                try await ProcessTable.waitUntilNone("node b's processes", within: .seconds(5)) { ProcessTable.carrying("JOBRUNNER_NODE", "b") }
                let rows = try await Self.waitForRows(
                    server, "SELECT outcome, detail FROM jobrunner.runs WHERE id = '\(asked.id)'",
                    within: .seconds(Self.lease + 5), "the killed node's run marked interrupted") { $0.first?.first == "interrupted" }
                #expect(rows.first?[1].contains("node b declared dead") == true)
                let retried = try await Self.waitForRows(
                    server, "SELECT node, attempt, id FROM jobrunner.runs WHERE fire_id = '\(asked.id)' AND attempt = 2 AND started_at IS NOT NULL",
                    within: .seconds(10), "the retry started on a live node") { !$0.isEmpty }
                #expect(["a", "c"].contains(retried[0][0]), "retried on \(retried)")
                // The retry is the fire's only process now, and it wrote its own line.
                try await poll("the retry's line") { ledger.lines().contains { $0.runID == retried[0][2] } }
                let alive = ProcessTable.carrying("JOBRUNNER_JOB", "long").filter {
                    ["a", "b", "c"].contains(ProcessTable.environment(of: $0.pid)?["JOBRUNNER_NODE"] ?? "")
                }
                #expect(Set(alive.compactMap { ProcessTable.environment(of: $0.pid)?["JOBRUNNER_RUN_ID"] }) == [retried[0][2]], "\(alive)")
                // Let the schedule run on a while after the takeover, then check every tick.
                let to = Self.nowMicros() / 1_000_000 + 3
                try await poll("ticks after the takeover", within: .seconds(20), every: .milliseconds(250)) {
                    ledger.lines().contains { $0.job == "tick" && $0.scheduledSecond > to }
                }
                return (from, to, killedAt)
            }
            // Ticks b had claimed and not yet run when it died are excused only if the history
            // says they were interrupted; a tick b was running when it died may be missing.
            let interrupted = try await server.query("""
                SELECT scheduled_at / 1000000 FROM jobrunner.runs WHERE job = 'tick' AND outcome = 'interrupted'
                """).compactMap { Int64($0[0]) }
            #expect(interrupted.allSatisfy { abs($0 - killedAt) <= 2 }, "interrupted ticks far from the kill: \(interrupted)")
            try await Self.expectEverySecondOnce(ledger, server, jobs: ["tick"], from: from, to: to, excused: ["tick": Set(interrupted)])
            // The fire of `long` ran as two attempts, each once.
            let longLines = ledger.lines().filter { $0.job == "long" }
            #expect(longLines.count == 2 && Set(longLines.map(\.runID)).count == 2, "\(longLines)")
        }
    }

    /// systemd's `Restart=on-failure` brings a killed node back well within its lease: no
    /// survivor ever declares the old incarnation dead, so the node settles its own work.
    @Test func aNodeRestartedWithinItsLeaseLosesNothing() async throws {
        try await withPostgresServer { server in
            let ledger = Ledger(path: server.directory + "/ledger")
            let names = (1...6).map { "job\($0)" }
            let jobs = names.map { Self.tick($0, ledger, extra: ", overlap: allow") }.joined(separator: "\n")
            let config = Self.config(server, jobs: jobs, lease: 15)
            var nodes = try await Self.startNodes(["a", "b"], config: config)
            do {
                let from = Self.nowMicros() / 1_000_000 + 2
                try await poll("b runs ticks", within: .seconds(20), every: .milliseconds(100)) {
                    ledger.lines().filter { $0.node == "b" && $0.scheduledSecond >= from }.count >= 6
                }
                // Just after a second's occurrences came due: claims and fires in flight.
                let micros = Self.nowMicros() % 1_000_000
                try await Task.sleep(for: .microseconds(1_000_000 - micros + 3_000))
                let victim = nodes["b"]!
                victim.signal(SIGKILL)
                _ = try await victim.waitForExit()
                for process in ProcessTable.carrying("JOBRUNNER_NODE", "b") { kill(process.pid, SIGKILL) }
                victim.cleanUp(keepDirectory: true)
                // RestartSec=2s.
                try await Task.sleep(for: .seconds(2))
                let again = try DaemonHarness(config: config, in: victim.directory, arguments: ["--node-name", "b"], logLevel: "info")
                nodes["b"] = again
                try await again.waitUntilReady()
                let to = Self.nowMicros() / 1_000_000 + 6
                try await poll("ticks after the restart", within: .seconds(30), every: .milliseconds(250)) {
                    ledger.lines().filter { $0.scheduledSecond > to }.count >= names.count
                }
                await Self.stopAll(nodes)
                // Excused: runs that may have started when b died. One interrupted before its
                // process was dispatched must have run again.
                let interrupted = try await server.query("""
                    SELECT job, scheduled_at / 1000000 FROM jobrunner.runs
                    WHERE outcome = 'interrupted' AND (dispatched_at IS NOT NULL OR started_at IS NOT NULL)
                    """)
                var excused: [String: Set<Int64>] = [:]
                for row in interrupted { excused[row[0], default: []].insert(Int64(row[1]) ?? 0) }
                try await Self.expectEverySecondOnce(ledger, server, jobs: names, from: from, to: to, excused: excused)
            } catch {
                await Self.stopAll(nodes)
                throw error
            }
        }
    }

    /// Any role that may connect may NOTIFY any channel: the payload carries no authority, and a
    /// command row the daemon would not write is ignored.
    @Test func commandsCannotBeForged() async throws {
        try await withPostgresServer { server in
            let ledger = Ledger(path: server.directory + "/ledger")
            let jobs = "  probe: { shell: \"\(ledger.append)\" }"
            try await Self.withNodes(["a", "b"], config: Self.config(server, jobs: jobs)) { nodes in
                _ = try await server.query("CREATE ROLE intruder LOGIN")
                let id = "01kb3n7f4xk0q9v8w6r5t2y1zc"
                for payload in ["run\ta\tprobe\t\(id)", "run\ta\tprobe\t../../../etc", "pause\tprobe\t1\tx", "cancel\ta\t\(id)"] {
                    _ = try await server.query("SELECT pg_notify('jobrunner', E'\(payload.replacingOccurrences(of: "\t", with: "\\t"))')", as: "intruder")
                }
                // The intruder cannot write a command.
                await #expect(throws: (any Error).self) {
                    _ = try await server.query("INSERT INTO jobrunner.commands (fields, sender) VALUES (ARRAY['run','a','probe','\(id)'], 'x')",
                                               as: "intruder")
                }
                // A row the daemon would not write (a path for a run id) is refused when read.
                _ = try await server.query("""
                    INSERT INTO jobrunner.commands (fields, sender) VALUES (ARRAY['run','a','probe','../../../etc'], 'x');
                    SELECT pg_notify('jobrunner', '')
                    """)
                try await nodes["a"]!.waitForLog("ignored a cluster command")
                // A real request, through b, is carried out: everything sent before it was read.
                let asked = try await ControlClient(socketPath: nodes["b"]!.socketPath)
                    .request(.post, "/v1/jobs/probe/run?node=a").decode(RunInfo.self)
                try await poll("the real request's line") { ledger.lines().contains { $0.runID == asked.id } }
                let runs = try await server.query("SELECT id FROM jobrunner.runs WHERE job = 'probe'")
                #expect(runs.map { $0[0] } == [asked.id], "only the real request ran: \(runs)")
                let paused = try await server.query("SELECT paused FROM jobrunner.jobs WHERE name = 'probe'")
                #expect(paused.allSatisfy { $0[0] == "f" }, "\(paused)")
                for node in nodes.values {
                    let runtime = node.directory.file("run")
                    let entries = (try? FileManager.default.contentsOfDirectory(atPath: runtime + "/runs")) ?? []
                    #expect(!entries.contains { $0.contains("..") || $0 == "etc" }, "\(entries)")
                    #expect(!FileManager.default.fileExists(atPath: node.directory.path + "/etc"))
                }
            }
        }
    }

    @Test func frozenNodeStandsDownWithoutDuplicates() async throws {
        try await withPostgresServer { server in
            let ledger = Ledger(path: server.directory + "/ledger")
            let jobs = """
                \(Self.tick("tick", ledger))
                  long: { shell: "exec sleep 60" }
                """
            let (from, to) = try await Self.withNodes(["a", "b"], config: Self.config(server, jobs: jobs)) { nodes in
                let from = Self.nowMicros() / 1_000_000 + 2
                let frozen = nodes["b"]!
                let client = ControlClient(socketPath: frozen.socketPath)
                let run = try await client.request(.post, "/v1/jobs/long/run").decode(RunInfo.self)
                let started = try await frozen.waitForLog("run started", "run_id=\(run.id)")
                let pid = try #require(DaemonHarness.field("pid", in: started).flatMap(Int32.init))
                frozen.signal(SIGSTOP)
                try await nodes["a"]!.waitForLog("took over the unfinished runs of dead nodes", "dead_nodes=b", within: .seconds(Self.lease * 5))
                frozen.signal(SIGCONT)
                try await frozen.waitForLog("cluster lease lost", within: .seconds(Self.lease * 2))
                try await frozen.waitForLog("joined the cluster", "incarnation=2", within: .seconds(Self.lease * 2))
                // Its run was stopped with its kill sequence, and stays recorded as interrupted.
                try await ProcessTable.waitUntilNone("the frozen node's run", within: .seconds(10)) {
                    ProcessTable.leftovers(ofRun: run.id, session: pid)
                }
                let outcome = try await server.query("SELECT outcome FROM jobrunner.runs WHERE id = '\(run.id)'")
                #expect(outcome.first?.first == "interrupted")
                let to = Self.nowMicros() / 1_000_000 + 2
                try await poll("b running ticks again after rejoining", within: .seconds(30), every: .milliseconds(250)) {
                    ledger.lines().contains { $0.node == "b" && $0.scheduledSecond > to }
                }
                return (from, to)
            }
            let interrupted = try await server.query("""
                SELECT scheduled_at / 1000000 FROM jobrunner.runs WHERE job = 'tick' AND outcome = 'interrupted'
                """).compactMap { Int64($0[0]) }
            try await Self.expectEverySecondOnce(ledger, server, jobs: ["tick"], from: from, to: to, excused: ["tick": Set(interrupted)])
        }
    }

    @Test func cancelReachesTheNodeRunningTheRun() async throws {
        try await withPostgresServer { server in
            let jobs = """
                  long: { shell: "exec sleep 60", kill_grace: 2s }
                """
            try await Self.withNodes(["a", "b"], config: Self.config(server, jobs: jobs)) { nodes in
                let a = ControlClient(socketPath: nodes["a"]!.socketPath)
                let run = try await a.request(.post, "/v1/jobs/long/run?node=b").decode(RunInfo.self)
                try await nodes["b"]!.waitForLog("run started", "run_id=\(run.id)")
                try await Self.waitForRows(server, "SELECT started_at FROM jobrunner.runs WHERE id = '\(run.id)'", "the run recorded as started") {
                    !($0.first?.first ?? "").isEmpty
                }
                // Runs of every node are listed by any node.
                let listed = try await a.get("/v1/runs?job=long", as: RunsResponse.self)
                #expect(listed.runs.first { $0.id == run.id }?.node == "b")
                let asked = ContinuousClock.now
                let cancel = try await a.request(.post, "/v1/runs/\(run.id)/cancel").decode(CancelResponse.self)
                #expect(cancel.result == "requested")
                try await nodes["b"]!.waitForLog("run finished", "outcome=cancelled", "run_id=\(run.id)", within: .seconds(5))
                #expect(ContinuousClock.now - asked < .seconds(3), "cancel took \(ContinuousClock.now - asked)")
                try await Self.waitForRows(server, "SELECT outcome FROM jobrunner.runs WHERE id = '\(run.id)'", "the cancel recorded") {
                    $0.first?.first == "cancelled"
                }
                // A node that does not exist is refused.
                let refused = try await a.request(.post, "/v1/jobs/long/run?node=nowhere")
                #expect(refused.status == 404)
                // Status lists both nodes with their heartbeat and the same config hash.
                let status = try await a.get("/v1/status", as: StatusResponse.self)
                let cluster = try #require(status.cluster)
                #expect(cluster.node == "a")
                #expect(Set(cluster.nodes.map(\.name)) == ["a", "b"])
                #expect(cluster.nodes.allSatisfy { $0.state == "alive" && !$0.configDiffers && $0.heartbeatAgeSeconds < Double(Self.lease) })
                let ctl = try await ChildProcess.run(productsDirectory + "/jobrunnerctl", ["--socket", nodes["b"]!.socketPath, "status"])
                #expect(ctl.output.contains("node b of 2 alive"), "\(ctl.output)")
                let started = try await ChildProcess.run(productsDirectory + "/jobrunnerctl",
                                                         ["--socket", nodes["b"]!.socketPath, "run", "long", "--node", "a"])
                #expect(started.status == 0 && started.output.contains("on node a"), "\(started.output)")
                try await nodes["a"]!.waitForLog("run requested by another node", "job=long")
                // A pause on one node reaches the others.
                _ = try await a.request(.post, "/v1/jobs/long/pause").decode(JobInfo.self)
                try await nodes["b"]!.waitForLog("job paused on another node", "job=long", within: .seconds(5))
            }
        }
    }

    /// The server ends a session of the daemon while it is inside a transaction (an operator's
    /// pg_terminate_backend, a failover): caught by freezing the node a moment, ending what it
    /// left idle in a transaction, and letting it go on. The node must go on starting runs.
    @Test func sessionsEndedInsideATransactionDoNotStallTheNode() async throws {
        try await withPostgresServer { server in
            let ledger = Ledger(path: server.directory + "/ledger")
            let jobs = (1...10).map { Self.tick("job\($0)", ledger, extra: ", overlap: allow") }.joined(separator: "\n")
            try await Self.withNodes(["a"], config: Self.config(server, jobs: jobs)) { nodes in
                let node = nodes["a"]!
                try await poll("the first runs") { ledger.lines().count >= 10 }
                var ended = 0
                for _ in 0..<200 where ended < 3 {
                    node.signal(SIGSTOP)
                    let rows = try await server.query("""
                        SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                        WHERE state = 'idle in transaction' AND pid <> pg_backend_pid()
                        """)
                    node.signal(SIGCONT)
                    ended += Int(rows.first?.first ?? "0") ?? 0
                    try await Task.sleep(for: .milliseconds(50))
                }
                try #require(ended > 0, "never caught the node inside a transaction")
                let after = Self.nowMicros() / 1_000_000 + 2
                try await poll("every job running again", within: .seconds(20), every: .milliseconds(250)) {
                    Set(ledger.lines().filter { $0.scheduledSecond > after }.map(\.job)).count == 10
                }
            }
        }
    }

    @Test func nodesCarryOnAcrossADatabaseOutageLongerThanALease() async throws {
        try await withPostgresServer { server in
            let ledger = Ledger(path: server.directory + "/ledger")
            let lease = 8
            let jobs = """
                \(Self.tick("tick", ledger))
                  slow: { shell: "sleep 3", every: 2s, overlap: allow }
                """
            let (from, down, up, to) = try await Self.withNodes(["a", "b"], config: Self.config(server, jobs: jobs, lease: lease)) { nodes in
                let from = Self.nowMicros() / 1_000_000 + 2
                // A slow run in flight when the server goes away.
                let inFlight = try await Self.waitForRows(
                    server, "SELECT id FROM jobrunner.runs WHERE job = 'slow' AND started_at IS NOT NULL AND ended_at IS NULL",
                    "a slow run in flight") { !$0.isEmpty }
                try await server.stopServer()
                let down = Self.nowMicros() / 1_000_000
                // Longer than a lease: every node finds itself unable to heartbeat and stands
                // down (a node cannot tell an outage from a partition of its own).
                for node in nodes.values {
                    try await node.waitForLog("cluster lease lost", within: .seconds(lease * 3))
                }
                #expect(Self.nowMicros() / 1_000_000 - down >= Int64(lease))
                try await server.start()
                let up = Self.nowMicros() / 1_000_000
                let rows = try await Self.waitForRows(
                    server, "SELECT outcome FROM jobrunner.runs WHERE id = '\(inFlight[0][0])'", within: .seconds(30),
                    "the in-flight run recorded") { !($0.first?.first ?? "").isEmpty }
                // It ended (3 s) before the nodes stood down (8 s): its end was kept and written.
                #expect(rows[0][0] == "succeeded")
                for node in nodes.values {
                    try await node.waitForLog("joined the cluster", "incarnation=2", within: .seconds(lease * 3))
                }
                // Both nodes go on running after the outage.
                try await poll("both nodes running ticks after the outage", within: .seconds(30), every: .milliseconds(250)) {
                    Set(ledger.lines().filter { $0.job == "tick" && $0.scheduledSecond > up + 2 }.map(\.node)) == ["a", "b"]
                }
                let states = try await server.query("SELECT state FROM jobrunner.nodes")
                #expect(states.allSatisfy { $0[0] == "alive" }, "\(states)")
                return (from, down, up, Self.nowMicros() / 1_000_000 - 1)
            }
            // Nothing ran twice; nothing is missing outside the outage (occurrences while no
            // node could claim them run nowhere).
            let interrupted = try await server.query("""
                SELECT scheduled_at / 1000000 FROM jobrunner.runs WHERE job = 'tick' AND outcome = 'interrupted'
                """).compactMap { Int64($0[0]) }
            let outage = Set((down - 1)...(up + 3))
            let all = ledger.audit(jobs: ["tick"], seconds: from...to, excused: ["tick": outage.union(interrupted)])
            #expect(all.isExact, "\(all)")
            let problems = ledger.reconcile(with: try await Self.historyRows(server), jobs: ["tick"])
            #expect(problems.isEmpty, "\(problems.prefix(5))")
        }
    }

    @Test func aFollowerFiresOnceForEveryFireOfItsJobWhicheverNodeRanIt() async throws {
        try await withPostgresServer { server in
            let lines = server.directory + "/followed"
            // tick runs on either node each second; follow is a run of steps fired by each of
            // its fires, and writes which fire fired it.
            let jobs = """
                  tick: { shell: "true", every: 1s, overlap: allow }
                  follow:
                    after: [tick]
                    overlap: allow
                    max_instances: 10
                    steps:
                      - { name: write, shell: "echo \\"$JOBRUNNER_TRIGGERED_BY $JOBRUNNER_NODE\\" >> \(lines)" }
                      - { name: done, shell: "true" }
                """
            let stoppedAt = try await Self.withNodes(["a", "b"], config: Self.config(server, jobs: jobs)) { nodes in
                try await poll("followers on both nodes", within: .seconds(60), every: .milliseconds(250)) {
                    let text = (try? String(contentsOfFile: lines, encoding: .utf8)) ?? ""
                    let perNode = Set(text.split(separator: "\n").compactMap { $0.split(separator: " ").last })
                    return perNode.count == 2 && text.split(separator: "\n").count >= 12
                }
                // The steps of a follower that ran on one node, read through the other.
                let rows = try await server.query("SELECT id, node FROM jobrunner.runs WHERE job = 'follow' AND outcome = 'succeeded' LIMIT 1")
                let (id, ranOn) = (rows[0][0], rows[0][1])
                let other = try #require(nodes[ranOn == "a" ? "b" : "a"])
                let detail = try await ControlClient(socketPath: other.socketPath).get("/v1/runs/\(id)", as: RunDetail.self).run
                #expect(detail.steps?.map { "\($0.name) \($0.outcome)" } == ["write succeeded", "done succeeded"])
                #expect(detail.trigger == "after" && detail.triggeredBy?.hasPrefix("tick/") == true)
                return Self.nowMicros()
            }
            // Counted in what the followers wrote: no fire of tick was followed twice.
            let written = try String(contentsOfFile: lines, encoding: .utf8).split(separator: "\n").map { String($0.split(separator: " ")[0]) }
            let doubled = Dictionary(grouping: written, by: { $0 }).filter { $0.value.count > 1 }.keys
            #expect(doubled.isEmpty, "fires followed more than once: \(doubled)")
            // Every succeeded fire of tick has its follower on record (but those that ended once
            // the nodes were stopping: a stopping node starts nothing), and each follower that
            // succeeded wrote its line once.
            let ticks = Set(try await server.query(
                "SELECT 'tick/' || id FROM jobrunner.runs WHERE job = 'tick' AND outcome = 'succeeded' AND ended_at < \(stoppedAt)"
            ).map { $0[0] })
            let followed = try await server.query("SELECT triggered_by, outcome FROM jobrunner.runs WHERE job = 'follow'")
            let unfollowed = ticks.subtracting(followed.map { $0[0] })
            #expect(unfollowed.isEmpty, "fires of tick nobody followed: \(unfollowed.sorted().prefix(5))")
            let succeeded = Set(followed.filter { $0[1] == "succeeded" }.map { $0[0] })
            #expect(succeeded.isSubset(of: Set(written)), "a follower succeeded without writing its line")
            let allTicks = Set(try await server.query("SELECT 'tick/' || id FROM jobrunner.runs WHERE job = 'tick' AND outcome = 'succeeded'").map { $0[0] })
            #expect(Set(written).isSubset(of: allTicks), "a line names no succeeded fire of tick")
        }
    }

    @Test func clusterWidePoolHoldsAcrossNodes() async throws {
        try await withPostgresServer { server in
            let config = """
                daemon:
                  pools: { db: { size: 1, cluster_wide: true } }
                  cluster: { database: "\(server.url)", lease: \(Self.lease)s }
                jobs:
                  dump: { shell: "sleep 2.5", every: 1s, overlap: allow, max_instances: 30, pool: db }
                """
            try await Self.withNodes(["a", "b"], config: config) { _ in
                // Each run outlasts the interval, so with a pool per node the two nodes' runs
                // would overlap. Both nodes run it, never two at once anywhere.
                try await Self.waitForRows(server, "SELECT DISTINCT node FROM jobrunner.runs WHERE job = 'dump' AND ended_at IS NOT NULL AND outcome = 'succeeded'",
                                           within: .seconds(40), "runs on both nodes") { $0.count == 2 }
                try await Self.waitForRows(server, "SELECT count(*) FROM jobrunner.runs WHERE job = 'dump' AND outcome = 'succeeded'",
                                           within: .seconds(40), "five runs") { Int($0.first?.first ?? "0")! >= 5 }
            }
            let overlaps = try await server.query("""
                SELECT x.id, x.node, y.id, y.node FROM jobrunner.runs x JOIN jobrunner.runs y
                  ON x.id < y.id AND x.started_at < y.ended_at AND y.started_at < x.ended_at
                WHERE x.job = 'dump' AND y.job = 'dump' AND x.outcome = 'succeeded' AND y.outcome = 'succeeded'
                """)
            #expect(overlaps.isEmpty, "runs overlapped in a cluster-wide pool of 1: \(overlaps.prefix(3))")
            let slots = try await server.query("SELECT (SELECT count(*) FROM jobrunner.pool_slots) + (SELECT count(*) FROM jobrunner.pool_waiters)")
            #expect(slots.first?.first == "0", "slots left behind after a clean stop")
        }
    }

    @Test func refusesUnreachableDatabaseAndNewerSchema() async throws {
        // Unreachable: a socket directory with no server.
        let nowhere = TemporaryDirectory("jobrunner-nopg")
        defer { nowhere.remove() }
        let unreachable = try DaemonHarness(config: """
            daemon:
              cluster: { database: "postgresql://jobrunner@\(nowhere.path.replacingOccurrences(of: "/", with: "%2F"))/jobrunner" }
            jobs:
              a: { command: ["/bin/true"] }
            """)
        defer { unreachable.cleanUp() }
        #expect(try await unreachable.waitForExit(within: .seconds(30)) == 1)
        try await unreachable.sawLog("cannot use the cluster database, not starting")

        try await withPostgresServer { server in
            let config = Self.config(server, jobs: "  a: { command: [\"/bin/true\"] }")
            let first = try DaemonHarness(config: config)
            try await first.waitUntilReady()
            first.signal(SIGTERM)
            #expect(try await first.waitForExit() == 0)
            defer { first.cleanUp() }

            let check = try await ChildProcess.run(productsDirectory + "/jobrunnerd", ["--check-cluster", "--config", first.configPath])
            #expect(check.status == 0, "\(check.output)")
            #expect(check.output.contains("schema:   version 5"))
            #expect(check.output.contains("left"), "the stopped node is listed: \(check.output)")
            _ = try await server.query("INSERT INTO jobrunner.schema_info (version) VALUES (99)")
            let newer = try DaemonHarness(config: config)
            defer { newer.cleanUp() }
            #expect(try await newer.waitForExit() == 1)
            try await newer.sawLog("schema is version 99, newer than this jobrunnerd understands")
        }
    }

    @Test func aNodeNameHeldByALiveNodeIsRefused() async throws {
        try await withPostgresServer { server in
            let config = Self.config(server, jobs: "  a: { command: [\"/bin/true\"] }")
            try await Self.withNodes(["same"], config: config) { nodes in
                let second = try DaemonHarness(config: config, arguments: ["--node-name", "same"])
                defer { second.cleanUp() }
                #expect(try await second.waitForExit() == 1)
                try await second.sawLog("node name 'same' is held by a live node")
                // The first is untouched.
                let status = try await ControlClient(socketPath: nodes["same"]!.socketPath).get("/v1/status", as: StatusResponse.self)
                #expect(status.cluster?.nodes.count == 1)
                #expect(status.cluster?.nodes.first?.state == "alive")
            }
        }
    }
}
