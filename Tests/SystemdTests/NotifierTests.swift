import Foundation
@testable import Systemd
import TestSupport
import Testing

/// `Notifier` against a real datagram socket, as systemd's `NOTIFY_SOCKET` would receive it.
/// Serialized: `NOTIFY_SOCKET` is process-wide.
@Suite(.serialized, .timeLimit(.minutes(1))) struct NotifierTests {
    func withListener(_ body: (NotifyListener) async throws -> Void) async throws {
        let directory = TemporaryDirectory("jobrunner-notify")
        defer { directory.remove() }
        let listener = NotifyListener(path: directory.file("notify.sock"))
        defer { listener.close() }
        setenv("NOTIFY_SOCKET", listener.path, 1)
        defer { unsetenv("NOTIFY_SOCKET") }
        try await body(listener)
    }

    @Test func eachMessageIsOneDatagramInTheProtocolsWords() async throws {
        try await withListener { listener in
            let notifier = Notifier()
            #expect(notifier.isConnected)
            notifier.ready(status: "3 jobs")
            #expect(try await listener.waitFor("READY=1") == "READY=1\nSTATUS=3 jobs")
            notifier.reloading()
            let reloading = try await listener.waitFor("RELOADING=1")
            let monotonic = reloading.split(separator: "\n").first { $0.hasPrefix("MONOTONIC_USEC=") }
            #expect(Int64(monotonic?.dropFirst("MONOTONIC_USEC=".count) ?? "") ?? 0 > 0, "\(reloading)")
            notifier.stopping(status: "stopping")
            #expect(try await listener.waitFor("STOPPING=1") == "STOPPING=1\nSTATUS=stopping")
            notifier.extendTimeout(by: .milliseconds(1500))
            #expect(try await listener.waitFor("EXTEND_TIMEOUT_USEC") == "EXTEND_TIMEOUT_USEC=1500000")
            notifier.failed(status: "invalid configuration", errno: EINVAL)
            #expect(try await listener.waitFor("ERRNO") == "STATUS=invalid configuration\nERRNO=\(EINVAL)")
            notifier.watchdog()
            #expect(try await listener.waitFor("WATCHDOG") == "WATCHDOG=1")
        }
    }

    @Test func statusIsOneLineAndBounded() async throws {
        try await withListener { listener in
            Notifier().status("first\nsecond\r\nthird")
            #expect(try await listener.waitFor("STATUS=") == "STATUS=first second third")
            Notifier().status(String(repeating: "x", count: 5000))
            let long = try await listener.waitFor("STATUS=x")
            #expect(long.utf8.count < 1100)
            #expect(long.hasSuffix("…"))
        }
    }

    @Test func watchdogIntervalFollowsWatchdogUSECForThisProcess() async throws {
        setenv("WATCHDOG_USEC", "2000000", 1)
        defer { unsetenv("WATCHDOG_USEC") }
        #expect(Notifier().watchdogInterval() == .seconds(2))
        // A WATCHDOG_PID naming another process means the watchdog is not ours.
        setenv("WATCHDOG_PID", "1", 1)
        defer { unsetenv("WATCHDOG_PID") }
        #expect(Notifier().watchdogInterval() == nil)
    }

    @Test func silentWithoutNotifySocket() {
        unsetenv("NOTIFY_SOCKET")
        #expect(!Notifier().isConnected)
        Notifier().ready(status: "nobody listens")  // must not crash or block
    }
}
