import Foundation
import JobRunnerConfig
import JobRunnerCore
import JobRunnerSchedule
import JobRunnerSupervision
import Synchronization
import TestSupport
import Testing

/// HTTP jobs and steps against a real local server (plain, and TLS with a CA made for the
/// test): statuses, timeouts, refused connections, redirects, TLS trust, header files, and
/// connections reused (counted by the server).
@Suite(.timeLimit(.minutes(1)), .serialized) struct HTTPStepTests {
    let supervisor = makeSupervisor(http: testHTTPCaller)

    func httpJob(_ call: HTTPCall, timeout: Duration? = nil) -> JobDefinition {
        var job = JobDefinition(name: "call", command: .argv(["/bin/false"]), timeout: timeout)
        job.http = call
        return job
    }

    func run(_ call: HTTPCall, timeout: Duration? = nil) async -> (RunResult, [OutputLine]) {
        let tail = OutputTail(capacity: 4096)
        let result = await supervisor.run(request(httpJob(call, timeout: timeout)), output: tail)
        return (result, tail.lines)
    }

    @Test func anExpectedStatusSucceedsAndTheAnswerIsTheOutput() async throws {
        let directory = TemporaryDirectory("jobrunner-http")
        defer { directory.remove() }
        let server = try await TestHTTPServer(in: directory)
        defer { server.stop() }
        let (ok, lines) = await run(HTTPCall(url: server.url("/ok")))
        #expect(ok.outcome == .succeeded)
        #expect(ok.pid == nil)
        let texts = lines.map(\.text)
        #expect(texts.first == "HTTP/1.1 200 OK")
        #expect(texts.contains("X-Test: yes") && texts.last == "hello", "\(texts)")

        let (failed, _) = await run(HTTPCall(url: server.url("/status/503")))
        #expect(failed.outcome == .httpStatus(503))
        let (expected, _) = await run(HTTPCall(url: server.url("/status/404"), expectStatus: [404...404]))
        #expect(expected.outcome == .succeeded)
        let (posted, _) = await run(HTTPCall(url: server.url("/ok"), method: "POST", body: "payload"))
        #expect(posted.outcome == .succeeded)
    }

    @Test func onlyTheFirstBytesOfABigBodyAreKept() async throws {
        let directory = TemporaryDirectory("jobrunner-http")
        defer { directory.remove() }
        let server = try await TestHTTPServer(in: directory)
        defer { server.stop() }
        let tail = OutputTail(capacity: 1000)
        let result = await supervisor.run(request(httpJob(HTTPCall(url: server.url("/big/5000000")))), output: tail)
        #expect(result.outcome == .succeeded)
        // All of the answer's head, and of its body what fits in the output's 1,000 bytes.
        let lines = tail.lines.map(\.text)
        #expect(lines.first == "HTTP/1.1 200 OK")
        #expect(lines.reduce(0) { $0 + $1.utf8.count + 1 } == 1000, "\(lines.dropLast())")
        #expect(lines.last?.allSatisfy { $0 == "x" } == true)
    }

    @Test func aServerThatNeverAnswersTimesOutAndACancelStopsTheRequest() async throws {
        let directory = TemporaryDirectory("jobrunner-http")
        defer { directory.remove() }
        let server = try await TestHTTPServer(in: directory)
        defer { server.stop() }
        let started = ContinuousClock.now
        let (result, _) = await run(HTTPCall(url: server.url("/hang")), timeout: .milliseconds(300))
        let elapsed = ContinuousClock.now - started
        #expect(result.outcome == .timedOut)
        #expect(elapsed >= .milliseconds(300) && elapsed < .seconds(3), "\(elapsed)")

        let supervisor = self.supervisor
        let job = httpJob(HTTPCall(url: server.url("/hang")))
        let task = Task { await supervisor.run(request(job)) }
        try await poll("the server has the request", within: .seconds(5)) {
            await run(HTTPCall(url: server.url("/count/hang"))).1.last?.text == "2"
        }
        task.cancel()
        #expect(await task.value.outcome == .cancelled)
    }

    @Test func aRefusedConnectionIsAConnectFailure() async throws {
        // A port nobody listens on: bound, then closed.
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        let port = UInt16(bigEndian: address.sin_port)
        close(fd)
        let started = ContinuousClock.now
        let (result, _) = await run(HTTPCall(url: "http://127.0.0.1:\(port)/ok"))
        #expect(ContinuousClock.now - started < .seconds(2), "a refused connection fails at once")
        guard case .requestFailed(let reason, let connection) = result.outcome else {
            Issue.record("expected request_failed, got \(result.outcome)")
            return
        }
        #expect(connection, "\(reason)")
        #expect(reason == "could not connect to 127.0.0.1:\(port): Connection refused", "\(reason)")
    }

    @Test func redirectsAreFollowedUnlessTurnedOff() async throws {
        let directory = TemporaryDirectory("jobrunner-http")
        defer { directory.remove() }
        let server = try await TestHTTPServer(in: directory)
        defer { server.stop() }
        let (followed, lines) = await run(HTTPCall(url: server.url("/redirect")))
        #expect(followed.outcome == .succeeded)
        #expect(lines.last?.text == "hello")
        let (kept, _) = await run(HTTPCall(url: server.url("/redirect"), followRedirects: false))
        #expect(kept.outcome == .httpStatus(302))
    }

    @Test func tlsTrustsTheGivenCAAndNotAnUnknownOne() async throws {
        let directory = TemporaryDirectory("jobrunner-https")
        defer { directory.remove() }
        let server = try await TestHTTPServer(tls: true, in: directory)
        defer { server.stop() }
        let (trusted, lines) = await run(HTTPCall(url: server.url("/ok"), caFile: server.caFile))
        #expect(trusted.outcome == .succeeded, "\(trusted.outcome)")
        #expect(lines.last?.text == "hello")
        // The system's store does not know the test's CA.
        let (untrusted, _) = await run(HTTPCall(url: server.url("/ok")))
        guard case .requestFailed(let reason, let connection) = untrusted.outcome else {
            Issue.record("expected request_failed, got \(untrusted.outcome)")
            return
        }
        #expect(!connection && reason.hasPrefix("TLS"), "\(reason)")
    }

    @Test func headerFilesAreReadAtEachRequest() async throws {
        let directory = TemporaryDirectory("jobrunner-http")
        defer { directory.remove() }
        let server = try await TestHTTPServer(in: directory)
        defer { server.stop() }
        let token = directory.write("token", "Bearer s3cret\n")
        let call = HTTPCall(url: server.url("/header/Authorization"), headerFiles: [.init("Authorization", token)])
        let (first, lines) = await run(call)
        #expect(first.outcome == .succeeded)
        #expect(lines.last?.text == "Bearer s3cret")
        _ = directory.write("token", "Bearer rotated\n")
        #expect(await run(call).1.last?.text == "Bearer rotated")
        let (missing, _) = await run(HTTPCall(url: server.url("/ok"), headerFiles: [.init("Authorization", directory.file("gone"))]))
        guard case .requestFailed(let reason, false) = missing.outcome else {
            Issue.record("expected request_failed, got \(missing.outcome)")
            return
        }
        #expect(reason.contains("header_files.Authorization") && reason.contains("No such file"), "\(reason)")
    }

    @Test func connectionsAreReusedAcrossRuns() async throws {
        let directory = TemporaryDirectory("jobrunner-http")
        defer { directory.remove() }
        let server = try await TestHTTPServer(in: directory)
        defer { server.stop() }
        for _ in 0..<20 {
            #expect(await run(HTTPCall(url: server.url("/ok"))).0.outcome == .succeeded)
        }
        let (_, lines) = await run(HTTPCall(url: server.url("/accepts")))
        #expect(lines.last?.text == "1", "21 requests one after another, one connection: \(lines.map(\.text))")
    }

    @Test func anHTTPStepFailingCancelsAProcessSibling() async throws {
        let directory = TemporaryDirectory("jobrunner-http")
        defer { directory.remove() }
        let server = try await TestHTTPServer(in: directory)
        defer { server.stop() }
        var job = JobDefinition(name: "mixed", command: .argv(["/bin/false"]), steps: [
            .parallel("both", [
                .http("ping", HTTPCall(url: server.url("/status/500"))),
                .process("work", .shell("exec sleep 300")),
            ]),
            .http("after", HTTPCall(url: server.url("/ok"))),
        ])
        job.killGrace = .milliseconds(200)
        let tail = OutputTail(capacity: 4096)
        let run = request(job)
        let result = await supervisor.run(run, output: tail)
        #expect(result.outcome == .httpStatus(500))
        let steps = Dictionary(uniqueKeysWithValues: result.steps.map { ($0.name, $0) })
        #expect(steps["ping"]?.httpStatus == 500)
        #expect(steps["work"]?.outcome == .cancelled)
        #expect(steps["after"]?.outcome == .skipped(reason: StepResult.notStarted))
        #expect(result.steps.failureSummary == "ping HTTP 500; work cancelled")
        #expect(tail.lines.first { $0.step == "ping" }?.text == "HTTP/1.1 500 Internal Server Error")
        #expect(ProcessTable.ofRun(run.id.rawValue).isEmpty)
    }

    @Test func aStalledBodyTimesOutAndACancelOfTheRunsHandleStopsAnHTTPJob() async throws {
        let directory = TemporaryDirectory("jobrunner-http")
        defer { directory.remove() }
        let server = try await TestHTTPServer(in: directory)
        defer { server.stop() }
        let started = ContinuousClock.now
        let (stalled, _) = await run(HTTPCall(url: server.url("/stall")), timeout: .milliseconds(400))
        #expect(stalled.outcome == .timedOut)
        #expect(ContinuousClock.now - started < .seconds(3))

        let handle = RunHandle()
        let supervisor = self.supervisor
        let job = httpJob(HTTPCall(url: server.url("/hang")))
        let task = Task { await supervisor.run(request(job), handle: handle) }
        try await poll("the server has the request", within: .seconds(5)) {
            await run(HTTPCall(url: server.url("/count/hang"))).1.last?.text == "1"
        }
        handle.cancel()
        #expect(await task.value.outcome == .cancelled)
    }

    @Test func atMostEightRequestsToOneHostAreInFlightAndTheRestWait() async throws {
        let directory = TemporaryDirectory("jobrunner-http")
        defer { directory.remove() }
        let server = try await TestHTTPServer(in: directory)
        defer { server.stop() }
        let job = JobDefinition(name: "many", command: .argv(["/bin/false"]), steps: [
            .parallel("all", (1...12).map { .http("s\($0)", HTTPCall(url: server.url("/sleep/0.5"))) }),
        ])
        let result = await supervisor.run(request(job))
        #expect(result.outcome == .succeeded, "\(result.steps.failureSummary ?? "")")
        let most = await run(HTTPCall(url: server.url("/most"))).1.last?.text
        // Never more than the limit; and they did overlap (the limit is what held them).
        let atOnce = Int(most ?? "") ?? 0
        #expect(atOnce <= HTTPCaller.perHostLimit && atOnce >= 4, "\(atOnce) at once")
    }

    @Test func headerValuesNeverFollowARedirectToAnotherServerNorShowInAFailure() async throws {
        let directory = TemporaryDirectory("jobrunner-http")
        defer { directory.remove() }
        let server = try await TestHTTPServer(in: directory)
        defer { server.stop() }
        let otherDirectory = TemporaryDirectory("jobrunner-http-other")
        defer { otherDirectory.remove() }
        let other = try await TestHTTPServer(in: otherDirectory)
        defer { other.stop() }
        let token = directory.write("token", "Bearer s3cret\n")
        let away = HTTPCall(url: server.url("/away/\(other.port)/header/Authorization"), headerFiles: [.init("Authorization", token)])
        let (kept, lines) = await run(away)
        #expect(kept.outcome == .httpStatus(302))
        #expect(lines.contains { $0.text.contains("not following the redirect to http://127.0.0.1:\(other.port)") }, "\(lines.map(\.text))")
        #expect(await run(HTTPCall(url: other.url("/count/header/Authorization"))).1.last?.text == "0", "the other server saw nothing")
        // Without header values the redirect is followed; within the origin it is followed with them.
        #expect(await run(HTTPCall(url: server.url("/away/\(other.port)/ok"))).0.outcome == .succeeded)
        let same = HTTPCall(url: server.url("/redirect"), headerFiles: [.init("Authorization", token)])
        #expect(await run(same).1.last?.text == "hello")

        _ = directory.write("token", "Bearer s3cret\u{1}x\n")
        let (refused, _) = await run(HTTPCall(url: server.url("/ok"), headerFiles: [.init("Authorization", token)]))
        guard case .requestFailed(let reason, false) = refused.outcome else {
            Issue.record("expected request_failed, got \(refused.outcome)")
            return
        }
        #expect(reason.contains("control character") && !reason.contains("s3cret"), "\(reason)")
    }
}
