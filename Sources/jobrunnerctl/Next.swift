import JobRunnerAPI
import ArgumentParser
import Foundation
import JobRunnerCLI
import JobRunnerSchedule

/// `jobrunnerctl next`: when a schedule fires. Offline for an expression (no daemon needed),
/// like `systemd-analyze calendar`; from the daemon for `--job`.
struct Next: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the next fire times of a schedule expression (offline) or of a job (--job).",
        discussion: """
            EXPRESSION is a cron expression or macro (0 3 * * *, @daily, @every 90s), an interval (90s, every 5m) \
            or a systemd calendar event (Mon..Fri 02:00, *-*-01 00:00:00 Europe/Berlin); the kind is detected \
            unless --cron or --calendar says.
            """
    )

    @Argument(help: "The schedule expression (omit with --job).")
    var expression: String?

    @Option(name: .long, help: "Ask the daemon about this job instead.")
    var job: String?

    @Option(name: .long, help: "How many fire times.")
    var count = 5

    @Option(name: .long, help: "Start after this instant (RFC 3339; default: now).")
    var from: String?

    @Option(name: .long, help: "Zone to compute in (IANA name; default: the system's).")
    var timeZone: String?

    @Flag(name: .long, help: "Read the expression as cron.")
    var cron = false

    @Flag(name: .long, help: "Read the expression as a systemd calendar event.")
    var calendar = false

    @Flag(name: .long, help: .hidden)
    var batch = false

    @OptionGroup var local: ConnectionOptions
    @ParentCommand var root: JobRunnerCtl
    var connection: ConnectionOptions { local.merged(with: root.global) }

    func validate() throws {
        if cron && calendar { throw ValidationError("--cron and --calendar exclude each other") }
        if !batch && (expression == nil) == (job == nil) { throw ValidationError("give an EXPRESSION or --job JOB") }
        if count < 1 || count > 1000 { throw ValidationError("--count must be 1–1000") }
    }

    func run() async throws {
        if batch {
            Self.runBatch()
            return
        }
        if let job {
            do {
                let path = "/v1/jobs/\(job.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed) ?? job)/next?count=\(count)"
                guard let response = try await connection.fetch(path, as: NextResponse.self) else { return }
                print(Render.next(response, now: Date()), terminator: "")
            } catch let error as CLIError {
                error.exit()
            }
            return
        }
        let kind: ScheduleExpression.Kind = cron ? .cron : calendar ? .calendar : .auto
        switch Self.compute(expression!, kind: kind, from: from, timeZone: timeZone, count: count) {
        case .success(let response):
            if connection.json {
                let data = try APICoding.encoder(pretty: true).encode(response)
                print(String(decoding: data, as: UTF8.self))
            } else {
                print(Render.next(response, now: Date()), terminator: "")
            }
        case .failure(let error):
            CLIError(message: error.message, code: 2).exit()
        }
    }

    struct Failure: Error {
        var message: String
    }

    /// Computes fire times offline (reads the zone database: a blocking, synchronous call).
    static func compute(_ text: String, kind: ScheduleExpression.Kind, from: String?, timeZone: String?, count: Int) -> Result<NextResponse, Failure> {
        let zones = TimeZoneDatabase.system
        let zone: TimeZoneRules
        if let timeZone {
            do { zone = try zones.zone(named: timeZone) } catch { return .failure(Failure(message: error.message)) }
        } else {
            zone = zones.systemZone()
        }
        let start: Timestamp
        if let from {
            guard let parsed = Timestamp(rfc3339: from) else {
                return .failure(Failure(message: "--from '\(from)' is not an RFC 3339 time (e.g. 2026-03-29T01:30:00+01:00)"))
            }
            start = parsed
        } else {
            start = Timestamp(microseconds: Int64(Date().timeIntervalSince1970 * 1_000_000))
        }
        let expression: ScheduleExpression
        do {
            expression = try ScheduleExpression.parse(text, kind: kind, zones: zones)
        } catch {
            return .failure(Failure(message: error.message))
        }
        let effectiveZone = expression.ownZone ?? zone
        let times = expression.upcoming(after: start, in: effectiveZone, count: count)
        return .success(NextResponse(normalized: expression.normalized, timeZone: effectiveZone.identifier,
                                     next: times.map { effectiveZone.rfc3339($0) }))
    }

    /// One JSON query per input line, one JSON answer per output line: how the schedule oracle
    /// test asks thousands of questions without starting thousands of processes.
    static func runBatch() {
        struct Query: Decodable {
            var expression: String
            var kind: String?
            var from: String?
            var timeZone: String?
            var count: Int?
            enum CodingKeys: String, CodingKey {
                case expression, kind, from, count
                case timeZone = "time_zone"
            }
        }
        struct Answer: Encodable {
            var normalized: String?
            var timeZone: String?
            var next: [String]?
            var error: String?
            enum CodingKeys: String, CodingKey {
                case normalized, next, error
                case timeZone = "time_zone"
            }
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes]
        while let line = readLine() {
            var answer = Answer()
            if let query = try? JSONDecoder().decode(Query.self, from: Data(line.utf8)) {
                let kind = ScheduleExpression.Kind(rawValue: query.kind ?? "auto") ?? .auto
                switch compute(query.expression, kind: kind, from: query.from, timeZone: query.timeZone, count: query.count ?? 5) {
                case .success(let response):
                    answer.normalized = response.normalized
                    answer.timeZone = response.timeZone
                    answer.next = response.next
                case .failure(let failure):
                    answer.error = failure.message
                }
            } else {
                answer.error = "not a JSON query"
            }
            let data = (try? encoder.encode(answer)) ?? Data("{}".utf8)
            print(String(decoding: data, as: UTF8.self))
        }
    }
}
