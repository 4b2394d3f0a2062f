import Foundation

/// A private PostgreSQL server for one test: `initdb` + `pg_ctl` in a temporary directory,
/// listening only on a unix socket there, run as an unprivileged user (`nobody` when the tests
/// run as root). `stop()` removes everything; use `withPostgresServer` so that happens even
/// when the test fails.
public final class PostgresServer: Sendable {
    public let directory: String
    public let database = "jobrunner"
    public let user = "jobrunner"
    let binaries: String
    let owner: String?

    /// The server's tools (the newest installed major version).
    public static var binaries: String? {
        let root = "/usr/lib/postgresql"
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).compactMap(Int.init).sorted()
        return versions.last.map { "\(root)/\($0)/bin" }
    }

    public init() async throws {
        guard let binaries = Self.binaries else {
            throw TimeoutError("PostgreSQL is not installed (make test installs it: apt-get install postgresql)")
        }
        self.binaries = binaries
        owner = getuid() == 0 ? "nobody" : nil
        directory = TemporaryDirectory("jobrunner-pg").path
        if let owner {
            try await Self.check(ChildProcess.run("/bin/chown", [owner, directory]), "chown")
        }
        chmod(directory, 0o700)
        try await Self.check(run("\(binaries)/initdb", ["-D", directory + "/data", "-U", user, "--auth=trust", "-E", "UTF8",
                                                      "--locale=C.UTF-8", "--no-sync"]), "initdb")
        try await start()
        try await Self.check(run("\(binaries)/psql", ["-h", directory, "-U", user, "-d", "postgres", "-v", "ON_ERROR_STOP=1",
                                                    "-c", "CREATE DATABASE \(database)"]), "create database")
    }

    /// The URL daemons use (the socket directory percent-encoded as the host).
    public var url: String {
        "postgresql://\(user)@\(directory.replacingOccurrences(of: "/", with: "%2F"))/\(database)"
    }

    public func start() async throws {
        try await Self.check(run("\(binaries)/pg_ctl", [
            "-D", directory + "/data", "-l", directory + "/server.log", "-w", "-t", "30",
            "-o", "-k \(directory) -c listen_addresses='' -c fsync=off -c max_connections=200",
            "start",
        ]), "pg_ctl start")
    }

    /// Stops the server at once (connections are dropped, as in a crash of the server).
    public func stopServer() async throws {
        try await Self.check(run("\(binaries)/pg_ctl", ["-D", directory + "/data", "-m", "immediate", "-w", "stop"]), "pg_ctl stop")
    }

    /// Stops the server and removes its directory.
    public func stop() async {
        _ = try? await run("\(binaries)/pg_ctl", ["-D", directory + "/data", "-m", "immediate", "-w", "stop"])
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Runs `sql` with psql (as the daemon's role, or `role`); every row, columns split on tabs.
    public func query(_ sql: String, as role: String? = nil) async throws -> [[String]] {
        let result = try await run("\(binaries)/psql", ["-h", directory, "-U", role ?? user, "-d", database, "-v", "ON_ERROR_STOP=1",
                                                      "-At", "-F", "\t", "-c", sql])
        try Self.check(result, "psql \(sql)")
        return result.output.split(separator: "\n", omittingEmptySubsequences: true).map {
            $0.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
        }
    }

    private func run(_ tool: String, _ arguments: [String]) async throws -> (status: Int32, output: String) {
        if let owner {
            return try await ChildProcess.run("/usr/sbin/runuser", ["-u", owner, "--", tool] + arguments, within: .seconds(60))
        }
        return try await ChildProcess.run(tool, arguments, within: .seconds(60))
    }

    private static func check(_ result: (status: Int32, output: String), _ what: String) throws {
        guard result.status == 0 else { throw TimeoutError("\(what) failed (\(result.status)): \(result.output)") }
    }
}

/// Runs `body` with a fresh private server, stopped and removed afterwards whatever happens.
public func withPostgresServer<T>(_ body: (PostgresServer) async throws -> T) async throws -> T {
    let server = try await PostgresServer()
    do {
        let result = try await body(server)
        await server.stop()
        return result
    } catch {
        await server.stop()
        throw error
    }
}
