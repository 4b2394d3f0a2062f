import JobRunnerSchedule
import Metrics

/// The engine's metrics through swift-metrics; the daemon bootstraps a Prometheus backend and
/// serves `/metrics`. Labels are job names only (never command lines).
enum EngineMetrics {
    static func runFinished(job: String, outcome: RunOutcome, duration: Duration?, at instant: Timestamp) {
        Counter(label: "jobrunner_runs_total", dimensions: [("job", job), ("outcome", outcome.name)]).increment()
        if case .skipped = outcome { return }
        if let duration {
            Timer(label: "jobrunner_run_duration_seconds", dimensions: [("job", job)]).record(duration: duration)
        }
        Gauge(label: "jobrunner_last_run_timestamp_seconds", dimensions: [("job", job)]).record(instant.secondsSinceEpoch)
        if outcome == .succeeded {
            Gauge(label: "jobrunner_last_success_timestamp_seconds", dimensions: [("job", job)]).record(instant.secondsSinceEpoch)
        }
    }

    static func running(job: String, count: Int) {
        Gauge(label: "jobrunner_running_runs", dimensions: [("job", job)]).record(Double(count))
    }

    static func nextFire(job: String, at instant: Timestamp?) {
        Gauge(label: "jobrunner_next_fire_timestamp_seconds", dimensions: [("job", job)]).record(instant?.secondsSinceEpoch ?? 0)
    }

    static func lateness(_ duration: Duration) {
        Timer(label: "jobrunner_fire_lateness_seconds").record(duration: max(.zero, duration))
    }

    static func waiting(_ count: Int) {
        Gauge(label: "jobrunner_waiting_fires").record(Double(count))
    }

    /// Drops the per-job series of a job that no longer exists.
    static func forget(job: String) {
        Gauge(label: "jobrunner_running_runs", dimensions: [("job", job)]).destroy()
        Gauge(label: "jobrunner_next_fire_timestamp_seconds", dimensions: [("job", job)]).destroy()
    }
}
