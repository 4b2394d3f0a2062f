import Foundation
import JobRunnerConfig
import JobRunnerSchedule
import Synchronization
import TestSupport
import Testing

/// Every class of configuration error, with the exact position it must be reported at.
@Suite struct ConfigErrorTests {

    func single(_ yaml: String) -> ConfigError? {
        let found = configErrors(yaml)
        #expect(found.count == 1, "\(found)")
        return found.first
    }

    @Test func yamlSyntaxError() throws {
        let error = try #require(single("""
            jobs:
              a:
                command: ["/bin/true"
                schedule: "* * * * *"
            """))
        #expect(error.code == .syntax)
        #expect(error.location.file == "jobs.yaml")
        #expect(error.location.line == 4)
        #expect(error.description.hasPrefix("jobs.yaml:4:"))
    }

    @Test func wrongType() throws {
        let error = try #require(single("""
            jobs:
              a:
                command: ["/bin/true"]
                enabled: maybe
            """))
        #expect(error.code == .wrongType)
        #expect(error.description == "jobs.yaml:4:14: job 'a': enabled: expected true or false, found 'maybe'")
    }

    @Test func unknownKeyWithSuggestion() throws {
        let error = try #require(single("""
            jobs:
              backup:
                command: ["/bin/true"]
                timout: 10m
            """))
        #expect(error.code == .unknownKey)
        #expect(error.description == "jobs.yaml:4:5: unknown key 'timout' in job 'backup' (did you mean 'timeout'?)")
    }

    @Test func unknownDaemonKey() throws {
        let error = try #require(single("""
            daemon:
              max_concurent_runs: 3
            jobs: {}
            """))
        #expect(error.description == "jobs.yaml:2:3: unknown key 'max_concurent_runs' in 'daemon' (did you mean 'max_concurrent_runs'?)")
    }

    @Test func missingCommand() throws {
        let error = try #require(single("""
            jobs:
              nightly:
                schedule: "0 3 * * *"
            """))
        #expect(error.code == .missingKey)
        #expect(error.description == "jobs.yaml:2:3: job 'nightly' needs 'command' (an argv list), 'shell' (a command line), 'steps' or 'http'")
    }

    @Test func bothCommandAndShell() throws {
        let error = try #require(single("""
            jobs:
              x:
                command: ["/bin/true"]
                shell: "true"
            """))
        #expect(error.code == .conflictingKeys)
        #expect(error.location.line == 4)
        #expect(error.location.column == 5)
        #expect(error.message.contains("job 'x' has both 'command' and 'shell'"))
    }

    @Test func badCronFieldPointsAtTheField() throws {
        let error = try #require(single("""
            jobs:
              report:
                command: ["/bin/true"]
                schedule: "0 0 32 * *"
            """))
        #expect(error.code == .invalidSchedule)
        // The value starts at column 15 (the quote); field 3 is 5 characters further in.
        #expect(error.description == "jobs.yaml:4:20: job 'report': schedule '0 0 32 * *': field 3 (day of month): 32 is out of range 1–31")
    }

    @Test func badDuration() throws {
        let error = try #require(single("""
            jobs:
              a:
                command: ["/bin/true"]
                timeout: 10x
            """))
        #expect(error.code == .invalidDuration)
        #expect(error.description == "jobs.yaml:4:14: job 'a': timeout: '10x' is not a duration: unknown unit 'x' (use ms, s, m, h, d or w)")
    }

    @Test func durationWithoutUnit() throws {
        let error = try #require(single("""
            daemon:
              shutdown_grace: 30
            jobs: {}
            """))
        #expect(error.description == "jobs.yaml:2:19: daemon.shutdown_grace: '30' is not a duration: '30' needs a unit (e.g. 30s or 30m)")
    }

    @Test func duplicateJobName() throws {
        let error = try #require(single("""
            jobs:
              backup:
                command: ["/bin/true"]
              backup:
                command: ["/bin/false"]
            """))
        #expect(error.code == .duplicateKey)
        #expect(error.location.line == 2)
        #expect(error.location.column == 3)
        #expect(error.message.contains("duplicate key 'backup'"))
    }

    @Test func commandMustBeAList() throws {
        let error = try #require(single("""
            jobs:
              a:
                command: /usr/bin/rsync -a /srv /backup
            """))
        #expect(error.code == .wrongType)
        #expect(error.location.line == 3)
        #expect(error.location.column == 14)
        #expect(error.message.contains("use 'shell:' for a command line"))
    }

    @Test func bothScheduleAndEvery() throws {
        let error = try #require(single("""
            jobs:
              a:
                command: ["/bin/true"]
                every: 5m
                schedule: "* * * * *"
            """))
        #expect(error.code == .conflictingKeys)
        #expect(error.location.line == 5)
    }

    @Test func unknownTimeZone() throws {
        let error = try #require(single("""
            daemon:
              time_zone: Mars/Base
            jobs: {}
            """))
        #expect(error.code == .unknownTimeZone)
        #expect(error.location.line == 2)
        #expect(error.location.column == 14)
    }

    @Test func invalidJobName() throws {
        let error = try #require(single("""
            jobs:
              "bad name":
                command: ["/bin/true"]
            """))
        #expect(error.code == .invalidName)
        #expect(error.location.line == 2)
    }

    @Test func everyErrorOfAFileIsReported() {
        let found = configErrors("""
            daemon:
              blocking_threads: 0
            jobs:
              a:
                command: ["/bin/true"]
                timeout: soon
              b:
                shell: "true"
                schedule: "* * * *"
              c:
                enabled: true
            """)
        #expect(found.map(\.location.line) == [2, 6, 9, 10])
    }

    @Test func emptyFileAndMissingJobs() throws {
        #expect(single("")?.description == "jobs.yaml:1:1: the file is empty: expected a mapping with a 'jobs:' section")
        #expect(single("daemon: {}\n")?.code == .missingKey)
        #expect(single("- just\n- a list\n")?.code == .wrongType)
    }

    @Test func fileProblems() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        do {
            let missing = directory.file("nope.yaml")
            #expect(throws: ConfigErrors.self) { try loadOnThread(missing) }
            let binary = directory.file("binary.yaml")
            try Data([0x6a, 0x6f, 0x62, 0x73, 0x3a, 0x0a, 0xff, 0xfe, 0x00]).write(to: URL(fileURLWithPath: binary))
            #expect(fileErrors(binary).first?.description == "\(binary):2:1: not UTF-8 text (a binary file?)")
            let nul = directory.write("nul.yaml", "jobs:\n  a: { shell: \"true\" }\n  \u{0}\n")
            #expect(fileErrors(nul).first?.description == "\(nul):3:3: contains a NUL byte (a binary file?)")
            let nested = directory.write("nested.yaml", "jobs: " + String(repeating: "[", count: 5000))
            #expect(fileErrors(nested).first?.description == "\(nested):1:\(6 + 257): nesting deeper than 256 levels")
            // Brackets in comments and quoted text are not nesting; on the third line they are.
            let brackets = String(repeating: "[", count: 300)
            let counted = directory.write("counted.yaml", "# \(brackets)\nx: \"\(brackets)\"\ny: \(brackets)\n")
            #expect(fileErrors(counted).first?.description == "\(counted):3:\(3 + 257): nesting deeper than 256 levels")
        }
    }
}

/// Loads a file as the daemon does (tests are synchronous, so the blocking read is fine here).
func loadOnThread(_ path: String) throws(ConfigErrors) -> Configuration {
    try ConfigLoader().load(path: path)
}

/// The schedule keys of a job.
@Suite struct ScheduleKeyTests {
    @Test func calendarListZoneJitterAndStartKeys() throws {
        let configuration = try ConfigLoader().parse("""
            daemon:
              time_zone: UTC
            jobs:
              report:
                shell: "true"
                on_calendar: ["Mon..Fri 08:00", "Sat 10:00"]
                time_zone: America/New_York
                random_delay: 2m
                fixed_random_delay: true
                run_on_start: true
            """, path: "jobs.yaml")
        let job = try #require(configuration.jobs.first)
        #expect(job.timeZone.identifier == "America/New_York")
        #expect(job.randomDelay == .seconds(120))
        #expect(job.fixedRandomDelay)
        #expect(job.runOnStart)
        guard case .calendar(let events) = job.trigger else {
            Issue.record("expected a calendar trigger")
            return
        }
        #expect(events.map(\.normalized) == ["Mon..Fri *-*-* 08:00:00", "Sat *-*-* 10:00:00"])
        // The union of both events, in New York time.
        let next = job.trigger!.upcoming(after: Timestamp(rfc3339: "2026-11-27T00:00:00Z")!, in: job.timeZone, count: 3)
        #expect(next.map { job.timeZone.rfc3339($0) } == ["2026-11-27T08:00:00-05:00", "2026-11-28T10:00:00-05:00", "2026-11-30T08:00:00-05:00"])
    }

    @Test func badCalendarEventIsPositioned() {
        do {
            _ = try ConfigLoader().parse("""
                jobs:
                  a:
                    shell: "true"
                    on_calendar:
                      - "Mon 08:00"
                      - "Mon..Funday 09:00"
                """, path: "jobs.yaml")
            Issue.record("accepted")
        } catch {
            #expect(error.errors.map(\.description) == [
                "jobs.yaml:6:9: job 'a': on_calendar 'Mon..Funday 09:00': 'Funday' is not a weekday (Mon, Tue, Wed, Thu, Fri, Sat, Sun)",
            ])
        }
    }

    @Test func oneScheduleKeyAtMost() {
        do {
            _ = try ConfigLoader().parse("""
                jobs:
                  a:
                    shell: "true"
                    schedule: "@daily"
                    on_calendar: daily
                """, path: "jobs.yaml")
            Issue.record("accepted")
        } catch {
            #expect(error.errors.first?.location.line == 5)
            #expect(error.errors.first?.message == "job 'a' has both 'schedule' and 'on_calendar'; a job has at most one of schedule, on_calendar and every")
        }
    }

    @Test func fixedDelayNeedsARange() {
        do {
            _ = try ConfigLoader().parse("jobs:\n  a:\n    shell: \"true\"\n    fixed_random_delay: true\n", path: "jobs.yaml")
            Issue.record("accepted")
        } catch {
            #expect(error.errors.first?.description == "jobs.yaml:4:5: job 'a': fixed_random_delay needs random_delay (the range of the offset)")
        }
    }

    @Test func unknownJobZone() {
        do {
            _ = try ConfigLoader().parse("jobs:\n  a:\n    shell: \"true\"\n    time_zone: Europe/Atlantis\n", path: "jobs.yaml")
            Issue.record("accepted")
        } catch {
            #expect(error.errors.first?.code == .unknownTimeZone)
            #expect(error.errors.first?.location.line == 4)
            #expect(error.errors.first?.location.column == 16)
        }
    }
}

/// The supervision keys of a job.
@Suite struct SupervisionKeyTests {
    func load(_ yaml: String) throws(ConfigErrors) -> Configuration {
        try ConfigLoader().parse(yaml, path: "jobs.yaml")
    }


    @Test func everySupervisionKey() throws {
        let configuration = try load("""
            daemon:
              pools: { db: 2 }
              history: { output_tail: 16KiB }
            jobs:
              backup:
                command: ["/bin/true"]
                overlap: queue
                max_queue: 3
                pool: db
                retry: { attempts: 3, backoff: 5s, max_backoff: 1m, jitter: true, on: [failure, timeout] }
                user: nobody
                group: nogroup
                supplementary_groups: [nogroup]
                umask: "0027"
                nice: 10
                limits: { nofile: 4096, nproc: 256, cpu: 1h, as: 2GiB, core: 0, fsize: unlimited }
                inherit_environment: [PATH, TZ]
                on_failure: ["/usr/local/bin/alert", "backup failed"]
                on_success: "echo ok"
                hook_timeout: 30s
            """)
        #expect(configuration.daemon.pools == ["db": 2])
        #expect(configuration.daemon.outputTail == 16 * 1024)
        let job = try #require(configuration.jobs.first)
        #expect(job.overlap == .queue(max: 3))
        #expect(job.pool == "db")
        #expect(job.retry == RetryPolicy(attempts: 3, backoff: .seconds(5), maxBackoff: .seconds(60), jitter: true, on: [.failure, .timeout]))
        #expect(job.identity?.uid == 65534)
        #expect(job.identity?.gid == 65534)
        #expect(job.identity?.groups == [65534])
        #expect(job.umask == 0o027)
        #expect(job.nice == 10)
        #expect(job.limits.openFiles == 4096)
        #expect(job.limits.processes == 256)
        #expect(job.limits.cpuSeconds == 3600)
        #expect(job.limits.addressSpace == 2 << 30)
        #expect(job.limits.coreSize == 0)
        #expect(job.limits.fileSize == UInt64.max)
        #expect(job.inheritEnvironment == ["PATH", "TZ"])
        #expect(job.onFailure == .argv(["/usr/local/bin/alert", "backup failed"]))
        #expect(job.onSuccess == .shell("echo ok"))
        #expect(job.hookTimeout == .seconds(30))
    }

    @Test func retryBackoffDoublesUpToItsCap() {
        let policy = RetryPolicy(attempts: 6, backoff: .seconds(5), maxBackoff: .seconds(30))
        #expect((2...6).map { policy.delay(beforeAttempt: $0) } == [.seconds(5), .seconds(10), .seconds(20), .seconds(30), .seconds(30)])
    }

    @Test func unknownUserIsAPositionedError() {
        #expect(configMessages("jobs:\n  a:\n    shell: \"true\"\n    user: no-such-user-here\n")
            == ["jobs.yaml:4:11: job 'a': user: no such user 'no-such-user-here'"])
        #expect(configMessages("jobs:\n  a:\n    shell: \"true\"\n    group: no-such-group\n")
            == ["jobs.yaml:4:12: job 'a': group: no such group 'no-such-group'"])
    }

    @Test func badSupervisionValues() {
        #expect(configMessages("jobs:\n  a:\n    shell: \"true\"\n    overlap: sometimes\n")
            == ["jobs.yaml:4:14: job 'a': overlap: 'sometimes' is not one of skip, queue, replace, allow"])
        #expect(configMessages("jobs:\n  a:\n    shell: \"true\"\n    max_queue: 2\n")
            == ["jobs.yaml:4:5: job 'a': max_queue only applies with 'overlap: queue'"])
        #expect(configMessages("daemon:\n  pools: {db: 2}\njobs:\n  a:\n    shell: \"true\"\n    pool: bd\n")
            == ["jobs.yaml:6:11: job 'a': pool 'bd' is not defined under daemon.pools (did you mean 'db'?)"])
        #expect(configMessages("jobs:\n  a:\n    shell: \"true\"\n    retry: {backoff: 5s}\n")
            == ["jobs.yaml:4:5: job 'a': retry needs 'attempts' (the total number of tries)"])
        // An out-of-range count is one error, not that plus "needs 'attempts'".
        #expect(configMessages("jobs:\n  a:\n    shell: \"true\"\n    retry: {attempts: 0}\n")
            == ["jobs.yaml:4:23: job 'a': retry.attempts (the total number of tries, 1 = no retry): 0 is out of range 1–100"])
        // A tab used for indentation is named as the cause.
        #expect(configMessages("jobs:\n  a:\n\tshell: \"true\"\n")
            == ["jobs.yaml:3:1: YAML syntax error: found character that cannot start any token while scanning for the next token"
                + " (line 3 is indented with a tab: YAML allows only spaces for indentation)"])
        #expect(configMessages("jobs:\n  a:\n    shell: \"true\"\n    retry: {attempts: 2, on: [failure, crash]}\n")
            == ["jobs.yaml:4:30: job 'a': retry.on: 'crash' is not one of failure, timeout, signal"])
        #expect(configMessages("jobs:\n  a:\n    shell: \"true\"\n    umask: 27\n")
            == ["jobs.yaml:4:12: job 'a': umask: expected an octal mode such as \"0027\", found '27'"])
        #expect(configMessages("jobs:\n  a:\n    shell: \"true\"\n    nice: 40\n")
            == ["jobs.yaml:4:11: job 'a': nice: 40 is out of range -20–19"])
        #expect(configMessages("jobs:\n  a:\n    shell: \"true\"\n    limits: {as: 2XB}\n")
            == ["jobs.yaml:4:18: job 'a': limits.as: '2XB' is not a size: unknown unit 'XB' (use B, KiB, MiB, GiB, TiB)"])
        #expect(configMessages("jobs:\n  a:\n    shell: \"true\"\n    limits: {nfile: 10}\n")
            == ["jobs.yaml:4:14: unknown key 'nfile' in job 'a': limits (did you mean 'nofile'?)"])
    }
}

/// `include:` files.
@Suite struct IncludeTests {
    @Test func includesAreReadInOrderAndNameTheirOwnErrors() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        try FileManager.default.createDirectory(atPath: directory.file("jobs.d"), withIntermediateDirectories: true)
        directory.write("jobs.d/20-b.yaml", "jobs:\n  b:\n    shell: \"true\"\n")
        directory.write("jobs.d/10-a.yaml", "jobs:\n  a:\n    shell: \"true\"\n")
        let main = directory.write("main.yaml", "include: [\"jobs.d/*.yaml\"]\njobs:\n  main:\n    shell: \"true\"\n")
        let configuration = try ConfigLoader().load(path: main)
        #expect(configuration.jobs.map(\.name) == ["main", "a", "b"])
        #expect(configuration.jobs[1].location.file == directory.file("jobs.d/10-a.yaml"))

        directory.write("jobs.d/30-bad.yaml", "jobs:\n  c:\n    shell: \"true\"\n    timeout: eventually\n")
        directory.write("jobs.d/40-dup.yaml", "jobs:\n  x:\n    shell: \"true\"\n  a:\n    shell: \"false\"\n")
        do {
            _ = try ConfigLoader().load(path: main)
            Issue.record("accepted")
        } catch {
            #expect(error.errors.map(\.description) == [
                "\(directory.file("jobs.d/30-bad.yaml")):4:14: job 'c': timeout: 'eventually' is not a duration: expected a number at 'eventually'",
                "\(directory.file("jobs.d/40-dup.yaml")):4:3: duplicate job name 'a' (also defined at \(directory.file("jobs.d/10-a.yaml")):2)",
            ])
        }
    }

    @Test func missingOrBadIncludes() throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let main = directory.write("main.yaml", "include: [\"extra.yaml\", \"none.d/*.yaml\"]\njobs: {}\n")
        do {
            _ = try ConfigLoader().load(path: main)
            Issue.record("accepted")
        } catch {
            #expect(error.errors.map(\.description) == ["\(main):1:11: include: 'extra.yaml' does not exist"])
        }
        directory.write("extra.yaml", "daemon:\n  blocking_threads: 2\n")
        do {
            _ = try ConfigLoader().load(path: main)
            Issue.record("accepted")
        } catch {
            #expect(error.errors.map(\.code) == [.unknownKey])
            #expect(error.errors.first?.location.file == directory.file("extra.yaml"))
        }
    }
}

/// A `jobs:` section of more than ``ConfigLoader/parallelReadThreshold`` jobs is read on two
/// threads when the loader may use two: what it yields must not show it.
@Suite struct LargeFileTests {
    static let count = 2 * ConfigLoader.parallelReadThreshold + 3

    /// Job `i` runs `echo i` at minute `i % 60`; every seventh is in Europe/Paris.
    static func job(_ index: Int) -> String {
        let zone = index % 7 == 0 ? ", time_zone: Europe/Paris" : ""
        return "  j\(index): { command: [\"/bin/echo\", \"\(index)\"], schedule: \"\(index % 60) 3 * * *\"\(zone) }"
    }

    @Test(arguments: [1, 2]) func everyJobIsReadInFileOrder(threads: Int) throws {
        let yaml = "daemon: { time_zone: UTC }\njobs:\n" + (0..<Self.count).map(Self.job).joined(separator: "\n") + "\n"
        let jobs = try ConfigLoader(readThreads: threads).parse(yaml, path: "jobs.yaml").jobs
        try #require(jobs.count == Self.count)
        // The jobs read otherwise than job `i` of the file should be (none).
        let misread = jobs.indices.filter { index in
            let job = jobs[index]
            return job.name != "j\(index)" || job.command.arguments != ["/bin/echo", "\(index)"] || job.location.line != index + 3
                || job.timeZone.identifier != (index % 7 == 0 ? "Europe/Paris" : "UTC")
                || job.trigger != jobs[index % 60].trigger
        }
        #expect(misread == [])
        #expect(Set(jobs.map { "\($0.trigger!)" }).count == 60)
    }

    @Test(arguments: [1, 2]) func errorsOfEveryChunkAreReportedInFileOrder(threads: Int) {
        var lines = (0..<Self.count).map(Self.job)
        let last = Self.count - 2
        let middle = Self.count / 2
        lines[3] = "  j3: { command: [\"/bin/true\"], timeout: soon }"
        lines[middle] = "  \"j \(middle)\": { command: [\"/bin/true\"] }"
        lines[middle + 1] = "  j\(middle + 1): { command: [\"/bin/true\"], schedul: \"* * * * *\" }"
        lines[last] = "  j\(last): { command: [\"/bin/true\"], schedule: \"* * * *\" }"
        let found = configErrors("jobs:\n" + lines.joined(separator: "\n") + "\n", loader: ConfigLoader(readThreads: threads))
        #expect(found.map(\.code) == [.invalidDuration, .invalidName, .unknownKey, .invalidSchedule])
        #expect(found.map(\.location.line) == [5, middle + 2, middle + 3, last + 2])
        #expect(found.map(\.description).dropFirst().first
            == "jobs.yaml:\(middle + 2):3: job name 'j \(middle)' may only contain letters, digits, '_', '.' and '-'")
    }

    /// The jobs are read while the file is composed, with the `daemon:` settings written before
    /// `jobs:`; one written after it must still give its zone to every job.
    @Test(arguments: [(1, false), (2, false), (1, true), (2, true)])
    func theDaemonZoneReachesEveryJobWhereverItIsWritten(threads: Int, daemonLast: Bool) throws {
        let daemon = "daemon: { time_zone: Asia/Tokyo }\n"
        let section = "jobs:\n" + (0..<Self.count).map(Self.job).joined(separator: "\n") + "\n"
        let jobs = try ConfigLoader(readThreads: threads).parse(daemonLast ? section + daemon : daemon + section, path: "jobs.yaml").jobs
        try #require(jobs.count == Self.count)
        let wrongZone = jobs.indices.filter { jobs[$0].timeZone.identifier != ($0 % 7 == 0 ? "Europe/Paris" : "Asia/Tokyo") }
        #expect(wrongZone == [])
    }

    /// The second reader is one thread, kept between reads (a thread a reload spread the jobs
    /// it built over malloc's arenas): after two large reads on two threads, `/proc` shows it once.
    @Test func theSecondReaderIsOneThreadKeptBetweenReads() throws {
        let yaml = "jobs:\n" + (0..<Self.count).map(Self.job).joined(separator: "\n") + "\n"
        for _ in 0..<2 {
            #expect(try ConfigLoader(readThreads: 2).parse(yaml, path: "jobs.yaml").jobs.count == Self.count)
        }
        let tasks = try FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")
        let names = tasks.compactMap { try? String(contentsOfFile: "/proc/self/task/\($0)/comm", encoding: .utf8) }
        #expect(names.filter { $0 == "jr-config-read\n" }.count == 1)
    }

    /// The second reader reads at the priority of the thread it reads for (the daemon's blocking
    /// pool runs at nice +10): after a large read from a thread at a higher nice, `/proc` shows
    /// the reader at that nice. Other tests read at once, and a read that finds the reader busy
    /// reads alone, so a few reads are tried.
    @Test func theSecondReaderTakesTheCallersPriority() throws {
        let yaml = "jobs:\n" + (0..<Self.count).map(Self.job).joined(separator: "\n") + "\n"
        // The reader exists before the first try, started from this thread's priority.
        _ = try ConfigLoader(readThreads: 2).parse(yaml, path: "jobs.yaml")
        var seen: [Int32] = []
        for _ in 0..<20 {
            let wanted = Mutex<Int32?>(nil)
            let done = DispatchSemaphore(value: 0)
            Thread {
                // `who` 0 with PRIO_PROCESS is the calling thread on Linux; raising nice needs no privilege.
                let target = min(19, getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0) + 5)
                if setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, target) == 0 {
                    wanted.withLock { $0 = target }
                    _ = try? ConfigLoader(readThreads: 2).parse(yaml, path: "jobs.yaml")
                }
                done.signal()
            }.start()
            done.wait()
            let target = try #require(wanted.withLock { $0 })
            let tasks = try FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")
            let reader = tasks.first { (try? String(contentsOfFile: "/proc/self/task/\($0)/comm", encoding: .utf8)) == "jr-config-read\n" }
            let stat = try String(contentsOfFile: "/proc/self/task/\(try #require(reader))/stat", encoding: .utf8)
            // Field 19, nice, is the 17th after the `)` that ends the name.
            let nice = try #require(Int32(stat.split(separator: ")").last!.split(separator: " ")[16]))
            seen.append(nice)
            if nice == target { return }
        }
        Issue.record("the reader's nice after each read: \(seen)")
    }

    /// A file that stops composing after the second reader began (a syntax error near its end)
    /// is refused with that error alone, and nothing waits for the reader.
    @Test(arguments: [1, 2]) func aSyntaxErrorLateInALargeFileIsTheOnlyError(threads: Int) {
        var lines = (0..<Self.count).map(Self.job)
        lines[3] = "  j3: { command: [\"/bin/true\"], timeout: soon }"
        lines[Self.count - 2] = "  j\(Self.count - 2): { command: [\"/bin/true\""
        let found = configErrors("jobs:\n" + lines.joined(separator: "\n") + "\n", loader: ConfigLoader(readThreads: threads))
        #expect(found.map(\.code) == [.syntax])
        #expect(found.first.map { $0.location.line >= Self.count - 1 } == true)
    }

    /// Keys that are not names and names already taken are reported where a one-thread read
    /// reports them, and the jobs around them are all read.
    @Test(arguments: [1, 2]) func badKeysOfALargeSectionKeepTheirPlace(threads: Int) throws {
        var lines = (0..<Self.count).map(Self.job)
        let middle = Self.count / 2
        lines[middle] = "  ? [j, \(middle)]\n  : { command: [\"/bin/true\"] }"
        lines[middle + 1] = "  j\(middle + 1): { command: [\"/bin/true\"], timeout: soon }"
        let found = configErrors("jobs:\n" + lines.joined(separator: "\n") + "\n", loader: ConfigLoader(readThreads: threads))
        #expect(found.map(\.code) == [.wrongType, .invalidDuration])
        #expect(found.map(\.location.line) == [middle + 2, middle + 4])
    }

    /// An included file's large `jobs:` section is read the same way, and a name the main file
    /// already took is refused at the included file's line.
    @Test(arguments: [1, 2]) func aLargeIncludedSectionIsReadInFileOrder(threads: Int) throws {
        let directory = TemporaryDirectory()
        defer { directory.remove() }
        let included = directory.write("more.yaml", "jobs:\n" + (0..<Self.count).map(Self.job).joined(separator: "\n") + "\n")
        let main = directory.write("main.yaml", "include: [\"more.yaml\"]\njobs:\n  first: { shell: \"true\" }\n")
        let configuration = try ConfigLoader(readThreads: threads).load(path: main)
        #expect(configuration.jobs.map(\.name) == ["first"] + (0..<Self.count).map { "j\($0)" })
        #expect(configuration.jobs.last?.location == SourceLocation(file: included, line: Self.count + 1, column: 3))

        directory.write("more.yaml", "jobs:\n" + (0..<Self.count).map(Self.job).joined(separator: "\n") + "\n  first: { shell: \"false\" }\n")
        let found = fileErrors(main, loader: ConfigLoader(readThreads: threads))
        #expect(found.map(\.description) == ["\(included):\(Self.count + 2):3: duplicate job name 'first' (also defined at \(main):3)"])
    }
}
