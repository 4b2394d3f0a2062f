import JobRunnerAPI
import ArgumentParser
import Foundation
import JobRunnerCLI
import JobRunnerConfig
import JobRunnerSchedule

// MARK: - runs

/// `--since` and `--until`, as `runs` and `logs` take them.
struct TimeRange: ParsableArguments {
    @Option(name: .long, help: "Only runs that started at or after this: RFC 3339, a local '2026-12-01 03:00', today, yesterday, or a duration ago (1h, 2d).")
    var since: String?
    @Option(name: .long, help: "Only runs that started before this (same forms as --since).")
    var until: String?

    func validate() throws {
        for (name, value) in [("since", since), ("until", until)] {
            guard let value else { continue }
            do {
                _ = try TimeSpec.parse(value, now: Render.timestamp(Date()), zone: localZone())
            } catch {
                throw ValidationError("--\(name): \(error.message)")
            }
        }
    }

    /// The query parameters, as RFC 3339 instants (read by ``validate()`` already).
    func query() -> [String] {
        let now = Render.timestamp(Date())
        let zone = localZone()
        return [("since", since), ("until", until)].compactMap { name, value in
            value.flatMap { try? TimeSpec.parse($0, now: now, zone: zone) }.map { "\(name)=\($0.description.urlQueryEscaped)" }
        }
    }

    var isEmpty: Bool { since == nil && until == nil }
}

