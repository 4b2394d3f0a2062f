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
        var cpuSeconds = 0.0
        var lastMaxResident: Int64?
        var costed = false
        /// HTTP requests by step ("" for an http job) and status (or outcome without one).
        var requests: [String: [String: Int]] = [:]
        var requestBuckets = [Int](repeating: 0, count: EngineMetrics.requestBuckets.count)
        var requestCount = 0
        var requestSum = 0.0
    }

    /// Upper bounds of the `jobrunner_http_request_duration_seconds` buckets.
    static let requestBuckets: [Double] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]

    /// One HTTP request of a job (its step's, or the job's own).
    public static func httpRequest(job: String, step: String?, status: String, duration: Duration) {
        let seconds = Double(duration.wholeMicroseconds) / 1_000_000
        stats.withLock { all in
            all[job, default: JobStats()].requests[step ?? "", default: [:]][status, default: 0] += 1
            all[job]!.requestCount += 1
            all[job]!.requestSum += seconds
            if let bucket = requestBuckets.firstIndex(where: { seconds <= $0 }) { all[job]!.requestBuckets[bucket] += 1 }
        }
    }

    private static let stats = Mutex<[String: JobStats]>([:])
    private static let lateness = Timer(label: "jobrunner_fire_lateness_seconds")
    private static let waitingFires = Gauge(label: "jobrunner_waiting_fires")

    static func runFinished(job: String, outcome: RunOutcome, duration: Duration?, at instant: Timestamp, usage: ResourceUsage? = nil) {
        let seconds = duration.map { Double($0.wholeMicroseconds) / 1_000_000 }
        stats.withLock { all in
            all[job, default: JobStats()].outcomes[outcome.name, default: 0] += 1
            if let usage {
                all[job]!.cpuSeconds += usage.userSeconds + usage.systemSeconds
                all[job]!.costed = true
                all[job]!.lastMaxResident = usage.maxResidentBytes
            }
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
            if let help = help[name] { text += "# HELP \(name) \(help)\n" }
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
                histogram("jobrunner_run_duration_seconds", job: job, bounds: durationBuckets, counts: stats.buckets,
                          count: stats.durationCount, sum: stats.durationSum, into: &text)
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
        family("jobrunner_run_cpu_seconds_total", "counter") { text in
            for (job, stats) in all.sorted(by: { $0.key < $1.key }) where stats.costed {
                text += "jobrunner_run_cpu_seconds_total{job=\"\(job)\"} \(stats.cpuSeconds)\n"
            }
        }
        family("jobrunner_run_max_rss_bytes", "gauge") { text in
            for (job, stats) in all.sorted(by: { $0.key < $1.key }) {
                if let bytes = stats.lastMaxResident { text += "jobrunner_run_max_rss_bytes{job=\"\(job)\"} \(bytes)\n" }
            }
        }
        family("jobrunner_http_requests_total", "counter") { text in
            for (job, stats) in all.sorted(by: { $0.key < $1.key }) {
                for (step, statuses) in stats.requests.sorted(by: { $0.key < $1.key }) {
                    for (status, count) in statuses.sorted(by: { $0.key < $1.key }) {
                        text += "jobrunner_http_requests_total{job=\"\(job)\",step=\"\(step)\",status=\"\(status)\"} \(count)\n"
                    }
                }
            }
        }
        family("jobrunner_http_request_duration_seconds", "histogram") { text in
            for (job, stats) in all.sorted(by: { $0.key < $1.key }) where stats.requestCount > 0 {
                histogram("jobrunner_http_request_duration_seconds", job: job, bounds: requestBuckets, counts: stats.requestBuckets,
                          count: stats.requestCount, sum: stats.requestSum, into: &text)
            }
        }
        return text
    }

    /// One job's series of a histogram family: cumulative buckets, `+Inf`, sum and count.
    static func histogram(_ name: String, job: String, bounds: [Double], counts: [Int], count: Int, sum: Double, into text: inout String) {
        var cumulative = 0
        for (bound, inBucket) in zip(bounds, counts) {
            cumulative += inBucket
            text += "\(name)_bucket{job=\"\(job)\",le=\"\(bound)\"} \(cumulative)\n"
        }
        text += "\(name)_bucket{job=\"\(job)\",le=\"+Inf\"} \(count)\n"
        text += "\(name)_sum{job=\"\(job)\"} \(sum)\n"
        text += "\(name)_count{job=\"\(job)\"} \(count)\n"
    }

    /// What each family means (`# HELP`), the engine's and the global ones alike.
    public static let help: [String: String] = [
        "jobrunner_runs_total": "Finished runs by job and outcome since the daemon started.",
        "jobrunner_run_duration_seconds": "How long runs took, by job.",
        "jobrunner_last_run_timestamp_seconds": "When a job's latest run ended (Unix seconds).",
        "jobrunner_last_success_timestamp_seconds": "When a job's latest successful run ended (Unix seconds).",
        "jobrunner_next_fire_timestamp_seconds": "When a job fires next (Unix seconds; 0: not scheduled).",
        "jobrunner_running_runs": "Runs of a job whose process is alive.",
        "jobrunner_run_cpu_seconds_total": "CPU seconds (user and system) of a job's finished runs and the processes they waited for.",
        "jobrunner_run_max_rss_bytes": "Peak resident memory of the largest process of a job's latest finished run (absent when not above the daemon's own).",
        "jobrunner_http_requests_total": "HTTP requests of http jobs and steps, by job, step (empty for an http job) and status (or outcome when no answer came).",
        "jobrunner_http_request_duration_seconds": "How long HTTP requests of a job took.",
        "jobrunner_fire_lateness_seconds": "How late fires started after their due time.",
        "jobrunner_waiting_fires": "Fires waiting for a slot, a pool or a previous run.",
        "jobrunner_config_generation": "Configuration generation: 1 at start, +1 per successful reload.",
        "jobrunner_reloads_total": "Reloads by result (ok, failed).",
        "jobrunner_claims_total": "Cluster claims of occurrences by result.",
        "jobrunner_claim_duration_seconds": "How long a cluster claim took.",
        "jobrunner_cluster_nodes": "Cluster nodes by state, as this node sees them.",
    ]

    /// Prometheus text with a `# HELP` line before each `# TYPE` line this table knows.
    public static func withHelp(_ text: String) -> String {
        var result = ""
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("# TYPE "), let name = line.split(separator: " ").dropFirst(2).first, let help = help[String(name)] {
                result += "# HELP \(name) \(help)\n"
            }
            result += line + "\n"
        }
        return String(result.dropLast())
    }
}
