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
    public var peakResidentBytes: Int? { ProcessTable.statusField("VmHWM", of: pid) }

    /// The daemon's resident memory now (VmRSS), in bytes.
    public var residentBytes: Int? { ProcessTable.residentBytes(of: pid) }
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
        if !keepDirectory {
            // A daemon killed here leaves its runs behind (as after a crash): they are found by
            // their notify socket, named after the daemon's pid, and killed.
            for process in Self.runsStarted(by: pid) { Foundation.kill(process.pid, SIGKILL) }
            directory.remove()
        }
    }

    /// Live processes of runs the daemon `pid` started (their `NOTIFY_SOCKET` names it).
    public static func runsStarted(by pid: Int32) -> [ProcessEntry] {
        ProcessTable.all().filter { entry in
            !entry.isZombie && ProcessTable.environment(of: entry.pid)?["NOTIFY_SOCKET"]?.hasPrefix("@jobrunner/\(pid)/") == true
        }
    }

    /// The history database.
    public var databasePath: String { stateDirectory + "/state.sqlite" }

    /// The daemon's open descriptors now.
    public var descriptorCount: Int? { ProcessTable.descriptors(of: pid)?.count }

    /// The value of `key=` in a text log line (unquoted), e.g. `run_id`.
    public static func field(_ key: String, in line: String) -> String? {
        guard let range = line.range(of: " \(key)=") else { return nil }
        var rest = line[range.upperBound...]
        if rest.hasPrefix("\"") {
            rest = rest.dropFirst()
            var value = ""
            var escaped = false
            for character in rest {
                if escaped {
                    value.append(character)
                    escaped = false
                } else if character == "\\" {
                    escaped = true
                } else if character == "\"" {
                    return value
                } else {
                    value.append(character)
                }
            }
            return value
        }
        return String(rest.prefix { $0 != " " })
    }

    /// The `run_id` and `pid` of the first "run started" line of `job`.
    public func started(_ job: String, within timeout: Duration = .seconds(20)) async throws -> (runID: String, pid: Int32) {
        let line = try await waitForLog("run started", "job=\(job)", within: timeout)
        guard let id = Self.field("run_id", in: line), let pid = Self.field("pid", in: line).flatMap(Int32.init) else {
            throw TimeoutError("no run_id or pid in: \(line)")
        }
        return (id, pid)
    }
}
