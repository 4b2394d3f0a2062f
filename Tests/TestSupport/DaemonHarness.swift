import Foundation

/// A real `jobrunnerd` started from the built products, with a fake `NOTIFY_SOCKET`, its log
/// lines collected, and everything in a temporary directory.
public final class DaemonHarness: Sendable {
    public let directory: TemporaryDirectory
    public let configPath: String
    public let socketPath: String
    public let stateDirectory: String
    public let notify: NotifyListener
    /// Every line the daemon writes to stderr.
    public var log: EventQueue<String> { process.lines }
    private let process: ChildProcess

    /// Writes `config` and starts the daemon on it; with `directory`, in that directory (with
    /// whatever state an earlier daemon left there).
    public init(config: String, in existing: TemporaryDirectory? = nil, arguments: [String] = [], environment: [String: String] = [:],
                logLevel: String = "debug") throws {
        directory = existing ?? TemporaryDirectory("jobrunnerd")
        configPath = directory.write("jobrunner.yaml", config)
        stateDirectory = directory.file("state")
        socketPath = directory.file("jobrunner.sock")
        notify = NotifyListener(path: directory.file("notify.sock"))
        var env = ProcessInfo.processInfo.environment
        env["NOTIFY_SOCKET"] = notify.path
        for (key, value) in environment { env[key] = value }
        process = try ChildProcess(
            productsDirectory + "/jobrunnerd",
            ["--config", configPath, "--state-directory", stateDirectory, "--socket", socketPath,
             "--runtime-directory", directory.file("run"), "--log-format", "text", "--log-level", logLevel] + arguments,
            environment: env)
    }

    public var pid: Int32 { process.pid }

    /// The daemon's peak resident memory (VmHWM), in bytes.
    public var peakResidentBytes: Int? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
            let kilobytes = line.split(separator: " ").compactMap { Int($0) }.first
            return kilobytes.map { $0 * 1024 }
        }
        return nil
    }
    public var isRunning: Bool { process.isRunning }

    /// Rewrites the configuration file (then send SIGHUP to apply it).
    public func writeConfig(_ text: String) {
        directory.write("jobrunner.yaml", text)
    }

    public func signal(_ signal: Int32) {
        process.signal(signal)
    }

    /// Waits for READY=1 (the daemon is fully up).
    public func waitUntilReady(within timeout: Duration = .seconds(30)) async throws {
        _ = try await notify.waitFor("READY=1", within: timeout)
    }

    /// The first log line containing every one of `fragments`.
    @discardableResult
    public func waitForLog(_ fragments: String..., within timeout: Duration = .seconds(20)) async throws -> String {
        try await log.first(within: timeout, "log line with \(fragments)") { line in fragments.allSatisfy { line.contains($0) } }
    }

    /// A log line containing every one of `fragments`, printed at any time (order-free).
    @discardableResult
    public func sawLog(_ fragments: String..., within timeout: Duration = .seconds(20)) async throws -> String {
        try await log.seen(within: timeout, "log line with \(fragments)") { line in fragments.allSatisfy { line.contains($0) } }
    }

    /// Waits for the daemon to exit and returns its exit status.
    public func waitForExit(within timeout: Duration = .seconds(30)) async throws -> Int32 {
        try await process.waitForExit(within: timeout)
    }

    /// Kills the daemon if it still runs and removes its files (unless `keepDirectory`, for a
    /// daemon started again on the same state).
    public func cleanUp(keepDirectory: Bool = false) {
        process.kill()
        // Wait for it to be gone, so a daemon still starting cannot make its directories again
        // after they are removed.
        let deadline = ContinuousClock.now + .seconds(5)
        while process.isRunning, ContinuousClock.now < deadline { usleep(10_000) }
        notify.close()
        if !keepDirectory { directory.remove() }
    }

    /// The history database.
    public var databasePath: String { stateDirectory + "/state.sqlite" }
}
