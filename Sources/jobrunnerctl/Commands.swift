import JobRunnerAPI
import ArgumentParser
import Foundation
import JobRunnerConfig
import JobRunnerSchedule

// MARK: - runs

struct Runs: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List runs, newest first: live ones and the history.")
    @OptionGroup var local: ConnectionOptions
    @ParentCommand var root: JobRunnerCtl
    var connection: ConnectionOptions { local.merged(with: root.global) }
    @Argument(help: "Only this job's runs.") var job: String?
    @Option(name: .long, help: "How many.") var limit = 20
    @Flag(name: .long, help: "Only runs that did not succeed (failed, timed out, signalled, spawn failed, interrupted).") var failed = false
    @Option(name: .long, help: "Runs before this run id (paging).") var before: String?

    func run() async throws {
        do {
            var query = ["limit=\(failed ? max(limit * 10, 200) : limit)"]
            if let job { query.append("job=\(job.urlQueryEscaped)") }
            if let before { query.append("before=\(before.urlQueryEscaped)") }
            var runs = try await connection.client.get("/v1/runs?" + query.joined(separator: "&"), as: RunsResponse.self).runs
            if failed {
                let bad: Set<String> = ["failed", "timed_out", "signalled", "spawn_failed", "interrupted"]
                runs = Array(runs.filter { bad.contains($0.outcome ?? "") }.prefix(limit))
            }
            if connection.json {
                try printJSON(RunsResponse(runs: runs))
            } else {
                print(Render.runs(runs, now: Date(), colors: Colors.forStandardOutput), terminator: "")
            }
        } catch let error as ControlClientError {
            CLIError(error).exit()
        }
    }
}

// MARK: - logs

struct Logs: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show a run's output (a job's latest run), and with -f follow it live.")
    @OptionGroup var local: ConnectionOptions
    @ParentCommand var root: JobRunnerCtl
    var connection: ConnectionOptions { local.merged(with: root.global) }
    @Argument(help: "A run id, or a job name for its latest run.") var target: String
    @Flag(name: [.customShort("f"), .long], help: "Keep printing until the run ends.") var follow = false

    func run() async throws {
        let client = connection.client
        var runID = target
        if (try? await client.get("/v1/runs/\(target.urlPathEscaped)", as: RunDetail.self)) == nil {
            let latest: [RunInfo]
            do {
                latest = try await client.get("/v1/runs?job=\(target.urlQueryEscaped)&limit=1", as: RunsResponse.self).runs
            } catch {
                CLIError(error).exit()
            }
            guard let run = latest.first else { CLIError(message: "no run or job named '\(target)'").exit() }
            runID = run.id
        }
        let json = connection.json
        let colors = Colors.forStandardOutput
        let path = "/v1/runs/\(runID.urlPathEscaped)/output" + (follow ? "?follow=true" : "")
        do {
            _ = try await client.streamLines(path) { text in Self.emit(text, json: json, colors: colors) }
        } catch {
            CLIError(error).exit()
        }
    }

    /// Written straight to the descriptor: a follower piped to another program sees each line as
    /// it comes, not when a buffer fills.
    static func emit(_ text: String, json: Bool, colors: Colors) {
        if json {
            FileHandle.standardOutput.write(Data((text + "\n").utf8))
        } else if let line = try? APICoding.decoder().decode(OutputLineInfo.self, from: Data(text.utf8)) {
            FileHandle.standardOutput.write(Data(((line.stream == "stderr" ? colors.dim(line.text) : line.text) + "\n").utf8))
        } else if let gap = try? APICoding.decoder().decode(DroppedLinesInfo.self, from: Data(text.utf8)) {
            FileHandle.standardError.write(Data("jobrunnerctl: \(gap.dropped) line\(gap.dropped == 1 ? "" : "s") not shown (this client fell behind the run's output)\n".utf8))
        }
    }
}

// MARK: - run

struct RunJob: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run a job now (its overlap policy and limits apply).",
        discussion: "With --wait the exit status mirrors the run: 0 succeeded, 1 failed, 124 timed out, 130 cancelled, 75 skipped."
    )
    @OptionGroup var local: ConnectionOptions
    @ParentCommand var root: JobRunnerCtl
    var connection: ConnectionOptions { local.merged(with: root.global) }
    @Argument(help: "The job's name.") var job: String
    @Flag(name: .long, help: "Wait for the run to end and exit with its outcome.") var wait = false
    @Option(name: .long, help: "In a cluster: the node to run it on (default: the node answering).") var node: String?

    func run() async throws {
        let run: RunInfo
        var query: [String] = []
        if wait { query.append("wait=true") }
        if let node { query.append("node=\(node.urlQueryEscaped)") }
        do {
            run = try await connection.client.request(.post, "/v1/jobs/\(job.urlPathEscaped)/run" + (query.isEmpty ? "" : "?" + query.joined(separator: "&")))
                .decode(RunInfo.self)
        } catch {
            CLIError(error).exit()
        }
        if connection.json {
            try printJSON(run)
        } else if wait {
            print(Render.runLine(run, colors: Colors.forStandardOutput))
        } else {
            print("started \(run.job): run \(run.id) (\(run.state))" + (run.node.map { " on node \($0)" } ?? ""))
        }
        guard wait else { return }
        throw ExitCode(Self.exitCode(for: run.outcome))
    }

    static func exitCode(for outcome: String?) -> Int32 {
        switch outcome {
        case "succeeded": 0
        case "timed_out": 124
        case "cancelled": 130
        case "skipped": 75
        default: 1
        }
    }
}

