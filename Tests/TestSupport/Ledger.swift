import Foundation

/// A file that test jobs append one line to each time they run: the effect that "every
/// occurrence ran exactly once" is counted in, instead of the daemon's own history rows.
///
/// A line is `JOB SCHEDULED_TIME RUN_ID NODE`, written by the job itself with one `write(2)` on
/// a file opened `O_APPEND` (the shell's `>>`), so lines of concurrent runs never interleave.
public struct Ledger: Sendable {
    public let path: String

    public init(path: String) {
        self.path = path
    }

    /// A shell command that appends the running job's line (for `shell:`, inside YAML double
    /// quotes).
    public var append: String {
        #"printf '%s %s %s %s\\n' \"$JOBRUNNER_JOB\" \"$JOBRUNNER_SCHEDULED_TIME\" \"$JOBRUNNER_RUN_ID\" \"${JOBRUNNER_NODE:--}\" >> "#
            + path
    }

    /// One run, as the job wrote it.
    public struct Line: Sendable, Hashable, CustomStringConvertible {
        public var job: String
        public var scheduledTime: String
        /// The scheduled time in microseconds since the epoch.
        public var scheduledMicros: Int64
        public var runID: String
        public var node: String

        /// The scheduled time in whole seconds.
        public var scheduledSecond: Int64 { scheduledMicros.floorDivided(by: 1_000_000) }
        public var description: String { "\(job) \(scheduledTime) \(runID) \(node)" }
    }

    /// Every line written so far (a torn last line, from a writer killed mid-line, is not one).
    public func lines() -> [Line] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { raw in
            let fields = raw.split(separator: " ").map(String.init)
            guard fields.count == 4, let micros = Self.micros(rfc3339: fields[1]) else { return nil }
            return Line(job: fields[0], scheduledTime: fields[1], scheduledMicros: micros, runID: fields[2], node: fields[3])
        }
    }

    /// What the ledger says about a set of expected occurrences.
    public struct Audit: Sendable, CustomStringConvertible {
        /// Expected occurrences (job → whole seconds) with no line.
        public var missing: [String: [Int64]] = [:]
        /// Occurrences with more than one line (job → second → lines).
        public var doubled: [String: [Int64: Int]] = [:]
        /// Lines counted (inside the expected window).
        public var counted = 0

        public var missingCount: Int { missing.values.reduce(0) { $0 + $1.count } }
        public var doubledCount: Int { doubled.values.reduce(0) { $0 + $1.count } }
        public var isExact: Bool { missingCount == 0 && doubledCount == 0 }
        public var description: String {
            let missingText = missing.filter { !$0.value.isEmpty }.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value.prefix(10))" }
            let doubledText = doubled.filter { !$0.value.isEmpty }.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value.sorted { $0.key < $1.key }.prefix(10))" }
            return "\(counted) lines; missing \(missingCount) \(missingText); doubled \(doubledCount) \(doubledText)"
        }
    }

    /// Counts, for each of `jobs`, the lines of every whole second in `seconds` (an occurrence a
    /// second): the doubles and the missing ones. `excused` are occurrences allowed to be
    /// missing or once (job → seconds), e.g. those the history marks `interrupted`.
    public func audit(jobs: [String], seconds: ClosedRange<Int64>, excused: [String: Set<Int64>] = [:]) -> Audit {
        var counts: [String: [Int64: Int]] = [:]
        var audit = Audit()
        for line in lines() where seconds.contains(line.scheduledSecond) && jobs.contains(line.job) {
            counts[line.job, default: [:]][line.scheduledSecond, default: 0] += 1
            audit.counted += 1
        }
        for job in jobs {
            let seen = counts[job] ?? [:]
            let allowed = excused[job] ?? []
            let missing = seconds.filter { seen[$0] == nil && !allowed.contains($0) }
            if !missing.isEmpty { audit.missing[job] = missing }
            let doubled = seen.filter { $0.value > 1 }
            if !doubled.isEmpty { audit.doubled[job] = doubled }
        }
        return audit
    }

    /// Reconciles the ledger with the history: every line must have its row (same run id, job
    /// and scheduled time), and every row that says it ran to its end (`succeeded`/`failed`)
    /// must have its line. `rows` are (run id, job, scheduled µs, outcome). Returns the problems.
    public func reconcile(with rows: [(id: String, job: String, scheduledMicros: Int64, outcome: String)],
                          jobs: Set<String>) -> [String] {
        var problems: [String] = []
        let byID = Dictionary(rows.map { ($0.id, $0) }, uniquingKeysWith: { first, _ in first })
        let lines = self.lines().filter { jobs.contains($0.job) }
        let lineIDs = Set(lines.map(\.runID))
        for line in lines {
            guard let row = byID[line.runID] else {
                problems.append("a run with no history row: \(line)")
                continue
            }
            if row.job != line.job || row.scheduledMicros != line.scheduledMicros {
                problems.append("line \(line) does not match its row \(row)")
            }
        }
        for row in rows where jobs.contains(row.job) && row.outcome == "succeeded" && !lineIDs.contains(row.id) {
            problems.append("row \(row) says it succeeded but its job wrote no line")
        }
        return problems
    }

    /// `2026-12-01T08:52:19Z` or `…19.250000Z` → microseconds since the epoch.
    public static func micros(rfc3339 text: String) -> Int64? {
        let bytes = Array(text.utf8)
        guard bytes.count >= 20, bytes.last == UInt8(ascii: "Z"), bytes[4] == UInt8(ascii: "-"), bytes[10] == UInt8(ascii: "T")
        else { return nil }
        func number(_ range: Range<Int>) -> Int? { Int(String(decoding: bytes[range], as: UTF8.self)) }
        guard let year = number(0..<4), let month = number(5..<7), let day = number(8..<10), let hour = number(11..<13),
            let minute = number(14..<16), let second = number(17..<19)
        else { return nil }
        var fraction: Int64 = 0
        if bytes[19] == UInt8(ascii: ".") {
            let digits = bytes[20..<(bytes.count - 1)]
            guard !digits.isEmpty, digits.count <= 6, let value = Int64(String(decoding: digits, as: UTF8.self)) else { return nil }
            fraction = value
            for _ in digits.count..<6 { fraction *= 10 }
        }
        var parts = tm()
        parts.tm_year = Int32(year - 1900)
        parts.tm_mon = Int32(month - 1)
        parts.tm_mday = Int32(day)
        parts.tm_hour = Int32(hour)
        parts.tm_min = Int32(minute)
        parts.tm_sec = Int32(second)
        return Int64(timegm(&parts)) * 1_000_000 + fraction
    }
}

extension Int64 {
    /// Division rounding towards negative infinity.
    func floorDivided(by divisor: Int64) -> Int64 {
        let (quotient, remainder) = quotientAndRemainder(dividingBy: divisor)
        return remainder < 0 ? quotient - 1 : quotient
    }
}
