import Foundation
import JobRunnerConfig
import JobRunnerSchedule
import Testing

/// Every number the configuration reads, fed the values that break arithmetic: each is either
/// accepted (and then within what the engine can compute with) or refused with its position —
/// never a trap. A trap here would end this test process, so a crash fails the suite too.
@Suite struct NumericRangeTests {
    /// Values that have broken parsers elsewhere.
    static let hostile = [
        "0", "-1", "9223372036854775807", "9223372036854775808", "18446744073709551616", "1e308", "-1e308",
        "1.000000000000000000000000000001", "0.000000000000000000000000000001", "99999999999999999999999999999999",
        "junk", "''", "'  '", "[1]", "{a: 1}", "~", "0x7fffffffffffffff", "1_000", ".5", "-0",
    ]

    /// Durations with units, which reach deadlines and timestamps.
    static let hostileDurations = [
        "1.123456789d", "9223372036854.9s", "9223372036854775807us", "9223372036854775808us", "106751991167d",
        "36501d", "1.000000000000000000000000000001s", "0.0000000000000000000000000001h", "99999999999999999999w",
        "1e308s", "-5s", "5", "1h-1s", "ms", "1.s",
    ]

    /// Where each numeric key goes: a configuration with `VALUE` in it (line 4, column 5+ of
    /// the value for job keys).
    static let keys: [(name: String, yaml: String)] = [
        ("timeout", "jobs:\n  a:\n    command: [\"/bin/true\"]\n    timeout: VALUE\n"),
        ("kill_grace", "jobs:\n  a:\n    command: [\"/bin/true\"]\n    kill_grace: VALUE\n"),
        ("every", "jobs:\n  a:\n    command: [\"/bin/true\"]\n    every: VALUE\n"),
        ("random_delay", "jobs:\n  a:\n    command: [\"/bin/true\"]\n    random_delay: VALUE\n"),
        ("hook_timeout", "jobs:\n  a:\n    command: [\"/bin/true\"]\n    hook_timeout: VALUE\n"),
        ("retry.attempts", "jobs:\n  a:\n    command: [\"/bin/true\"]\n    retry: { attempts: VALUE }\n"),
        ("retry.backoff", "jobs:\n  a:\n    command: [\"/bin/true\"]\n    retry: { attempts: 2, backoff: VALUE }\n"),
        ("retry.max_backoff", "jobs:\n  a:\n    command: [\"/bin/true\"]\n    retry: { attempts: 2, max_backoff: VALUE }\n"),
        ("max_instances", "jobs:\n  a:\n    command: [\"/bin/true\"]\n    overlap: allow\n    max_instances: VALUE\n"),
        ("max_queue", "jobs:\n  a:\n    command: [\"/bin/true\"]\n    overlap: queue\n    max_queue: VALUE\n"),
        ("catch_up_max", "jobs:\n  a:\n    command: [\"/bin/true\"]\n    catch_up: all\n    catch_up_max: VALUE\n"),
        ("nice", "jobs:\n  a:\n    command: [\"/bin/true\"]\n    nice: VALUE\n"),
        ("umask", "jobs:\n  a:\n    command: [\"/bin/true\"]\n    umask: VALUE\n"),
        ("limits.nofile", "jobs:\n  a:\n    command: [\"/bin/true\"]\n    limits: { nofile: VALUE }\n"),
        ("limits.nproc", "jobs:\n  a:\n    command: [\"/bin/true\"]\n    limits: { nproc: VALUE }\n"),
        ("limits.cpu", "jobs:\n  a:\n    command: [\"/bin/true\"]\n    limits: { cpu: VALUE }\n"),
        ("limits.as", "jobs:\n  a:\n    command: [\"/bin/true\"]\n    limits: { as: VALUE }\n"),
        ("limits.core", "jobs:\n  a:\n    command: [\"/bin/true\"]\n    limits: { core: VALUE }\n"),
        ("limits.fsize", "jobs:\n  a:\n    command: [\"/bin/true\"]\n    limits: { fsize: VALUE }\n"),
        ("user", "jobs:\n  a:\n    command: [\"/bin/true\"]\n    user: VALUE\n"),
        ("group", "jobs:\n  a:\n    command: [\"/bin/true\"]\n    group: VALUE\n"),
        ("supplementary_groups", "jobs:\n  a:\n    command: [\"/bin/true\"]\n    supplementary_groups: [VALUE]\n"),
        ("on_calendar epoch", "jobs:\n  a:\n    command: [\"/bin/true\"]\n    on_calendar: \"@VALUE\"\n"),
        ("schedule", "jobs:\n  a:\n    command: [\"/bin/true\"]\n    schedule: \"VALUE * * * *\"\n"),
        ("max_concurrent_runs", "daemon:\n  max_concurrent_runs: VALUE\njobs: {}\n"),
        ("blocking_threads", "daemon:\n  blocking_threads: VALUE\njobs: {}\n"),
        ("shutdown_grace", "daemon:\n  shutdown_grace: VALUE\njobs: {}\n"),
        ("pools", "daemon:\n  pools: { db: VALUE }\njobs: {}\n"),
        ("pools.size", "daemon:\n  pools: { db: { size: VALUE } }\njobs: {}\n"),
        ("history.keep_per_job", "daemon:\n  history: { keep_per_job: VALUE }\njobs: {}\n"),
        ("history.max_age", "daemon:\n  history: { max_age: VALUE }\njobs: {}\n"),
        ("history.output_tail", "daemon:\n  history: { output_tail: VALUE }\njobs: {}\n"),
        ("control.max_connections", "daemon:\n  control: { max_connections: VALUE }\njobs: {}\n"),
        ("control.allowed_uids", "daemon:\n  control: { allowed_uids: [VALUE] }\njobs: {}\n"),
        ("control.group", "daemon:\n  control: { group: VALUE }\njobs: {}\n"),
        ("metrics.listen", "daemon:\n  metrics: { listen: \"127.0.0.1:VALUE\" }\njobs: {}\n"),
        ("cluster.lease", "daemon:\n  cluster: { database: \"postgresql://u@h/d\", lease: VALUE }\njobs: {}\n"),
    ]

