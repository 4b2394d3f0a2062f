import Foundation
import JobRunnerAPI
@testable import JobRunnerControl
import TestSupport
import Testing

/// The control socket's set-up and the client's errors, on real unix sockets.
@Suite(.timeLimit(.minutes(1))) struct ControlSocketTests {
    @Test func listensWithModeAndReplacesAStaleSocket() throws {
        let directory = TemporaryDirectory("jobrunner-socket")
        defer { directory.remove() }
        let path = directory.file("control.sock")
        let first = try ControlSocket.listen(path: path)
        var status = stat()
        #expect(stat(path, &status) == 0)
        #expect(status.st_mode & 0o777 == 0o660)
        #expect(ControlSocket.isAnswering(path))
        // A live listener is never taken over.
        #expect(throws: ControlSocketError.self) { _ = try ControlSocket.listen(path: path) }
        // The file a crashed daemon leaves behind (nobody accepts on it) is replaced.
        close(first)
        #expect(!ControlSocket.isAnswering(path))
        let second = try ControlSocket.listen(path: path)
        defer { close(second) }
        #expect(ControlSocket.isAnswering(path))
    }

    @Test func refusesPathsItMustNotTouch() throws {
        let directory = TemporaryDirectory("jobrunner-socket")
        defer { directory.remove() }
        let file = directory.write("not-a-socket", "precious")
        let notSocket = #expect(throws: ControlSocketError.self) { _ = try ControlSocket.listen(path: file) }
        #expect(notSocket?.message.contains("is not a socket") == true)
        #expect((try? String(contentsOfFile: file, encoding: .utf8)) == "precious")
        let long = directory.file(String(repeating: "s", count: 120))
        let tooLong = #expect(throws: ControlSocketError.self) { _ = try ControlSocket.listen(path: long) }
        #expect(tooLong?.message.contains("longer than 107 bytes") == true)
    }

    @Test func peerCredentialsNameThisProcess() throws {
        var pair: [Int32] = [-1, -1]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &pair) == 0)
        defer { pair.forEach { close($0) } }
        let peer = try #require(ControlSocket.peerCredentials(fd: pair[0]))
        #expect(peer.pid == getpid())
        #expect(peer.uid == getuid())
        #expect(peer.gid == getgid())
    }

    @Test func clientErrorsSayWhetherTheDaemonRuns() async throws {
        let directory = TemporaryDirectory("jobrunner-socket")
        defer { directory.remove() }
        let missing = directory.file("missing.sock")
        let noFile = await #expect(throws: ControlClientError.self) { _ = try await ControlClient(socketPath: missing).request(.get, "/v1/status") }
        #expect(noFile?.message == "cannot connect to \(missing): no such file — is jobrunnerd running?")
        guard case .notRunning = noFile?.kind else { Issue.record("kind \(String(describing: noFile?.kind))"); return }

        // A socket file nobody accepts on (a crashed daemon's).
        let stale = directory.file("stale.sock")
        try Self.leaveStaleSocket(at: stale)
        let refused = await #expect(throws: ControlClientError.self) { _ = try await ControlClient(socketPath: stale).request(.get, "/v1/status") }
        #expect(refused?.message == "cannot connect to \(stale): connection refused — is jobrunnerd running?")
    }
}

extension ControlSocketTests {
    /// Binds a socket and closes it without ever listening: the file stays, nobody listens. (A
    /// socket that listened, even briefly, could still be held open by a child another test is
    /// spawning at that moment, and accept the connection.)
    static func leaveStaleSocket(at path: String) throws {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        #expect(fd >= 0)
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            buffer.copyBytes(from: path.utf8.prefix(buffer.count - 1))
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        #expect(bound == 0, "bind \(path): errno \(errno)")
    }
}

/// The API's JSON is a contract: field names are snake_case and stable.
@Suite struct APIShapeTests {
    @Test func runInfoEncodesSnakeCaseFields() throws {
        let run = RunInfo(id: "r1", job: "backup", trigger: "schedule", attempt: 1, fireId: "f1", state: "finished",
                          scheduledTime: "2026-11-29T00:00:00Z", queuedAt: "2026-11-29T00:00:00Z", startedAt: "2026-11-29T00:00:01Z",
                          endedAt: "2026-11-29T00:00:02Z", durationSeconds: 1, pid: 42, outcome: "succeeded", exitCode: 0,
                          signal: nil, detail: nil, statusText: nil, waitingFor: nil)
        let object = try JSONSerialization.jsonObject(with: APICoding.encoder(pretty: false).encode(run)) as? [String: Any]
        let keys = Set(object?.keys.map { $0 } ?? [])
        #expect(keys.isSuperset(of: ["id", "job", "trigger", "attempt", "fire_id", "state", "scheduled_time", "queued_at", "started_at",
                                     "ended_at", "duration_seconds", "pid", "outcome", "exit_code"]))
        #expect(keys.allSatisfy { $0 == $0.lowercased() && !$0.contains("-") }, "\(keys)")
        #expect(try APICoding.decoder().decode(RunInfo.self, from: APICoding.encoder(pretty: false).encode(run)) == run)
    }

    @Test func errorBodyIsErrorAndMessage() throws {
        let data = try APICoding.encoder(pretty: false).encode(ErrorBody(error: "not_found", message: "no job named 'x'"))
        #expect(String(decoding: data, as: UTF8.self) == #"{"error":"not_found","message":"no job named 'x'"}"#)
    }
}
