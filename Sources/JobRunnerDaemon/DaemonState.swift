import JobRunnerSupervision
import JobRunnerHistory
import JobRunnerAPI
import JobRunnerControl
import JobRunnerSchedule
import Synchronization

/// Facts about the daemon itself that status reports: where its configuration is, when it
/// started, how the last reload went.
final class DaemonState: Sendable {
    struct Values {
        var configPath: String
        var startedAt: Timestamp
        var startedUptime: Duration
        var lastReload: ReloadResult?
    }

    private let values: Mutex<Values>

    init(configPath: String, startedAt: Timestamp, startedUptime: Duration) {
        values = Mutex(Values(configPath: configPath, startedAt: startedAt, startedUptime: startedUptime))
    }

    var snapshot: Values { values.withLock { $0 } }

    func setLastReload(_ result: ReloadResult) {
        values.withLock { $0.lastReload = result }
    }
}
