import Foundation
import JobRunnerConfig
import JobRunnerCore
import JobRunnerSupervision
import JobRunnerSchedule
import Logging
import NIOPosix

/// A job for tests.
public func job(
    _ name: String,
    shell: String,
    schedule: String? = nil,
    every: Duration? = nil,
    timeout: Duration? = nil,
    killGrace: Duration = .seconds(1),
    environment: [String: String] = [:]
) throws -> JobDefinition {
    var trigger: JobTrigger?
    if let schedule {
        switch try CronSchedule(parsing: schedule) {
        case .expression(let expression): trigger = .cron(expression)
        case .reboot: trigger = .reboot
        case .every(let interval): trigger = .interval(interval)
        }
    }
    if let every { trigger = .interval(every) }
    return JobDefinition(name: name, command: .shell(shell), trigger: trigger, timeout: timeout, killGrace: killGrace,
                         environment: environment)
}

/// Quiet unless JOBRUNNER_TEST_LOG names a level (e.g. `debug`), for looking into a failure.
public let testLogger: Logger = {
    var logger = Logger(label: "test") { label in StreamLogHandler.standardError(label: label) }
    logger.logLevel = ProcessInfo.processInfo.environment["JOBRUNNER_TEST_LOG"].flatMap(Logger.Level.init(rawValue:)) ?? .critical
    return logger
}()

/// The daemon environment runs inherit from in tests.
public let testEnvironment = ["PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"]

/// A supervisor whose runs inherit from `environment` as if it were the daemon's (tests never
/// change the test process's own environment: another thread may be reading it).
public func makeSupervisor(environment: [String: String] = testEnvironment, http: HTTPCaller? = nil) -> Supervisor {
    Supervisor(eventLoopGroup: MultiThreadedEventLoopGroup.singleton, environment: environment, http: http, logger: testLogger, wallClock: {
        Timestamp(microseconds: Int64(Date().timeIntervalSince1970 * 1_000_000))
    })
}

/// The tests' HTTP client: one for the whole test process, as the daemon has one.
public let testHTTPCaller = HTTPCaller(eventLoopGroup: MultiThreadedEventLoopGroup.singleton)

public func request(_ job: JobDefinition) -> RunRequest {
    RunRequest(id: RunIDGenerator().next(at: Timestamp(seconds: 1_800_000_000)), job: job, scheduledTime: Timestamp(seconds: 1_800_000_000))
}

/// A marker unique to one test, put in its jobs' environment (`JR_TEST_MARK`) so their
/// processes can be found in /proc by what the kernel keeps: their environment.
public func uniqueMarker() -> String {
    "jrtest\(UInt32.random(in: 0...UInt32.max))"
}

/// Live processes of jobs that carry `marker` in their environment.
public func marked(_ marker: String) -> [ProcessEntry] {
    ProcessTable.carrying("JR_TEST_MARK", marker)
}

/// A calendar event (parsing may read the zone database, so it is done synchronously).
public func calendarEvent(_ text: String) throws -> CalendarEvent {
    try CalendarEvent(parsing: text)
}
