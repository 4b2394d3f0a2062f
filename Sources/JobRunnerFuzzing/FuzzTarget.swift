import JobRunnerCLI
import JobRunnerConfig
import JobRunnerCore
import JobRunnerSchedule

/// The parsers that read text from outside the daemon, each with the properties its result must
/// have. `make fuzz` drives them with libFuzzer (`Fuzz/`); the unit tests replay the corpus of
/// inputs that once broke something (`Tests/Fuzz/regressions/<target>/`). A violated property
/// traps, so the fuzzer reports it as a crash with the input that caused it.
public enum FuzzTarget: String, CaseIterable, Sendable {
    /// Bytes → `Configuration` or errors, each with a position inside the text.
    case config
    /// `schedule:` values: cron expressions, macros, `@every`.
    case cron
    /// `on_calendar:` values: systemd calendar events.
    case calendar
    /// `jobrunnerctl next` and the API: any schedule text, detected.
    case schedule
    /// Durations (`timeout:`, `every:`, `retry.delay:` …).
    case duration
    /// Sizes (`max_output:`, limits).
    case size
    /// Datagrams a job sends on its `NOTIFY_SOCKET`.
    case notify
    /// Commands between cluster nodes, as read from the database.
    case clusterCommand = "cluster-command"
    /// `cluster.database:` URLs.
    case postgresURL = "postgres-url"
    /// `jobrunnerctl runs/logs --since/--until` values.
    case timeSpec = "time-spec"

    /// An instant well inside every zone's rules, to search schedules from.
    static let origin = Timestamp(microseconds: 1_764_590_400_000_000)

    /// Runs one input; traps when a property does not hold.
    @available(*, noasync, message: "may read the zone database")
    public func run(_ bytes: some Collection<UInt8>) {
        switch self {
        case .notify:
            Self.checkNotify(NotifyMessage.parse(bytes))
            return
        default: break
        }
        let text = String(decoding: bytes, as: UTF8.self)
        switch self {
        case .config: Self.checkConfig(text)
        case .cron: Self.checkCron(text)
        case .calendar: Self.checkCalendar(text)
        case .schedule: Self.checkSchedule(text)
        case .duration: Self.checkDuration(text)
        case .size: _ = try? SizeText.parse(text)
        case .notify: break
        case .clusterCommand: Self.checkClusterCommand(text)
        case .postgresURL: Self.checkPostgresURL(text)
        case .timeSpec: Self.checkTimeSpec(text)
        }
    }

    static func checkTimeSpec(_ text: String) {
        guard let instant = try? TimeSpec.parse(text, now: origin, zone: .utc) else { return }
        // A duration is always ago, and no text names an instant its RFC 3339 form cannot carry.
        if (try? DurationText.parse(text)) != nil { precondition(instant <= origin, "'\(text)' is not in the past") }
        precondition(Timestamp(rfc3339: instant.description) == instant, "'\(text)' gave \(instant), which does not read back")
    }

    static func checkConfig(_ text: String) {
        // `include:` reads other files of the machine; the fuzzer stays inside its input.
        guard !text.contains("include") else { return }
        let path = "/nonexistent/fuzz.yaml"
        // Read again on two threads (chunks of one job, the second thread from the second job
        // on): the same jobs, or the same errors.
        let twoThreads = Result { () throws(ConfigErrors) in try ConfigLoader(readThreads: 2, parallelReadFrom: 2).parse(text, path: path) }
        do {
            let configuration = try ConfigLoader().parse(text, path: path)
            guard case .success(let again) = twoThreads, again.jobs == configuration.jobs, again.contentHash == configuration.contentHash else {
                preconditionFailure("read on two threads, the file gave \(twoThreads) instead of \(configuration.jobs.count) jobs")
            }
            for job in configuration.jobs {
                if case .cron(let expression) = job.trigger, let next = expression.next(after: origin, in: .utc) {
                    precondition(next > origin, "cron next \(next) not after \(origin)")
                }
                if case .calendar(let events) = job.trigger {
                    for event in events {
                        if let next = event.next(after: origin, in: .utc) { precondition(next > origin, "calendar next not after origin") }
                    }
                }
            }
        } catch {
            guard case .failure(let again) = twoThreads, again.errors == error.errors else {
                preconditionFailure("read on two threads, the file gave \(twoThreads) instead of \(error.errors)")
            }
            precondition(!error.errors.isEmpty, "a refused file names no error")
            for problem in error.errors {
                precondition(problem.location.line >= 1 && problem.location.column >= 1,
                             "error without a position: \(problem)")
                precondition(!problem.message.isEmpty, "error without a message at \(problem.location)")
            }
        }
    }

    static func checkCron(_ text: String) {
        guard let schedule = try? CronSchedule(parsing: text) else { return }
        guard case .expression(let expression) = schedule else { return }
        // The normal form reads back as the same schedule.
        let again = try? CronSchedule(parsing: schedule.description)
        precondition(again != nil, "normal form '\(schedule.description)' of '\(text)' does not parse")
        checkIncreasing { expression.next(after: $0, in: .utc) }
    }

    static func checkCalendar(_ text: String) {
        guard let event = try? CalendarEvent(parsing: text) else { return }
        let again = try? CalendarEvent(parsing: event.normalized)
        precondition(again != nil, "normal form '\(event.normalized)' of '\(text)' does not parse")
        checkIncreasing { event.next(after: $0, in: .utc) }
    }

    static func checkSchedule(_ text: String) {
        guard let schedule = try? ScheduleExpression.parse(text) else { return }
        _ = schedule.normalized
    }

    static func checkDuration(_ text: String) {
        guard let duration = try? DurationText.parse(text) else { return }
        precondition(duration <= DurationText.maximum, "'\(text)' is beyond the maximum")
        let formatted = DurationText.format(duration)
        precondition((try? DurationText.parse(formatted)) != nil, "format '\(formatted)' of '\(text)' does not parse")
    }

    static func checkNotify(_ messages: [NotifyMessage]) {
        for message in messages {
            if case .extendTimeout(let duration) = message {
                precondition(duration >= .zero && duration <= DurationText.maximum, "EXTEND_TIMEOUT_USEC out of range")
            }
        }
    }

    static func checkClusterCommand(_ text: String) {
        let fields = text.split(separator: "\t", omittingEmptySubsequences: false).map(String.init)
        guard let command = ClusterCommand(fields: fields) else { return }
        precondition(ClusterCommand(fields: command.fields) == command, "a command does not read back as itself")
        if let run = command.runID { precondition(RunID(validating: run.rawValue) != nil, "accepted a run id outside the alphabet") }
    }

    static func checkPostgresURL(_ text: String) {
        guard case .success(let url) = PostgresURL.parse(text) else { return }
        precondition(!url.description.isEmpty)
    }

    /// Three successive occurrences from the origin, each strictly later than the one before.
    static func checkIncreasing(_ next: (Timestamp) -> Timestamp?) {
        var instant = origin
        for _ in 0..<3 {
            guard let following = next(instant) else { return }
            precondition(following > instant, "next occurrence \(following) is not after \(instant)")
            instant = following
        }
    }
}
