import Foundation
import Hummingbird
import NIOCore
import HummingbirdTesting
import JobRunnerAPI
@testable import JobRunnerControl
import TestSupport
import Synchronization
import Testing

/// The control API's routes in-process, over a port with fixed answers: status codes, JSON
/// shapes, query parsing and abbreviated run ids, without a daemon (the integration suite
/// covers the same routes over the real socket).
@Suite(.timeLimit(.minutes(1))) struct ControlRouterTests {
    static let run = RunInfo(id: "01m8r6x00000000000003x8k2q", job: "backup", trigger: "schedule", attempt: 1, fireId: "01m8r6x00000000000003x8k2q",
                             state: "finished", scheduledTime: "2026-12-01T03:00:00Z", queuedAt: "2026-12-01T03:00:00Z",
                             startedAt: "2026-12-01T03:00:00Z", endedAt: "2026-12-01T03:00:07Z", durationSeconds: 7, pid: 42,
                             outcome: "failed", exitCode: 3, signal: nil, detail: "exit status 3", statusText: nil, waitingFor: nil,
                             cpuUserSeconds: 1.25, cpuSystemSeconds: 0.5, maxRssBytes: 47_000_000)
    static let job = JobInfo(name: "backup", command: ["/bin/backup"], shell: nil, schedule: "0 3 * * *", timeZone: "UTC", timeoutSeconds: nil,
                             killGraceSeconds: 10, workingDirectory: nil, environment: ["TOKEN"], state: "enabled", nextFire: nil,
                             source: "test.yaml:2", lastRun: run, active: [])

    func withRouter(_ handler: FixedControlHandler, _ body: @escaping @Sendable (any TestClientProtocol) async throws -> Void) async throws {
        let app = Application(router: ControlRouter.make(handler: handler))
        try await app.test(.router) { client in try await body(client) }
    }

    /// The body as a JSON object (empty, with an issue recorded, when it is not one).
    static func json(_ response: TestResponse) -> [String: Any] {
        guard let object = (try? JSONSerialization.jsonObject(with: Data(response.body.readableBytesView))) as? [String: Any] else {
            Issue.record("not a JSON object: \(String(buffer: response.body))")
            return [:]
        }
        return object
    }

    @Test func runsCarryWhatTheyCostAsNumbers() async throws {
        let handler = FixedControlHandler(jobs: [Self.job], runs: [Self.run])
        try await withRouter(handler) { client in
            try await client.execute(uri: "/v1/runs?job=backup&since=2026-12-01T00:00:00Z&until=2026-12-02T00:00:00Z&limit=5", method: .get) {
                response in
                #expect(response.status == .ok)
                let runs = try #require(Self.json(response)["runs"] as? [[String: Any]])
                #expect(runs.count == 1)
                #expect(runs.first?["cpu_user_seconds"] as? Double == 1.25)
                #expect(runs.first?["cpu_system_seconds"] as? Double == 0.5)
                #expect(runs.first?["max_rss_bytes"] as? Int == 47_000_000)
                #expect(runs.first?["exit_code"] as? Int == 3)
            }
        }
        #expect(handler.lastQuery.withLock { $0 } == RunsQuery(job: "backup", since: "2026-12-01T00:00:00Z", until: "2026-12-02T00:00:00Z", limit: 5))
    }

    @Test func badQueriesAreRefusedWithTheirReason() async throws {
        try await withRouter(FixedControlHandler(jobs: [Self.job], runs: [Self.run])) { client in
            for uri in ["/v1/runs?limit=0", "/v1/runs?limit=x", "/v1/jobs/backup/next?count=0", "/v1/output", "/v1/runs?since="] {
                try await client.execute(uri: uri, method: .get) { response in
                    #expect(response.status == .badRequest, "\(uri)")
                    #expect(Self.json(response)["error"] as? String == "bad_request", "\(uri)")
                }
            }
        }
    }

    @Test func runsAreFoundByAnAbbreviationOfTheirId() async throws {
        let other = RunInfo(id: "01m8r6x00000000000009zzzzz", job: "backup", trigger: "manual", attempt: 1, fireId: "01m8r6x00000000000009zzzzz",
                            state: "finished", scheduledTime: "2026-12-01T04:00:00Z", queuedAt: "2026-12-01T04:00:00Z", startedAt: nil,
                            endedAt: nil, durationSeconds: nil, pid: nil, outcome: "skipped", exitCode: nil, signal: nil, detail: nil,
                            statusText: nil, waitingFor: nil)
        let handler = FixedControlHandler(jobs: [Self.job], runs: [Self.run, other],
                                          output: [OutputLineInfo(stream: "stdout", text: "dumped", at: "2026-12-01T03:00:01Z")])
        try await withRouter(handler) { client in
            try await client.execute(uri: "/v1/runs/3x8k2q", method: .get) { response in
                #expect(response.status == .ok)
                let run = try #require(Self.json(response)["run"] as? [String: Any])
                #expect(run["id"] as? String == Self.run.id)
            }
            try await client.execute(uri: "/v1/runs/3x8k2q/output", method: .get) { response in
                #expect(response.status == .ok)
                #expect(String(buffer: response.body) == "{\"at\":\"2026-12-01T03:00:01Z\",\"stream\":\"stdout\",\"text\":\"dumped\"}\n")
            }
            try await client.execute(uri: "/v1/runs/01m8r6x", method: .get) { response in
                #expect(response.status == .conflict)
            }
            try await client.execute(uri: "/v1/runs/nope", method: .get) { response in
                #expect(response.status == .notFound)
            }
        }
    }

    @Test func everyRunsOutputStreamsWithItsJobAndRun() async throws {
        let line = OutputLineInfo(stream: "stderr", text: "oops", at: "2026-12-01T03:00:01Z", job: "backup", run: Self.run.id)
        try await withRouter(FixedControlHandler(jobs: [Self.job], runs: [Self.run], output: [line])) { client in
            try await client.execute(uri: "/v1/output?follow=true", method: .get) { response in
                #expect(response.status == .ok)
                #expect(response.headers[.contentType] == "application/x-ndjson")
                #expect(String(buffer: response.body) == """
                    {"at":"2026-12-01T03:00:01Z","job":"backup","run":"\(Self.run.id)","stream":"stderr","text":"oops"}
                    {"dropped":2}

                    """)
            }
        }
    }

    @Test func mutationsWithoutPeerCredentialsAreRefused() async throws {
        // In-process there is no socket to ask SO_PEERCRED of: every change is refused, and the
        // handler is never called.
        let handler = FixedControlHandler(jobs: [Self.job], runs: [Self.run])
        try await withRouter(handler) { client in
            for uri in ["/v1/jobs/backup/run?wait=first", "/v1/jobs/backup/pause", "/v1/reload", "/v1/runs/3x8k2q/cancel"] {
                try await client.execute(uri: uri, method: .post) { response in
                    #expect(response.status == .forbidden, "\(uri)")
                    #expect((Self.json(response)["message"] as? String)?.contains("peer credentials") == true, "\(uri)")
                }
            }
        }
        #expect(handler.calls.withLock { $0 }.isEmpty)
    }

    @Test func metricsAndUnknownRoutes() async throws {
        try await withRouter(FixedControlHandler(jobs: [Self.job], runs: [Self.run])) { client in
            try await client.execute(uri: "/metrics", method: .get) { response in
                #expect(response.status == .ok)
                #expect(response.headers[.contentType]?.hasPrefix("text/plain; version=0.0.4") == true)
            }
            try await client.execute(uri: "/v1/jobs/nosuch", method: .get) { response in
                #expect(response.status == .notFound)
                #expect(Self.json(response)["message"] as? String == "no job named 'nosuch'")
            }
            try await client.execute(uri: "/v1/jobs/backup", method: .get) { response in
                #expect(response.status == .ok)
                #expect(Self.json(response)["environment"] as? [String] == ["TOKEN"])
            }
        }
    }
}
