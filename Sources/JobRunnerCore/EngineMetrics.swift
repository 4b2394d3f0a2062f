import JobRunnerSchedule
import Metrics
import Synchronization

/// The engine's metrics. Global ones go through swift-metrics (the daemon bootstraps a
/// Prometheus backend and serves `/metrics`); per-job ones are kept here, in one table, and
/// rendered when scraped: a labelled series in the backend's registry costs in proportion to
/// every series there is when it is made, which with thousands of jobs made each run cost
/// O(jobs). Labels are job names only (never command lines).
public enum EngineMetrics {
    /// Upper bounds of the `jobrunner_run_duration_seconds` buckets.
    static let durationBuckets: [Double] = [0.01, 0.1, 1, 10, 60, 300, 1800, 3600, 4 * 3600]

    /// What is known of one job's runs.
    struct JobStats {
        var outcomes: [String: Int] = [:]
        var buckets = [Int](repeating: 0, count: EngineMetrics.durationBuckets.count)
        var durationCount = 0
        var durationSum = 0.0
        var lastRun: Double?
        var lastSuccess: Double?
    }

    private static let stats = Mutex<[String: JobStats]>([:])
    private static let lateness = Timer(label: "jobrunner_fire_lateness_seconds")
    private static let waitingFires = Gauge(label: "jobrunner_waiting_fires")

    static func runFinished(job: String, outcome: RunOutcome, duration: Duration?, at instant: Timestamp) {
        let seconds = duration.map { Double($0.wholeMicroseconds) / 1_000_000 }
        stats.withLock { all in
            all[job, default: JobStats()].outcomes[outcome.name, default: 0] += 1
            if case .skipped = outcome { return }
            if let seconds {
                all[job]!.durationCount += 1
                all[job]!.durationSum += seconds
                if let bucket = durationBuckets.firstIndex(where: { seconds <= $0 }) { all[job]!.buckets[bucket] += 1 }
            }
            all[job]!.lastRun = instant.secondsSinceEpoch
            if outcome == .succeeded { all[job]!.lastSuccess = instant.secondsSinceEpoch }
        }
    }

    static func lateness(_ duration: Duration) {
        lateness.record(duration: max(.zero, duration))
    }

    static func waiting(_ count: Int) {
        waitingFires.record(Double(count))
    }

    /// Drops what is known of a job that no longer exists.
    static func forget(job: String) {
        stats.withLock { _ = $0.removeValue(forKey: job) }
    }

    /// Every per-job family in the Prometheus text format, for the jobs the scheduler knows
    /// (`jobs`: each with its next fire and live runs).
    public static func renderJobMetrics(_ jobs: [(job: String, nextFire: Timestamp?, running: Int)]) -> String {
        let all = stats.withLock { $0 }
        var text = ""
        func family(_ name: String, _ type: String, _ lines: (inout String) -> Void) {
            text += "# TYPE \(name) \(type)\n"
            lines(&text)
        }
        family("jobrunner_runs_total", "counter") { text in
            for (job, stats) in all.sorted(by: { $0.key < $1.key }) {
                for (outcome, count) in stats.outcomes.sorted(by: { $0.key < $1.key }) {
                    text += "jobrunner_runs_total{job=\"\(job)\",outcome=\"\(outcome)\"} \(count)\n"
                }
            }
        }
        family("jobrunner_run_duration_seconds", "histogram") { text in
            for (job, stats) in all.sorted(by: { $0.key < $1.key }) where stats.durationCount > 0 {
                var cumulative = 0
                for (bound, count) in zip(durationBuckets, stats.buckets) {
                    cumulative += count
                    text += "jobrunner_run_duration_seconds_bucket{job=\"\(job)\",le=\"\(bound)\"} \(cumulative)\n"
                }
                text += "jobrunner_run_duration_seconds_bucket{job=\"\(job)\",le=\"+Inf\"} \(stats.durationCount)\n"
                text += "jobrunner_run_duration_seconds_sum{job=\"\(job)\"} \(stats.durationSum)\n"
                text += "jobrunner_run_duration_seconds_count{job=\"\(job)\"} \(stats.durationCount)\n"
            }
        }
        family("jobrunner_last_run_timestamp_seconds", "gauge") { text in
            for (job, stats) in all.sorted(by: { $0.key < $1.key }) {
                if let last = stats.lastRun { text += "jobrunner_last_run_timestamp_seconds{job=\"\(job)\"} \(last)\n" }
            }
        }
        family("jobrunner_last_success_timestamp_seconds", "gauge") { text in
            for (job, stats) in all.sorted(by: { $0.key < $1.key }) {
                if let last = stats.lastSuccess { text += "jobrunner_last_success_timestamp_seconds{job=\"\(job)\"} \(last)\n" }
            }
        }
        family("jobrunner_next_fire_timestamp_seconds", "gauge") { text in
            for job in jobs {
                text += "jobrunner_next_fire_timestamp_seconds{job=\"\(job.job)\"} \(job.nextFire?.secondsSinceEpoch ?? 0)\n"
            }
        }
        family("jobrunner_running_runs", "gauge") { text in
            for job in jobs { text += "jobrunner_running_runs{job=\"\(job.job)\"} \(job.running)\n" }
        }
        return text
    }
}