struct Runs: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List runs, newest first: live ones and the history, with what each cost.")
    @OptionGroup var local: ConnectionOptions
    @ParentCommand var root: JobRunnerCtl
    var connection: ConnectionOptions { local.merged(with: root.global) }
    @Argument(help: "Only this job's runs.") var job: String?
    @Option(name: .long, help: "How many.") var limit = 20
    @Flag(name: .long, help: "Only runs that did not succeed (failed, timed out, signalled, spawn failed, interrupted).") var failed = false
    @Option(name: .long, help: "Runs before this run id (paging).") var before: String?
    @OptionGroup var range: TimeRange

    func run() async throws {
        do {
            var query = ["limit=\(failed ? max(limit * 10, 200) : limit)"] + range.query()
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
    static let configuration = CommandConfiguration(
        abstract: "Show a run's output (a job's latest run) with a header line; -f follows it, or every run's output without a target.",
        discussion: """
            TARGET is a run id, a unique abbreviation of one (at least 4 of its first or last characters, as \
            `runs` and the log show them), or a job name for its latest run. With --since/--until and a job \
            (or no target), the output of every run in that time, oldest first.
            """
    )
    @OptionGroup var local: ConnectionOptions
    @ParentCommand var root: JobRunnerCtl
    var connection: ConnectionOptions { local.merged(with: root.global) }
    @Argument(help: "A run id (or unique abbreviation), or a job name.") var target: String?
    @Flag(name: [.customShort("f"), .long], help: "Keep printing until the run ends (without a target: every run's output, until interrupted).")
    var follow = false
    @Flag(name: [.customShort("t"), .long], help: "Print when the daemon read each line.") var timestamps = false
    @Flag(name: .long, help: "Leave out the header line.") var noHeader = false
    @OptionGroup var range: TimeRange

    func validate() throws {
        if follow && !range.isEmpty { throw ValidationError("--follow and --since/--until exclude each other") }
        if target == nil && !follow && range.isEmpty { throw ValidationError("give a run or job, -f to follow every run, or --since/--until") }
    }

    func run() async throws {
        let client = connection.client
        let colors = Colors.forStandardOutput
        let (json, timestamps) = (connection.json, timestamps)
        guard let target else {
            if follow {
                do {
                    _ = try await client.streamLines("/v1/output?follow=true") { text in
                        Self.emit(text, json: json, timestamps: timestamps, colors: colors)
                    }
                } catch {
                    CLIError(error).exit()
                }
            } else {
                await printRuns(query: range.query(), client: client, colors: colors)
            }
            return
        }
        let isJob = Self.isWholeRunID(target) ? false : (try? await client.get("/v1/jobs/\(target.urlPathEscaped)", as: JobInfo.self)) != nil
        if isJob && !range.isEmpty {
            await printRuns(query: range.query() + ["job=\(target.urlQueryEscaped)"], client: client, colors: colors)
            return
        }
        let run: RunInfo
        do {
            if isJob {
                // The newest run that started (a fire waiting for its slot has printed nothing).
                let recent = try await client.get("/v1/runs?job=\(target.urlQueryEscaped)&limit=20", as: RunsResponse.self).runs
                guard let latest = recent.first(where: { $0.startedAt != nil }) ?? recent.first else {
                    CLIError(message: "job '\(target)' has not run yet (jobrunnerctl show \(target) says when it fires next)").exit()
                }
                run = latest
            } else {
                run = try await client.get("/v1/runs/\(target.urlPathEscaped)", as: RunDetail.self).run
            }
        } catch {
            if case .api(status: 404, code: _) = error.kind {
                CLIError(message: "no run or job named '\(target)'").exit()
            }
            CLIError(error).exit()
        }
        if !noHeader && !json { writeOut(Render.logHeader(run, now: Date()) + "\n" + (run.steps.map { Render.stepTree($0, indent: "   ") } ?? "")) }
        let path = "/v1/runs/\(run.id)/output" + (follow ? "?follow=true" : "")
        do {
            _ = try await client.streamLines(path) { text in Self.emit(text, json: json, timestamps: timestamps, colors: colors) }
        } catch {
            CLIError(error).exit()
        }
    }

    /// Each run in the range, oldest first, with its header.
    private func printRuns(query: [String], client: ControlClient, colors: Colors) async {
        let runs: [RunInfo]
        do {
            runs = try await client.get("/v1/runs?" + (query + ["limit=1000"]).joined(separator: "&"), as: RunsResponse.self).runs
        } catch {
            CLIError(error).exit()
        }
        if runs.isEmpty { FileHandle.standardError.write(Data("jobrunnerctl: no runs in that time\n".utf8)) }
        let (json, timestamps) = (connection.json, timestamps)
        var failure: ControlClientError?
        for run in runs.reversed() {
            if !noHeader && !json { writeOut(Render.logHeader(run, now: Date()) + "\n" + (run.steps.map { Render.stepTree($0, indent: "   ") } ?? "")) }
            do {
                _ = try await client.streamLines("/v1/runs/\(run.id)/output") { text in
                    Self.emit(text, json: json, timestamps: timestamps, colors: colors)
                }
            } catch {
                FileHandle.standardError.write(Data("jobrunnerctl: run \(run.id): \(error.message)\n".utf8))
                failure = error
            }
        }
        if let failure { CLIError(failure).exit() }
    }

    /// Whether `text` is a whole run id (26 characters of the id alphabet): then it is no job.
    static func isWholeRunID(_ text: String) -> Bool {
        text.utf8.count == 26 && text.lowercased().allSatisfy { "0123456789abcdefghjkmnpqrstvwxyz".contains($0) }
    }

    /// Written straight to the descriptor: a follower piped to another program sees each line as
    /// it comes, not when a buffer fills.
    static func emit(_ text: String, json: Bool, timestamps: Bool, colors: Colors) {
        // An empty line only says the stream is alive.
        guard !text.isEmpty else { return }
        if json {
            writeOut(text + "\n")
        } else if let line = try? APICoding.decoder().decode(OutputLineInfo.self, from: Data(text.utf8)) {
            writeOut(Render.outputLine(line, timestamps: timestamps, colors: colors) + "\n")
        } else if let gap = try? APICoding.decoder().decode(DroppedLinesInfo.self, from: Data(text.utf8)) {
            FileHandle.standardError.write(Data("jobrunnerctl: \(gap.dropped) line\(gap.dropped == 1 ? "" : "s") not shown (this client fell behind the output)\n".utf8))
        }
    }
}

// MARK: - run

struct RunJob: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run a job now (its overlap policy and limits apply).",
        discussion: """
            With --wait the exit status mirrors the fire's final outcome, after its retries: 0 succeeded, 1 failed, \
            124 timed out, 130 cancelled, 75 skipped. --first-attempt stops waiting when the first attempt ends.
            """
    )
    @OptionGroup var local: ConnectionOptions
    @ParentCommand var root: JobRunnerCtl
    var connection: ConnectionOptions { local.merged(with: root.global) }
    @Argument(help: "The job's name.") var job: String
    @Flag(name: .long, help: "Wait for the fire's final outcome (retries included) and exit with it.") var wait = false
    @Flag(name: .long, help: "With --wait: stop waiting when the first attempt ends, even if a retry follows.") var firstAttempt = false
    @Option(name: .long, help: "In a cluster: the node to run it on (default: the node answering).") var node: String?

    func run() async throws {
        let run: RunInfo
        var query: [String] = []
        if wait { query.append(firstAttempt ? "wait=first" : "wait=true") }
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
    @Argument(help: "The run id (or a unique abbreviation of it).") var run: String

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
    @Argument(help: "The configuration file.") var path = "/etc/jobrunner/jobrunner.yaml"

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

/// Straight to standard output's descriptor (unbuffered, in order with what streams after it).
func writeOut(_ text: String) {
    FileHandle.standardOutput.write(Data(text.utf8))
}

/// The machine's zone, for local times and `--since yesterday`.
func localZone() -> TimeZoneRules {
    TimeZoneDatabase.system.systemZone()
}

func printJSON(_ value: some Encodable) throws {
    print(String(decoding: try APICoding.encoder(pretty: true).encode(value), as: UTF8.self))
}

extension String {
    var urlPathEscaped: String { addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(["/"])) ?? self }
    var urlQueryEscaped: String { addingPercentEncoding(withAllowedCharacters: .urlQueryAllowed.subtracting(["&", "=", "+"])) ?? self }
}
