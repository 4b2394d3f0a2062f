import JobRunnerAPI
import Foundation
import JobRunnerSchedule

/// Human output of `jobrunnerctl`: aligned tables and relative times. Pure functions of the
/// API's answers, the time and the zone, so each view is tested as text.
public enum Render {
    public static func status(_ status: StatusResponse, now: Date, colors: Colors = Colors(enabled: false)) -> String {
        let nowStamp = timestamp(now)
        var lines: [(String, String)] = []
        lines.append(("daemon", "jobrunnerd \(status.version), pid \(status.pid), \(status.state), up \(DurationText.approximate(.seconds(status.uptimeSeconds)))"))
        var config = "\(status.config.path) (generation \(status.config.generation))"
        if let reload = status.config.lastReload {
            let when = Timestamp(rfc3339: reload.at).map { DurationText.relative($0, now: nowStamp) } ?? reload.at
            config += reload.result == "ok" ? ", last reload ok \(when)" : ", last reload FAILED \(when): \(reload.errors.first ?? "")"
        }
        lines.append(("config", config))
        var jobs = "\(status.jobs), \(status.running) running"
        if status.waiting > 0 { jobs += ", \(status.waiting) waiting" }
        lines.append(("jobs", jobs))
        if let next = status.nextFire {
            lines.append(("next fire", "\(next.job) \(relative(next.at, now: nowStamp)) (\(next.at))"))
        } else {
            lines.append(("next fire", "none scheduled"))
        }
        let totals = status.runTotals.sorted { $0.key < $1.key }.map { "\($0.value) \(colors.outcome($0.key))" }
        let since = Timestamp(rfc3339: status.startedAt).map { " (since the daemon started \(DurationText.relative($0, now: nowStamp)))" } ?? ""
        lines.append(("runs", totals.isEmpty ? "none finished since the daemon started" : totals.joined(separator: ", ") + since))
        if let error = status.historyError {
            lines.append(("history", colors.outcome("failed") + ": \(error) (runs go on)"))
        }
        if let cluster = status.cluster {
            let alive = cluster.nodes.filter { $0.state == "alive" }.count
            lines.append(("cluster", "node \(cluster.node) of \(alive) alive, lease \(DurationText.format(.seconds(cluster.leaseSeconds))), \(cluster.database)"))
            if let error = cluster.error { lines.append(("", colors.outcome("failed") + ": \(error)")) }
            for node in cluster.nodes {
                var text = "\(node.name)  \(node.state == "alive" ? node.state : colors.alert(node.state))"
                text += ", heartbeat \(String(format: "%.1f", node.heartbeatAgeSeconds))s ago, \(node.running) running, config \(node.configHash.prefix(12))"
                if node.configDiffers { text += " " + colors.alert("DIFFERS from this node's") }
                lines.append(("", text))
            }
        }
        return String(fields(lines).dropLast())
    }

    public static func jobs(_ jobs: [JobInfo], now: Date, colors: Colors = Colors(enabled: false)) -> String {
        let nowStamp = timestamp(now)
        var rows = [["NAME", "SCHEDULE", "NEXT", "LAST RUN", "STATE"]]
        for job in jobs {
            rows.append([
                job.name,
                job.schedule ?? "(manual)",
                job.nextFire.map { relative($0, now: nowStamp) } ?? "-",
                job.lastRun.map { lastRun($0, now: nowStamp) } ?? "never",
                job.active.contains { $0.state == "running" } ? "running" : job.state,
            ])
        }
        return table(rows, colorColumn: 3, colors: colors)
    }

