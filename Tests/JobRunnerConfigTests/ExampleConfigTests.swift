import JobRunnerConfig
import JobRunnerSchedule
import TestSupport
import Testing

/// The example configurations in `config/` are documentation: they must always load.
@Suite struct ExampleConfigTests {
    @Test func minimalExampleLoads() throws {
        let configuration = try loadOnThread(repositoryRoot + "/config/jobrunner.yaml")
        #expect(configuration.jobs.map(\.name) == ["heartbeat", "disk-usage"])
    }

    @Test func fullExampleLoadsWithEveryKey() throws {
        let configuration = try loadOnThread(repositoryRoot + "/config/jobrunner.full.yaml")
        #expect(configuration.daemon.timeZone.identifier == "Europe/Berlin")
        #expect(configuration.daemon.maxConcurrentRuns == 64)
        let backup = try #require(configuration.jobs.first { $0.name == "backup" })
        #expect(backup.command == .argv(["/usr/bin/rsync", "-a", "/srv/", "/backup/"]))
        #expect(backup.timeout == .seconds(600))
        #expect(backup.killGrace == .seconds(10))
        #expect(backup.environment == ["RSYNC_RSH": "ssh -o BatchMode=yes"])
        #expect(backup.workingDirectory == "/srv")
        #expect(backup.timeZone.identifier == "Europe/Berlin")
        let report = try #require(configuration.jobs.first { $0.name == "report" })
        #expect(report.trigger == .interval(.seconds(6 * 3600)))
        #expect(report.enabled == false)
        #expect(configuration.jobs.first { $0.name == "warm-cache" }?.trigger == .reboot)
        #expect(backup.randomDelay == .seconds(120))
        let weekday = try #require(configuration.jobs.first { $0.name == "weekday-report" })
        guard case .calendar(let events) = weekday.trigger else {
            Issue.record("expected on_calendar")
            return
        }
        #expect(events.count == 2)
        #expect(events[1].zone?.identifier == "Europe/London")
        let nightly = try #require(configuration.jobs.first { $0.name == "nightly" })
        #expect(nightly.steps.map(\.name) == ["dump", "parallel-1", "ping"])
        #expect(nightly.steps[0] == .process("dump", .shell("pg_dump app > /backup/app.sql"), timeout: .seconds(1800)))
        guard case .parallel(let group) = nightly.steps[1].work else {
            Issue.record("expected a parallel group")
            return
        }
        #expect(group.max == 2)
        #expect(group.steps.map(\.name) == ["upload-a", "upload-b"])
        #expect(nightly.steps[2].continueOnFailure)
        let warm = try #require(configuration.jobs.first { $0.name == "warm" })
        #expect(warm.http?.headerFiles == [.init("Authorization", "/etc/jobrunner/token")])
        #expect(warm.retry?.on.contains(.status) == true)
        #expect(configuration.jobs.first { $0.name == "report-after-nightly" }?.after == [AfterCondition(job: "nightly")])
    }
}