// MARK: - cancel, pause, resume, reload

struct Cancel: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Cancel a run with its job's kill sequence (or drop it if it is waiting).")
    @OptionGroup var local: ConnectionOptions
    @ParentCommand var root: JobRunnerCtl
    var connection: ConnectionOptions { local.merged(with: root.global) }
    @Argument(help: "The run id.") var run: String

    func run() async throws {
        do {
            let response = try await connection.client.request(.post, "/v1/runs/\(run.urlPathEscaped)/cancel").decode(CancelResponse.self)
            if connection.json { try printJSON(response) } else {
                print(response.result == "stopping" ? "stopping run \(response.run.id) of \(response.run.job)"
                                                      : "dropped run \(response.run.id) of \(response.run.job) (it had not started)")
            }
        } catch let error as ControlClientError {
            CLIError(error).exit()
        }
    }
}

struct Pause: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Pause a job: its fires are skipped until resumed (kept across restarts).")
    @OptionGroup var local: ConnectionOptions
    @ParentCommand var root: JobRunnerCtl
    var connection: ConnectionOptions { local.merged(with: root.global) }
    @Argument(help: "The job's name.") var job: String

    func run() async throws { try await setPaused(connection, job, action: "pause") }
}

struct Resume: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Resume a paused job.")
    @OptionGroup var local: ConnectionOptions
    @ParentCommand var root: JobRunnerCtl
    var connection: ConnectionOptions { local.merged(with: root.global) }
    @Argument(help: "The job's name.") var job: String

    func run() async throws { try await setPaused(connection, job, action: "resume") }
}

private func setPaused(_ connection: ConnectionOptions, _ job: String, action: String) async throws {
    do {
        let info = try await connection.client.request(.post, "/v1/jobs/\(job.urlPathEscaped)/\(action)").decode(JobInfo.self)
        if connection.json { try printJSON(info) } else { print("\(info.name): \(info.state)") }
    } catch let error as ControlClientError {
        CLIError(error).exit()
    }
}

struct Reload: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Reload the daemon's configuration (as SIGHUP does) and show the result.")
    @OptionGroup var local: ConnectionOptions
    @ParentCommand var root: JobRunnerCtl
    var connection: ConnectionOptions { local.merged(with: root.global) }

    func run() async throws {
        let result: ReloadResult
        do {
            result = try await connection.client.request(.post, "/v1/reload").decode(ReloadResult.self)
        } catch {
            CLIError(error).exit()
        }
        if connection.json {
            try printJSON(result)
        } else if result.result == "ok" {
            func names(_ list: [String]) -> String { list.isEmpty ? "none" : list.joined(separator: ", ") }
            print("reloaded: generation \(result.generation); added \(names(result.added)); changed \(names(result.changed)); removed \(names(result.removed))")
        } else {
            FileHandle.standardError.write(Data(("reload failed, the daemon keeps its configuration:\n" + result.errors.joined(separator: "\n") + "\n").utf8))
        }
        if result.result != "ok" { throw ExitCode(78) }
    }
}

// MARK: - check-config

struct CheckConfig: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-config",
        abstract: "Validate a configuration file offline; print every error (exit 0 valid, 78 invalid)."
    )
    @Argument(help: "The file (default /etc/jobrunner/jobrunner.yaml).") var path = "/etc/jobrunner/jobrunner.yaml"

    func run() throws {
        do {
            let configuration = try ConfigLoader().load(path: path)
            print("\(path): OK, \(configuration.jobs.count) job\(configuration.jobs.count == 1 ? "" : "s")")
        } catch {
            FileHandle.standardError.write(Data((error.description + "\n").utf8))
            throw ExitCode(78)
        }
    }
}

// MARK: - Helpers

func printJSON(_ value: some Encodable) throws {
    print(String(decoding: try APICoding.encoder(pretty: true).encode(value), as: UTF8.self))
}

extension String {
    var urlPathEscaped: String { addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(["/"])) ?? self }
    var urlQueryEscaped: String { addingPercentEncoding(withAllowedCharacters: .urlQueryAllowed.subtracting(["&", "=", "+"])) ?? self }
}

/// ANSI colours for outcomes, only on a terminal and never with NO_COLOR.
struct Colors {
    let enabled: Bool

    static var forStandardOutput: Colors {
        Colors(enabled: isatty(1) == 1 && ProcessInfo.processInfo.environment["NO_COLOR"].map(\.isEmpty) != false)
    }

    func outcome(_ text: String) -> String {
        guard enabled else { return text }
        switch text.split(separator: "(").first.map(String.init) ?? text {
        case "succeeded": return "\u{1B}[32m\(text)\u{1B}[0m"
        case "failed", "timed_out", "signalled", "spawn_failed", "interrupted": return "\u{1B}[31m\(text)\u{1B}[0m"
        case "cancelled", "skipped": return "\u{1B}[33m\(text)\u{1B}[0m"
        case "running", "waiting": return "\u{1B}[34m\(text)\u{1B}[0m"
        default: return text
        }
    }

    /// Red: something an operator must look at.
    func alert(_ text: String) -> String {
        enabled ? "\u{1B}[31m\(text)\u{1B}[0m" : text
    }

    func dim(_ text: String) -> String {
        enabled ? "\u{1B}[2m\(text)\u{1B}[0m" : text
    }
}