    /// Jobs by next fire, as `systemctl list-timers` lists timers: when each fires next and how
    /// long until then, when it last ran and how long ago, and how that run ended. Manual-only
    /// and disabled jobs only with `all`, after the scheduled ones.
    public static func timers(_ jobs: [JobInfo], now: Date, zone: TimeZoneRules, all: Bool, colors: Colors = Colors(enabled: false)) -> String {
        let nowStamp = timestamp(now)
        let shown = sortedByNextFire(jobs.filter { all || (($0.schedule != nil || $0.after != nil) && $0.state != "disabled") })
        var rows = [["NEXT", "LEFT", "LAST", "PASSED", "LAST OUTCOME", "JOB", "SCHEDULE"]]
        for job in shown {
            let next = job.nextFire.flatMap(Timestamp.init(rfc3339:))
            let last = job.lastRun.flatMap { run in (run.endedAt ?? run.startedAt).flatMap(Timestamp.init(rfc3339:)) }
            var left = next.map { DurationText.approximate(nowStamp.duration(to: $0)) + " left" } ?? "-"
            if job.state != "enabled" {
                left = "(\(job.state))"
            } else if job.schedule == nil {
                left = job.after == nil ? "(manual)" : "(after)"
            }
            var outcome = job.lastRun.map { $0.outcome ?? $0.state } ?? "-"
            if let run = job.lastRun, let code = run.exitCode, code != 0 { outcome += "(\(code))" }
            if job.active.contains(where: { $0.state == "running" }) { outcome = "running" }
            rows.append([
                next.map { localTime($0, zone: zone) } ?? "-",
                left,
                last.map { localTime($0, zone: zone) } ?? "-",
                last.map { DurationText.approximate($0.duration(to: nowStamp)) + " ago" } ?? "-",
                outcome,
                job.name,
                scheduleText(job),
            ])
        }
        var text = table(rows, colorColumn: 4, colors: colors)
        text += "\n\(shown.count) job\(shown.count == 1 ? "" : "s") listed."
        let hidden = jobs.count - shown.count
        if hidden > 0 { text += " \(hidden) manual-only or disabled not shown: pass --all." }
        return text + "\n"
    }

    /// A job's schedule and the jobs it follows: `0 3 * * *, after build succeeded`.
    static func scheduleText(_ job: JobInfo) -> String {
        let after = job.after.map { "after " + $0.joined(separator: ", ") }
        return [job.schedule, after].compactMap { $0 }.joined(separator: ", ").nonEmpty ?? "(manual)"
    }

    /// Next fire first; jobs that do not fire (manual, paused, disabled) last, by name.
    public static func sortedByNextFire(_ jobs: [JobInfo]) -> [JobInfo] {
        jobs.enumerated().sorted { left, right in
            let a = left.element.state == "enabled" ? left.element.nextFire.flatMap(Timestamp.init(rfc3339:)) : nil
            let b = right.element.state == "enabled" ? right.element.nextFire.flatMap(Timestamp.init(rfc3339:)) : nil
            switch (a, b) {
            case let (a?, b?): return a == b ? left.offset < right.offset : a < b
            case (.some, nil): return true
            case (nil, .some): return false
            case (nil, nil): return left.element.name < right.element.name
            }
        }.map(\.element)
    }

