import JobRunnerSchedule
import Metrics
import Synchronization

/// The engine's metrics through swift-metrics; the daemon bootstraps a Prometheus backend and
/// serves `/metrics`. Labels are job names only (never command lines).
///
/// A job's handles are made once and kept: making a labelled metric looks it up in the
/// backend's registry, which costs in proportion to every series there is, so making them per
/// run would cost O(jobs) per run.
public enum EngineMetrics {
    /// One job's series.
    final class JobSeries: Sendable {
        let duration: Timer
        let lastRun: Gauge
        let lastSuccess: Gauge
        let outcomes: Mutex<[String: Counter]> = Mutex([:])

        init(job: String) {
            duration = Timer(label: "jobrunner_run_duration_seconds", dimensions: [("job", job)])
            lastRun = Gauge(label: "jobrunner_last_run_timestamp_seconds", dimensions: [("job", job)])
            lastSuccess = Gauge(label: "jobrunner_last_success_timestamp_seconds", dimensions: [("job", job)])
        }

        func outcome(_ name: String, job: String) -> Counter {
            outcomes.withLock { counters in
                if let counter = counters[name] { return counter }
                let counter = Counter(label: "jobrunner_runs_total", dimensions: [("job", job), ("outcome", name)])
                counters[name] = counter
                return counter
            }
        }
    }

    private static let series = Mutex<[String: JobSeries]>([:])
    private static let lateness = Timer(label: "jobrunner_fire_lateness_seconds")
    private static let waitingFires = Gauge(label: "jobrunner_waiting_fires")

    static func of(_ job: String) -> JobSeries {
        series.withLock { all in
            if let found = all[job] { return found }
            let made = JobSeries(job: job)
            all[job] = made
            return made
        }
    }

    static func runFinished(job: String, outcome: RunOutcome, duration: Duration?, at instant: Timestamp) {
        let metrics = of(job)
        metrics.outcome(outcome.name, job: job).increment()
        if case .skipped = outcome { return }
        if let duration { metrics.duration.record(duration: duration) }
        metrics.lastRun.record(instant.secondsSinceEpoch)
        if outcome == .succeeded { metrics.lastSuccess.record(instant.secondsSinceEpoch) }
    }

    static func lateness(_ duration: Duration) {
        lateness.record(duration: max(.zero, duration))
    }

    static func waiting(_ count: Int) {
        waitingFires.record(Double(count))
    }

    /// Drops the per-job series of a job that no longer exists.
    static func forget(job: String) {
        series.withLock { _ = $0.removeValue(forKey: job) }
    }

    /// `jobrunner_next_fire_timestamp_seconds` and `jobrunner_running_runs`, one sample per job,
    /// in the Prometheus text format. Rendered from the scheduler's state when scraped, not kept
    /// as series: keeping them would cost a registry update per fire and O(jobs) per job at start.
    public static func renderJobGauges(_ jobs: [(job: String, nextFire: Timestamp?, running: Int)]) -> String {
        var text = "# TYPE jobrunner_next_fire_timestamp_seconds gauge\n"
        for job in jobs {
            text += "jobrunner_next_fire_timestamp_seconds{job=\"\(job.job)\"} \(job.nextFire?.secondsSinceEpoch ?? 0)\n"
        }
        text += "# TYPE jobrunner_running_runs gauge\n"
        for job in jobs {
            text += "jobrunner_running_runs{job=\"\(job.job)\"} \(job.running)\n"
        }
        return text
    }
}
