import JobRunnerAPI
import Foundation
import JobRunnerSchedule

/// Human output of `jobrunnerctl`: aligned tables and relative times.
enum Render {
    static func status(_ status: StatusResponse, now: Date, colors: Colors = Colors(enabled: false)) -> String {
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
        lines.append(("runs", totals.isEmpty ? "none yet" : totals.joined(separator: ", ")))
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
        let width = lines.map(\.0.count).max() ?? 0
        return lines.map { $0.0.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + $0.1 }.joined(separator: "\n")
    }

    static func jobs(_ jobs: [JobInfo], now: Date, colors: Colors = Colors(enabled: false)) -> String {
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

    static func job(_ job: JobInfo, now: Date, colors: Colors = Colors(enabled: false)) -> String {
        let nowStamp = timestamp(now)
        var lines: [(String, String)] = [("name", job.name)]
        if let command = job.command { lines.append(("command", command.map(shellQuoted).joined(separator: " "))) }
        if let shell = job.shell { lines.append(("shell", shell)) }
        lines.append(("schedule", (job.schedule ?? "(manual only)") + " (\(job.timeZone))"))
        lines.append(("next fire", job.nextFire.map { "\(relative($0, now: nowStamp)) (\($0))" } ?? "-"))
        lines.append(("timeout", job.timeoutSeconds.map { DurationText.format(.seconds($0)) } ?? "none"))
        lines.append(("kill grace", DurationText.format(.seconds(job.killGraceSeconds))))
        if let directory = job.workingDirectory { lines.append(("directory", directory)) }
        if !job.environment.isEmpty { lines.append(("environment", job.environment.joined(separator: ", "))) }
        lines.append(("state", job.state))
        lines.append(("defined at", job.source))
        lines.append(("last run", job.lastRun.map { "\(colors.outcome(lastRun($0, now: nowStamp))) (\($0.id))" } ?? "never"))
        for run in job.active {
            var text = "\(run.id) \(colors.outcome(run.state))" + (run.pid.map { " pid \($0)" } ?? "")
            if let waiting = run.waitingFor { text += ", waiting for \(waiting)" }
            if let status = run.statusText { text += ", \"\(status)\"" }
            lines.append(("active", text))
        }
        let width = lines.map(\.0.count).max() ?? 0
        return lines.map { $0.0.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + $0.1 }.joined(separator: "\n") + "\n"
    }

    static func runs(_ runs: [RunInfo], now: Date, colors: Colors = Colors(enabled: false)) -> String {
        let nowStamp = timestamp(now)
        let clustered = runs.contains { $0.node != nil }
        var rows = [["RUN", "JOB", "TRIGGER", "SCHEDULED", "STARTED", "DURATION", "OUTCOME"] + (clustered ? ["NODE"] : [])]
        for run in runs {
            var outcome = run.outcome ?? run.state
            if let code = run.exitCode, code != 0 { outcome += "(\(code))" }
            if let signal = run.signal { outcome += "(signal \(signal))" }
            rows.append([
                run.id,
                run.job + (run.attempt > 1 ? " #\(run.attempt)" : ""),
                run.trigger,
                relative(run.scheduledTime, now: nowStamp),
                run.startedAt.map { relative($0, now: nowStamp) } ?? "-",
                run.durationSeconds.map { DurationText.approximate(Self.duration(seconds: $0)) } ?? "-",
                outcome,
            ] + (clustered ? [run.node ?? "-"] : []))
        }
        return table(rows, colorColumn: 6, colors: colors)
    }

    /// One run on one line (for `run --wait`).
    static func runLine(_ run: RunInfo, colors: Colors) -> String {
        var text = "\(run.job) \(run.id): \(colors.outcome(run.outcome ?? run.state))"
        if let code = run.exitCode, code != 0 { text += " (exit status \(code))" }
        if let seconds = run.durationSeconds { text += " after " + DurationText.format(Self.duration(seconds: seconds)) }
        return text
    }

    // MARK: - Pieces

    static func lastRun(_ run: RunInfo, now: Timestamp) -> String {
        var text = run.outcome ?? run.state
        if let code = run.exitCode, code != 0 { text += "(\(code))" }
        if let end = run.endedAt ?? run.startedAt { text += " " + relative(end, now: now) }
        return text
    }

    static func relative(_ text: String, now: Timestamp) -> String {
        guard let instant = Timestamp(rfc3339: text) else { return text }
        return DurationText.relative(instant, now: now)
    }

    /// Seconds as the API gives them (a JSON number), as a duration: anything that is not a
    /// sane number of seconds becomes zero rather than a crash.
    static func duration(seconds: Double) -> Duration {
        guard seconds.isFinite, abs(seconds) < 1e12 else { return .zero }
        return .microseconds(Int64((seconds * 1_000_000).rounded()))
    }

    static func timestamp(_ date: Date) -> Timestamp {
        Timestamp(microseconds: Int64((date.timeIntervalSince1970 * 1_000_000).rounded()))
    }

    static func shellQuoted(_ word: String) -> String {
        let safe = word.allSatisfy { $0.isLetter || $0.isNumber || "/-_.=:,+@%".contains($0) }
        return safe && !word.isEmpty ? word : "'" + word.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }

    /// Columns padded to their widest cell, two spaces apart; `colorColumn` (outcomes) coloured
    /// after padding so escape codes never upset the alignment.
    static func table(_ rows: [[String]], colorColumn: Int? = nil, colors: Colors = Colors(enabled: false)) -> String {
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