    /// `jobrunnerctl show JOB`: the whole definition (environment values hidden), the next
    /// fires, the live runs and the latest runs with what they cost.
    public static func job(_ job: JobInfo, next: NextResponse?, recent: [RunInfo], now: Date,
                           colors: Colors = Colors(enabled: false)) -> String {
        let nowStamp = timestamp(now)
        var lines: [(String, String)] = [("name", job.name)]
        if let command = job.command { lines.append(("command", command.map(shellQuoted).joined(separator: " "))) }
        if let shell = job.shell { lines.append(("shell", shell)) }
        if let http = job.http { lines.append(("http", http)) }
        if let steps = job.steps { lines.append(("steps", stepDefinitions(steps))) }
        lines.append(("schedule", (job.schedule ?? (job.after == nil ? "(manual only)" : "(none of its own)")) + " (\(job.timeZone))"))
        if let after = job.after { lines.append(("after", after.joined(separator: ", "))) }
        lines.append(("state", job.state))
        lines.append(("defined at", job.source))
        let policies = job.policies
        lines.append(("user", policies?.user ?? "(the daemon's)"))
        if let directory = job.workingDirectory { lines.append(("directory", directory)) }
        lines.append(("environment", job.environment.isEmpty ? "(none set)" : job.environment.joined(separator: ", ") + " (values hidden)"))
        lines.append(("timeout", job.timeoutSeconds.map { DurationText.format(duration(seconds: $0)) } ?? "none"))
        lines.append(("kill grace", DurationText.format(duration(seconds: job.killGraceSeconds))))
        if let policies {
            lines.append(("overlap", policies.overlap))
            if let pool = policies.pool { lines.append(("pool", pool)) }
            if let retry = policies.retry {
                lines.append(("retry", "\(retry.attempts) attempts, backoff \(DurationText.format(duration(seconds: retry.backoffSeconds)))"
                              + " up to \(DurationText.format(duration(seconds: retry.maxBackoffSeconds))), on \(retry.on.joined(separator: ", "))"))
            } else {
                lines.append(("retry", "none"))
            }
            if let delay = policies.randomDelaySeconds { lines.append(("random delay", DurationText.format(duration(seconds: delay)))) }
            if policies.runOnStart { lines.append(("run on start", "yes")) }
            lines.append(("catch up", policies.catchUp))
            if let hook = policies.onSuccess { lines.append(("on success", hook)) }
            if let hook = policies.onFailure { lines.append(("on failure", hook)) }
            if !policies.limits.isEmpty {
                lines.append(("limits", policies.limits.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ", ")))
            }
            if let umask = policies.umask { lines.append(("umask", umask)) }
            if let nice = policies.nice { lines.append(("nice", "\(nice)")) }
        }
        let fires = next?.next ?? job.nextFire.map { [$0] } ?? []
        if job.state != "enabled" {
            lines.append(("next fires", "none (\(job.state))"))
        } else if fires.isEmpty {
            lines.append(("next fires", "none scheduled"))
        } else {
            lines.append(("next fires", fires.map { "\($0) (\(relative($0, now: nowStamp)))" }.joined(separator: "\n")))
        }
        for run in job.active {
            var text = "\(run.id) \(colors.outcome(run.state))" + (run.pid.map { " pid \($0)" } ?? "")
            if let started = run.startedAt { text += ", started \(relative(started, now: nowStamp))" }
            if let waiting = run.waitingFor { text += ", waiting for \(waiting)" }
            if let status = run.statusText { text += ", \"\(status)\"" }
            lines.append(("live", text))
        }
        var text = fields(lines)
        if let latest = recent.first, let steps = latest.steps {
            text += "\nsteps of the last run (\(latest.id)):\n" + stepTree(steps, indent: "  ")
        }
        if recent.isEmpty {
            text += "last runs".padding(toLength: fieldWidth(lines), withPad: " ", startingAt: 0) + "  none\n"
        } else {
            text += "\nlast runs:\n" + runTable(recent, now: nowStamp, colors: colors, indent: "  ")
        }
        return text
    }

    public static func runs(_ runs: [RunInfo], now: Date, colors: Colors = Colors(enabled: false)) -> String {
        runTable(runs, now: timestamp(now), colors: colors)
    }

    static func runTable(_ runs: [RunInfo], now: Timestamp, colors: Colors, indent: String = "") -> String {
        let clustered = runs.contains { $0.node != nil }
        var rows = [["RUN", "JOB", "TRIGGER", "SCHEDULED", "STARTED", "DURATION", "CPU", "MEMORY", "OUTCOME"] + (clustered ? ["NODE"] : [])]
        for run in runs {
            let name: String = run.attempt > 1 ? "\(run.job) #\(run.attempt)" : run.job
            let started: String = run.startedAt.map { relative($0, now: now) } ?? "-"
            let took: String = run.durationSeconds.map(secondsText) ?? "-"
            let cpuText: String = cpu(run).map(secondsText) ?? "-"
            var row: [String] = [run.id, name, run.trigger, relative(run.scheduledTime, now: now), started, took, cpuText]
            row += [memory(run), outcome(run)]
            if clustered { row.append(run.node ?? "-") }
            rows.append(row)
        }
        let text = table(rows, colorColumn: 8, colors: colors)
        guard !indent.isEmpty else { return text }
        return text.split(separator: "\n").map { indent + $0 }.joined(separator: "\n") + "\n"
    }

    /// `jobrunnerctl next`: the normal form, the zone, and each fire time with its weekday.
    public static func next(_ response: NextResponse, now: Date) -> String {
        let nowStamp = timestamp(now)
        var lines = ["normalized  \(response.normalized)", "time zone   \(response.timeZone)"]
        if response.next.isEmpty {
            lines.append("next        never")
        }
        for (index, text) in response.next.enumerated() {
            let weekday = Timestamp(rfc3339: text).map { weekdayName(of: text, instant: $0) } ?? ""
            let when = relative(text, now: nowStamp)
            lines.append((index == 0 ? "next        " : "            ") + "\(text)  \(weekday)  \(when)")
        }
        return lines.joined(separator: "\n") + "\n"
    }

    static func weekdayName(of text: String, instant: Timestamp) -> String {
        // The weekday of the local date written in the text (its first 10 characters).
        let parts = text.prefix(10).split(separator: "-").compactMap { Int($0) }
        guard parts.count == 3 else { return "" }
        let date = LocalDateTime(year: parts[0], month: parts[1], day: parts[2])
        return ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"][date.weekday]
    }

    /// One run on one line (for `run --wait`).
    public static func runLine(_ run: RunInfo, colors: Colors) -> String {
        var text = "\(run.job) \(run.id): \(colors.outcome(run.outcome ?? run.state))"
        if let code = run.exitCode, code != 0 { text += " (exit status \(code))" }
        if let status = run.httpStatus { text += " (HTTP \(status))" }
        if run.outcome == "request_failed", let detail = run.detail { text += " (\(detail))" }
        if run.attempt > 1 { text += " on attempt \(run.attempt)" }
        if let seconds = run.durationSeconds { text += " after " + secondsText(seconds) }
        if let cost = cost(run) { text += "; " + cost }
        if let failures = run.failures { text += "; " + failures }
        return text
    }

    /// A job's steps, one per line, indented by depth: `name: command`, a group's limit.
    static func stepDefinitions(_ steps: [JobStepInfo]) -> String {
        steps.map { step in
            var text = String(repeating: "  ", count: step.depth) + step.name
            if step.kind == "parallel" {
                text += " (at once" + (step.max.map { ", at most \($0)" } ?? "") + ")"
            } else if let command = step.command {
                text += ": " + command
            }
            if let timeout = step.timeoutSeconds { text += " [timeout \(DurationText.format(duration(seconds: timeout)))]" }
            if step.continueOnFailure { text += " [continue on failure]" }
            return text
        }.joined(separator: "\n")
    }

    /// How a run's steps ended, as a tree: name, outcome, duration, CPU.
    public static func stepTree(_ steps: [StepInfo], indent: String = "", colors: Colors = Colors(enabled: false)) -> String {
        var rows: [[String]] = [["STEP", "OUTCOME", "DURATION", "CPU"]]
        for step in steps {
            var outcome = step.outcome
            if let code = step.exitCode, code != 0 { outcome += " (exit status \(code))" }
            if let signal = step.signal { outcome += " (\(step.detail ?? "signal \(signal)"))" }
            if ["skipped", "spawn_failed", "http_status", "request_failed"].contains(step.outcome), let detail = step.detail {
                outcome += " (\(detail))"
            } else if let status = step.httpStatus {
                outcome += " (HTTP \(status))"
            }
            if step.continueOnFailure && step.outcome != "succeeded" && step.outcome != "skipped" { outcome += ", continued" }
            let cpu = step.cpuUserSeconds.map { $0 + (step.cpuSystemSeconds ?? 0) }
            rows.append([String(repeating: "  ", count: step.depth) + step.name, outcome, step.durationSeconds.map(secondsText) ?? "-",
                         cpu.map(secondsText) ?? "-"])
        }
        let text = table(rows, colorColumn: 1, colors: colors)
        guard !indent.isEmpty else { return text }
        return text.split(separator: "\n").map { indent + $0 }.joined(separator: "\n") + "\n"
    }

    /// The line `jobrunnerctl logs` starts with: which run, which attempt, why, when, how long,
    /// how it ended and what it cost.
    public static func logHeader(_ run: RunInfo, now: Date) -> String {
        let nowStamp = timestamp(now)
        var parts = ["attempt \(run.attempt)", "trigger \(run.trigger)"]
        if let started = run.startedAt {
            parts.append("started \(started) (\(relative(started, now: nowStamp)))")
        } else {
            parts.append("queued \(run.queuedAt), not started" + (run.waitingFor.map { " (waiting for \($0))" } ?? ""))
        }
        if let seconds = run.durationSeconds { parts.append((run.outcome == nil ? "running for " : "took ") + secondsText(seconds)) }
        parts.append(outcome(run, words: true) + (run.failures.map { ": " + $0 } ?? ""))
        if let cost = cost(run) { parts.append(cost) }
        if let node = run.node { parts.append("node \(node)") }
        return "-- run \(run.id) of \(run.job): " + parts.joined(separator: ", ") + " --"
    }

    /// One output line: `[time ]text`, stderr dimmed; with a job and run (every run's output),
    /// `job[shortid] ` first.
    public static func outputLine(_ line: OutputLineInfo, timestamps: Bool, colors: Colors) -> String {
        var text = line.stream == "stderr" ? colors.dim(line.text) : line.text
        if let step = line.step { text = "[\(step)] " + text }
        if let job = line.job {
            text = "\(job)[\(line.run.map(shortRunID) ?? "?")] " + text
        }
        if timestamps { text = (line.at ?? "-").padding(toLength: 27, withPad: " ", startingAt: 0) + " " + text }
        return text
    }

    /// The part of a run id people tell runs apart by: its last 8 characters (ids begin with
    /// their time, so one day's runs share their first ones). Accepted wherever an id is.
    public static func shortRunID(_ id: String) -> String {
        String(id.suffix(8))
    }

    // MARK: - Pieces

    /// `succeeded`, `failed(3)`, `signalled(signal 9)`; with `words`, `failed (exit status 3)`.
    static func outcome(_ run: RunInfo, words: Bool = false) -> String {
        var text = run.outcome ?? run.state
        if let code = run.exitCode, code != 0 { text += words ? " (exit status \(code))" : "(\(code))" }
        if let signal = run.signal { text += words ? " (signal \(signal))" : "(signal \(signal))" }
        if let status = run.httpStatus { text += words ? " (HTTP \(status))" : "(\(status))" }
        if run.outcome == "request_failed", words, let detail = run.detail { text += " (\(detail))" }
        return text
    }

    /// `45.2M`, or `≤48.0M` when only a bound is known.
    static func memory(_ run: RunInfo) -> String {
        if let peak = run.maxRssBytes { return bytes(peak) }
        if let bound = run.maxRssAtMostBytes { return "≤" + bytes(bound) }
        return "-"
    }

    static func cpu(_ run: RunInfo) -> Double? {
        guard let user = run.cpuUserSeconds, let system = run.cpuSystemSeconds else { return nil }
        return user + system
    }

    /// `1.23s CPU (1.2s user, 0.03s system), 45.2M memory peak`, like systemd's "Consumed …".
    static func cost(_ run: RunInfo) -> String? {
        guard let user = run.cpuUserSeconds, let system = run.cpuSystemSeconds else { return nil }
        var text = "\(secondsText(user + system)) CPU (\(secondsText(user)) user, \(secondsText(system)) system)"
        if let peak = run.maxRssBytes { text += ", \(bytes(peak)) memory peak" }
        if let bound = run.maxRssAtMostBytes { text += ", at most \(bytes(bound)) memory peak" }
        return text
    }

    /// Seconds for people: `0.004s`, `1.23s`, `12.3s`, then `2m3s`.
    static func secondsText(_ seconds: Double) -> String {
        guard seconds.isFinite, seconds >= 0 else { return "-" }
        if seconds < 1 { return String(format: "%.3fs", seconds) }
        if seconds < 10 { return String(format: "%.2fs", seconds) }
        if seconds < 60 { return String(format: "%.1fs", seconds) }
        return DurationText.approximate(duration(seconds: seconds))
    }

    /// Bytes as systemd prints them: `512B`, `4.0K`, `45.2M`, `1.5G`.
    static func bytes(_ count: Int64) -> String {
        guard count >= 1024 else { return "\(max(0, count))B" }
        var value = Double(count)
        for unit in ["K", "M", "G", "T"] {
            value /= 1024
            if value < 1024 || unit == "T" { return value < 100 ? String(format: "%.1f%@", value, unit) : String(format: "%.0f%@", value, unit) }
        }
        return "\(count)B"
    }

    static func lastRun(_ run: RunInfo, now: Timestamp) -> String {
        var text = run.outcome ?? run.state
        if let code = run.exitCode, code != 0 { text += "(\(code))" }
        if let end = run.endedAt ?? run.startedAt { text += " " + relative(end, now: now) }
        return text
    }

    public static func relative(_ text: String, now: Timestamp) -> String {
        guard let instant = Timestamp(rfc3339: text) else { return text }
        return DurationText.relative(instant, now: now)
    }

    /// `Tue 2026-12-01 19:00:00 UTC`, as systemctl prints times.
    static func localTime(_ instant: Timestamp, zone: TimeZoneRules) -> String {
        let local = zone.localDateTime(at: instant)
        let day = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"][local.weekday]
        var abbreviation = zone.localTimeType(at: instant.seconds).abbreviation
        if abbreviation.isEmpty || abbreviation.contains("/") {
            // A zone without abbreviations (a fixed offset): its offset instead.
            let offset = zone.offset(at: instant.seconds)
            abbreviation = offset == 0 ? "UTC" : String(instant.rfc3339(offsetSeconds: offset).suffix(6))
        }
        return "\(day) \(local.isoDate) \(local.isoTime(includeFraction: false)) \(abbreviation)"
    }

    /// Seconds as the API gives them (a JSON number), as a duration: anything that is not a
    /// sane number of seconds becomes zero rather than a crash.
    public static func duration(seconds: Double) -> Duration {
        guard seconds.isFinite, abs(seconds) < 1e12 else { return .zero }
        return .microseconds(Int64((seconds * 1_000_000).rounded()))
    }

    public static func timestamp(_ date: Date) -> Timestamp {
        Timestamp(microseconds: Int64((date.timeIntervalSince1970 * 1_000_000).rounded()))
    }

    static func shellQuoted(_ word: String) -> String {
        let safe = word.allSatisfy { $0.isLetter || $0.isNumber || "/-_.=:,+@%".contains($0) }
        return safe && !word.isEmpty ? word : "'" + word.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }

    static func fieldWidth(_ lines: [(String, String)]) -> Int {
        lines.map(\.0.count).max() ?? 0
    }

    /// `key  value` lines with the values aligned; a value of several lines (a multi-line
    /// `shell:`) continues under its first line.
    static func fields(_ lines: [(String, String)]) -> String {
        let width = fieldWidth(lines)
        var text = ""
        for (key, value) in lines {
            var trimmed = Substring(value)
            while trimmed.hasSuffix("\n") { trimmed = trimmed.dropLast() }
            let parts = trimmed.split(separator: "\n", omittingEmptySubsequences: false)
            for (index, part) in parts.enumerated() {
                let label = index == 0 ? key : ""
                text += label.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + part + "\n"
            }
        }
        return text
    }

    /// Columns padded to their widest cell, two spaces apart; `colorColumn` (outcomes) coloured
    /// after padding so escape codes never upset the alignment.
    public static func table(_ rows: [[String]], colorColumn: Int? = nil, colors: Colors = Colors(enabled: false)) -> String {
        guard let first = rows.first else { return "" }
        var widths = [Int](repeating: 0, count: first.count)
        for row in rows {
            for (index, cell) in row.enumerated() { widths[index] = max(widths[index], cell.count) }
        }
        return rows.enumerated().map { rowIndex, row in
            row.enumerated().map { index, cell in
                let padded = index == row.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
                guard index == colorColumn, rowIndex > 0, colors.enabled else { return padded }
                let trimmed = padded.trimmingCharacters(in: .whitespaces)
                let word = trimmed.split(separator: " ").first.map(String.init) ?? trimmed
                return padded.replacingOccurrences(of: word, with: colors.outcome(word))
            }.joined(separator: "  ")
        }.joined(separator: "\n") + "\n"
    }
}

extension String {
    fileprivate var nonEmpty: String? { isEmpty ? nil : self }
}