    /// Loads `yaml`; an accepted configuration must be one the engine can compute with.
    static func check(_ key: String, _ value: String, _ yaml: String) {
        let text = yaml.replacingOccurrences(of: "VALUE", with: value)
        do {
            let configuration = try ConfigLoader().parse(text, path: "n.yaml")
            for job in configuration.jobs {
                for duration in [job.timeout, job.randomDelay, job.hookTimeout, job.killGrace, job.retry?.backoff, job.retry?.maxBackoff]
                    .compactMap({ $0 })
                {
                    #expect(duration >= .zero && duration <= DurationText.maximum, "\(key): \(value) gave \(duration)")
                }
                if case .interval(let interval) = job.trigger {
                    #expect(interval > .zero && interval <= DurationText.maximum, "\(key): \(value) gave every \(interval)")
                }
                if let identity = job.identity {
                    #expect(identity.uid != UInt32.max && identity.gid != UInt32.max && !identity.groups.contains(UInt32.max),
                            "\(key): \(value) gave \(identity)")
                }
                // The engine adds these to instants: that must not trap.
                let far = Timestamp(seconds: 253_402_300_799)
                _ = far.advanced(by: job.timeout ?? .zero).advanced(by: job.randomDelay ?? .zero)
                _ = job.trigger?.nextOccurrence(after: far, in: .utc)
            }
            #expect(configuration.daemon.shutdownGrace <= DurationText.maximum)
        } catch {
            for failure in error.errors {
                // Positioned: a line of the file and a column on it.
                #expect(failure.location.file == "n.yaml" && failure.location.line >= 1 && failure.location.column >= 1,
                        "\(key): \(value): \(failure)")
                #expect(!failure.message.isEmpty)
            }
            #expect(!error.errors.isEmpty, "\(key): \(value) refused without a message")
        }
    }

    @Test(arguments: keys) func everyNumericKeyTakesHostileValues(key: (name: String, yaml: String)) {
        for value in Self.hostile + Self.hostileDurations {
            Self.check(key.name, value, key.yaml)
        }
    }

    @Test func valuesTooLargeAreOutOfRangeWithTheirPosition() throws {
        let cases: [(yaml: String, message: String)] = [
            ("jobs:\n  a:\n    command: [\"/bin/true\"]\n    timeout: 1.123456789d\n", ""),
            ("jobs:\n  a:\n    command: [\"/bin/true\"]\n    timeout: 9223372036854.9s\n",
             "n.yaml:4:14: job 'a': timeout: '9223372036854.9s' is out of range (at most 36500d)"),
            ("jobs:\n  a:\n    command: [\"/bin/true\"]\n    on_calendar: \"@99999999999999\"\n",
             "n.yaml:4:18: job 'a': on_calendar '@99999999999999': '@99999999999999' is out of range (at most @7258118399, the end of year 2199)"),
            ("jobs:\n  a:\n    command: [\"/bin/true\"]\n    group: 4294967295\n",
             "n.yaml:4:12: job 'a': group: 4294967295 is out of range 0–4294967294"),
            ("jobs:\n  a:\n    command: [\"/bin/true\"]\n    user: -1\n", "n.yaml:4:11: job 'a': user: -1 is out of range 0–4294967294"),
            ("daemon:\n  max_concurrent_runs: 9223372036854775808\njobs: {}\n",
             "n.yaml:2:24: daemon.max_concurrent_runs: '9223372036854775808' is out of range 1–100000"),
            ("daemon:\n  history: { output_tail: 99999999999999999999999GiB }\njobs: {}\n",
             "n.yaml:2:27: daemon.history.output_tail: '99999999999999999999999GiB' is out of range (at most 16EiB)"),
        ]
        for (yaml, message) in cases {
            do {
                let configuration = try ConfigLoader().parse(yaml, path: "n.yaml")
                // 1.123456789d is a valid duration: 1 day and a fraction, to the microsecond.
                #expect(message.isEmpty, "accepted: \(yaml)")
                #expect(configuration.jobs.first?.timeout == .microseconds(97_066_666_569))
            } catch {
                #expect(error.errors.map(\.description) == [message])
            }
        }
    }

    @Test func durationsAreExactAndBounded() throws {
        #expect(try DurationText.parse("1.5s") == .milliseconds(1_500))
        #expect(try DurationText.parse("1.123456789d") == .microseconds(97_066_666_569))
        #expect(try DurationText.parse("0.000001s") == .microseconds(1))
        #expect(try DurationText.parse("1.000000000000000000000000000001s") == .seconds(1))
        #expect(try DurationText.parse("36500d") == DurationText.maximum)
        #expect(throws: DurationText.ParseError.self) { try DurationText.parse("36500d 1us") }
        #expect(throws: DurationText.ParseError.self) { try DurationText.parse("9223372036854775807us") }
        #expect(throws: DurationText.ParseError.self) { try DurationText.parse("99999999999999999999999999999s") }
    }

    @Test func arithmeticOnInstantsSaturates() {
        let last = Timestamp(microseconds: .max)
        #expect(last.advanced(by: .seconds(1)) == last)
        #expect(Timestamp(microseconds: .min).advanced(by: .seconds(-1)).microseconds == .min)
        #expect(Timestamp(microseconds: .min).duration(to: last) == .microseconds(Int64.max))
        #expect(Timestamp(seconds: .max).microseconds == .max)
        #expect(Duration.seconds(Int64.max).wholeMicroseconds == .max)
    }
}
