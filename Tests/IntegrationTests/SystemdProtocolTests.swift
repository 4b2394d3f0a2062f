import Foundation
import JobRunnerAPI
import TestSupport
import Testing

/// What the daemon tells systemd, read from a real datagram socket standing in for
/// `NOTIFY_SOCKET`, and a control socket passed the way systemd passes it. (The same behaviour
/// under a real systemd is `Tests/EndToEnd/systemd-e2e.sh`.)
@Suite(.timeLimit(.minutes(1))) struct SystemdProtocolTests {
    @Test func watchdogBeatsComeAtHalfTheInterval() async throws {
        let daemon = try DaemonHarness(config: """
            jobs:
              idle:
                command: ["/bin/true"]
                schedule: "@yearly"
            """, environment: ["WATCHDOG_USEC": "400000"])
        defer { daemon.cleanUp() }
        try await daemon.waitUntilReady()
        let enabled = try await daemon.sawLog("systemd watchdog enabled")
        #expect(DaemonHarness.field("interval", in: enabled) == "0.4", "the interval in seconds: \(enabled)")
        // An idle scheduler (next fire a year away) still beats, every 200 ms (half the
        // interval). Timed by when the listener's thread received each beat: the mean period
        // over 20 beats must be within 25 % of 200 ms.
        var beats: [ContinuousClock.Instant] = []
        while beats.count < 21 {
            let beat = try await daemon.notify.arrivals.first(within: .seconds(10), "a watchdog beat") { $0.text.contains("WATCHDOG=1") }
            beats.append(beat.at)
        }
        // The first beat may have queued while READY was awaited: time the 20 after it.
        let period = (beats.last! - beats[1]) / 19
        #expect(period >= .milliseconds(150) && period <= .milliseconds(250), "mean beat period \(period), not 200ms ± 25 %")
    }

    @Test func noWatchdogBeatsWithoutWatchdogUSEC() async throws {
        let daemon = try DaemonHarness(config: """
            jobs:
              tick:
                shell: "true"
                schedule: "* * * * * *"
            """)
        defer { daemon.cleanUp() }
        try await daemon.waitUntilReady()
        try await daemon.waitForLog("run finished", "job=tick")
        try await daemon.waitForLog("run finished", "job=tick")
        #expect(!daemon.notify.messages.all.contains { $0.contains("WATCHDOG=1") })
    }

    @Test func drainingAsksForMoreTimeAndSaysWhatItWaitsFor() async throws {
        let daemon = try DaemonHarness(config: """
            daemon:
              shutdown_grace: 3s
            jobs:
              long:
                shell: "sleep 300"
                schedule: "@reboot"
                kill_grace: 7s
            """)
        defer { daemon.cleanUp() }
        try await daemon.waitForLog("run started", "job=long")
        daemon.signal(SIGTERM)
        _ = try await daemon.notify.waitFor("STOPPING=1")
        // Order-free: the extension and the status line come from different services.
        _ = try await daemon.notify.messages.seen(within: .seconds(10), "status line") { $0.contains("STATUS=stopping: waiting for 1 run") }
        let extend = try await daemon.notify.messages.seen(within: .seconds(10), "extension") { $0.contains("EXTEND_TIMEOUT_USEC=") }
        let microseconds = Int(extend.split(separator: "=").last.map(String.init) ?? "") ?? 0
        // The rest of shutdown_grace (≤ 3s) + the longest kill_grace (7s) + a 10s margin.
        #expect((17_000_000...20_000_000).contains(microseconds), "\(extend)")
        #expect(try await daemon.waitForExit() == 0)
    }

    @Test func servesTheControlAPIOnASocketPassedBySystemd() async throws {
        let directory = TemporaryDirectory("jobrunner-activation")
        defer { directory.remove() }
        let socket = directory.file("activated.sock")
        let config = directory.write("jobrunner.yaml", """
            jobs:
              hello:
                shell: "echo hello"
                schedule: "@daily"
            """)
        // systemd-socket-activate listens on the path and passes the socket exactly as a
        // .socket unit with FileDescriptorName=control would, starting the daemon on the
        // first connection.
        let activator = try ChildProcess("/usr/bin/systemd-socket-activate", [
            "-l", socket, "--fdname=control",
            productsDirectory + "/jobrunnerd", "--config", config, "--state-directory", directory.file("state"),
            "--socket", directory.file("unused.sock"), "--runtime-directory", directory.file("run"), "--log-format", "text",
        ])
        defer { activator.kill() }
        _ = try await activator.lines.first(within: .seconds(10), "listening line") { $0.contains("Listening on") }
        let status = try await ControlClient(socketPath: socket).get("/v1/status", as: StatusResponse.self)
        #expect(status.jobs == 1)
        _ = try await activator.lines.seen(within: .seconds(5), "activation log line") {
            $0.contains("serving the control API on the socket passed by systemd") && $0.contains("name=control")
        }
        // The configured path was not bound: the passed socket is the control socket.
        #expect(!FileManager.default.fileExists(atPath: directory.file("unused.sock")))
    }
}
