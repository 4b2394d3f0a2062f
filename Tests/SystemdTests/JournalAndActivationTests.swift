import Foundation
import Logging
@testable import Systemd
import TestSupport
import Testing

@Suite struct JournalFieldTests {
    @Test(arguments: [
        ("job", "JOB"), ("run_id", "RUN_ID"), ("outcome", "OUTCOME"), ("stream", "STREAM"),
        ("exit-code", "EXIT_CODE"), ("_private", "PRIVATE"), ("2fa", "F2FA"), ("message", "META_MESSAGE"),
        ("priority", "META_PRIORITY"),
    ])
    func metadataKeysBecomeJournalFieldNames(key: String, field: String) {
        #expect(JournalLogHandler.fieldName(key) == field)
    }

    @Test func unusableKeysAreDroppedAndLongOnesCut() {
        #expect(JournalLogHandler.fieldName("___") == nil)
        #expect(JournalLogHandler.fieldName(String(repeating: "a", count: 100))?.count == 64)
    }

    @Test func levelsMapToSyslogPriorities() {
        #expect(JournalLogHandler.priority(.critical) == 2)
        #expect(JournalLogHandler.priority(.error) == 3)
        #expect(JournalLogHandler.priority(.warning) == 4)
        #expect(JournalLogHandler.priority(.notice) == 5)
        #expect(JournalLogHandler.priority(.info) == 6)
        #expect(JournalLogHandler.priority(.debug) == 7)
    }
}

/// Serialized: `JOURNAL_STREAM` and `LISTEN_*` are process-wide.
@Suite(.serialized) struct EnvironmentDetectionTests {
    @Test func stderrIsTheJournalOnlyWhenJournalStreamNamesIt() {
        var status = stat()
        #expect(fstat(2, &status) == 0)
        setenv("JOURNAL_STREAM", "\(status.st_dev):\(status.st_ino)", 1)
        defer { unsetenv("JOURNAL_STREAM") }
        #expect(JournalLogHandler.stderrIsJournal)
        setenv("JOURNAL_STREAM", "\(status.st_dev):\(status.st_ino + 1)", 1)
        #expect(!JournalLogHandler.stderrIsJournal)
        setenv("JOURNAL_STREAM", "garbage", 1)
        #expect(!JournalLogHandler.stderrIsJournal)
        unsetenv("JOURNAL_STREAM")
        #expect(!JournalLogHandler.stderrIsJournal)
    }

    @Test func withoutListenFDsNothingIsPassed() {
        unsetenv("LISTEN_FDS")
        unsetenv("LISTEN_PID")
        #expect(SocketActivation.takeSockets().isEmpty)
    }

    @Test func theControlSocketIsTheOneNamedControlOrTheOnlyListeningUnixSocket() throws {
        let directory = TemporaryDirectory("jobrunner-activation")
        defer { directory.remove() }
        let first = try Self.listeningUnixSocket(directory.file("a.sock"))
        let second = try Self.listeningUnixSocket(directory.file("b.sock"))
        let datagram = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        defer { [first, second, datagram].forEach { close($0) } }
        #expect(SocketActivation.isListeningUnixStream(first))
        #expect(!SocketActivation.isListeningUnixStream(datagram))

        let named = [SocketActivation.PassedSocket(descriptor: first, name: "metrics"),
                     SocketActivation.PassedSocket(descriptor: second, name: "control")]
        #expect(SocketActivation.controlSocket(in: named)?.descriptor == second)
        let unnamed = [SocketActivation.PassedSocket(descriptor: datagram, name: "unknown"),
                       SocketActivation.PassedSocket(descriptor: first, name: "unknown")]
        #expect(SocketActivation.controlSocket(in: unnamed)?.descriptor == first)
        let ambiguous = [SocketActivation.PassedSocket(descriptor: first, name: "x"),
                         SocketActivation.PassedSocket(descriptor: second, name: "y")]
        #expect(SocketActivation.controlSocket(in: ambiguous) == nil)
    }

    static func listeningUnixSocket(_ path: String) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            for (index, byte) in path.utf8.enumerated() where index < buffer.count - 1 { buffer[index] = byte }
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0, listen(fd, 8) == 0 else { throw TimeoutError("cannot listen on \(path)") }
        return fd
    }
}
