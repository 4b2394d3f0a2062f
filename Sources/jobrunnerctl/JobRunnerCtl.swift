import JobRunnerAPI
import ArgumentParser
import Foundation
import JobRunnerCLI
import JobRunnerSchedule

@main
struct JobRunnerCtl: AsyncParsableCommand {
    /// `jobrunnerctl --socket S --json status` as well as `jobrunnerctl status --socket S --json`.
    @OptionGroup var global: ConnectionOptions

    static let configuration = CommandConfiguration(
        commandName: "jobrunnerctl",
        abstract: "Inspect and control a running jobrunnerd.",
        version: JobRunnerVersion.string,
        subcommands: [Status.self, Timers.self, Jobs.self, Show.self, Runs.self, Logs.self, RunJob.self, Cancel.self, Pause.self,
                      Resume.self, Reload.self, Next.self, CheckConfig.self]
    )
}

/// Options every command that talks to the daemon takes.
struct ConnectionOptions: ParsableArguments {
    @Option(name: .long, help: "Control socket (default: $JOBRUNNER_SOCKET or /run/jobrunner/jobrunner.sock).")
    var socket: String?

    @Flag(name: .long, help: "Print the API's JSON instead of a table.")
    var json = false

    /// These options, filled in from the ones given before the subcommand.
    func merged(with global: ConnectionOptions) -> ConnectionOptions {
        var merged = self
        merged.socket = socket ?? global.socket
        merged.json = json || global.json
        return merged
    }

    var socketPath: String {
        socket ?? ProcessInfo.processInfo.environment["JOBRUNNER_SOCKET"] ?? "/run/jobrunner/jobrunner.sock"
    }

    var client: ControlClient { ControlClient(socketPath: socketPath) }

    /// Fetches a GET endpoint; prints its JSON with `--json` and returns nil, else returns it decoded.
    func fetch<T: Codable>(_ path: String, as type: T.Type) async throws -> T? {
        let value: T
        do {
            value = try await client.get(path, as: type)
        } catch {
            throw CLIError(error)
        }
        if json {
            let data = try APICoding.encoder(pretty: true).encode(value)
            print(String(decoding: data, as: UTF8.self))
            return nil
        }
        return value
    }
}

/// An error that ends the command with a message on stderr and a status.
struct CLIError: Error, CustomStringConvertible {
    var message: String
    var code: Int32 = 1
    var description: String { message }

    /// Exit 69 (EX_UNAVAILABLE) when the daemon cannot be reached, 77 (EX_NOPERM) when it (or
    /// the socket's mode) refuses, 1 for any other error: scripts can tell "the daemon is down"
    /// from "the job failed" (`run --wait` exits 1).
    init(_ error: ControlClientError) {
        message = error.message
        switch error.kind {
        case .notRunning: code = 69
        case .permissionDenied: code = 77
        case .api(status: 403, code: _): code = 77
        case .api, .other: code = 1
        }
    }

    init(message: String, code: Int32 = 1) {
        self.message = message
        self.code = code
    }
}

extension CLIError {
    func exit() -> Never {
        FileHandle.standardError.write(Data("jobrunnerctl: \(message)\n".utf8))
        Foundation.exit(code)
    }
}

// MARK: - status

struct Status: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show the daemon's state: config, jobs, runs, next fire.")
    @OptionGroup var local: ConnectionOptions
    @ParentCommand var root: JobRunnerCtl
    var connection: ConnectionOptions { local.merged(with: root.global) }

    func run() async throws {
        do {
            guard let status = try await connection.fetch("/v1/status", as: StatusResponse.self) else { return }
            print(Render.status(status, now: Date(), colors: Colors.forStandardOutput))
        } catch let error as CLIError {
            error.exit()
        }
    }
}

// MARK: - timers, jobs

struct Timers: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List jobs by next fire, with when each last ran and how it ended (like systemctl list-timers).")
    @OptionGroup var local: ConnectionOptions
    @ParentCommand var root: JobRunnerCtl
    var connection: ConnectionOptions { local.merged(with: root.global) }
    @Flag(name: .long, help: "Include manual-only and disabled jobs.") var all = false

    func run() async throws {
        do {
            guard let response = try await connection.fetch("/v1/jobs", as: JobsResponse.self) else { return }
            print(Render.timers(response.jobs, now: Date(), zone: localZone(), all: all,
                                colors: Colors.forStandardOutput), terminator: "")
        } catch let error as CLIError {
            error.exit()
        }
    }
}

struct Jobs: AsyncParsableCommand {
    enum Order: String, ExpressibleByArgument, CaseIterable {
        case config, name, next
    }

    static let configuration = CommandConfiguration(abstract: "List jobs with their schedule, next fire and last run.")
    @OptionGroup var local: ConnectionOptions
    @ParentCommand var root: JobRunnerCtl
    var connection: ConnectionOptions { local.merged(with: root.global) }
    @Option(name: .long, help: "Order: config (as defined), name, or next (next fire first).") var sort = Order.config

    func run() async throws {
        do {
            guard let response = try await connection.fetch("/v1/jobs", as: JobsResponse.self) else { return }
            let jobs = switch sort {
            case .config: response.jobs
            case .name: response.jobs.sorted { $0.name < $1.name }
            case .next: Render.sortedByNextFire(response.jobs)
            }
            print(Render.jobs(jobs, now: Date(), colors: Colors.forStandardOutput), terminator: "")
        } catch let error as CLIError {
            error.exit()
        }
    }
}

// MARK: - show

struct Show: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show one job: its whole definition, next fires, live runs and last runs with what they cost.")
    @OptionGroup var local: ConnectionOptions
    @ParentCommand var root: JobRunnerCtl
    var connection: ConnectionOptions { local.merged(with: root.global) }
    @Argument(help: "The job's name.") var job: String
    @Option(name: .long, help: "How many of the last runs.") var runs = 5

    func run() async throws {
        let client = connection.client
        let info: JobInfo
        do {
            info = try await client.get("/v1/jobs/\(job.urlPathEscaped)", as: JobInfo.self)
        } catch {
            CLIError(error).exit()
        }
        if connection.json {
            try printJSON(info)
            return
        }
        let next = info.schedule == nil ? nil : try? await client.get("/v1/jobs/\(job.urlPathEscaped)/next?count=5", as: NextResponse.self)
        let recent = (try? await client.get("/v1/runs?job=\(job.urlQueryEscaped)&limit=\(max(1, min(runs, 1000)))", as: RunsResponse.self).runs) ?? []
        print(Render.job(info, next: next, recent: recent.filter { $0.state == "finished" }, now: Date(), colors: Colors.forStandardOutput),
              terminator: "")
    }
}
