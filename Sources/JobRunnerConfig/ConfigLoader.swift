#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import JobRunnerSchedule
import Synchronization

/// Reads a configuration file and validates all of it, reporting every problem as
/// `file:line:column: message`.
///
/// Loading reads files and the zone database: it is blocking work for the thread pool.
public struct ConfigLoader: Sendable {
    /// Largest configuration file accepted; a bigger one is almost certainly a mistake.
    public static let maximumFileSize = 8 << 20
    /// Deepest `[`/`{` nesting accepted (the YAML composer recurses once per level).
    public static let maximumNesting = 256

    static let topLevelKeys = ["daemon", "jobs", "include"]
    static let includedTopLevelKeys = ["jobs"]
    static let daemonKeys = ["time_zone", "max_concurrent_runs", "blocking_threads", "shutdown_grace", "pools", "history", "control", "metrics",
                             "cluster"]
    static let clusterKeys = ["database", "node_name", "lease"]
    static let controlKeys = ["group", "allowed_uids", "allowed_groups", "max_connections"]
    static let metricsKeys = ["listen"]
    static let historyKeys = ["output_tail", "keep_per_job", "max_age"]
    static let jobKeys = [
        "command", "shell", "schedule", "on_calendar", "every", "run_on_start", "time_zone", "random_delay", "fixed_random_delay",
        "timeout", "kill_grace", "environment", "inherit_environment", "working_directory", "enabled",
        "overlap", "max_queue", "max_instances", "pool", "retry",
        "user", "group", "supplementary_groups", "umask", "nice", "limits",
        "on_failure", "on_success", "hook_timeout", "catch_up", "catch_up_max", "on_reload", "on_remove", "steps", "after", "http",
    ]
    /// Keys about the run's process, refused for an http job.
    static let processOnlyKeys = ["user", "group", "supplementary_groups", "limits", "umask", "nice", "working_directory", "inherit_environment"]
    static let stepKeys = ["name", "command", "shell", "http", "timeout", "continue_on_failure"]
    static let groupStepKeys = ["name", "parallel", "continue_on_failure"]
    static let parallelKeys = ["max", "steps"]
    static let retryKeys = ["attempts", "backoff", "max_backoff", "jitter", "on"]
    static let limitKeys = ["nofile", "nproc", "cpu", "as", "core", "fsize"]

    let zones: TimeZoneDatabase
    /// How many threads may read the jobs of a large file (1 or 2): the daemon gives 2 when its
    /// blocking pool has 2 threads or more.
    public var readThreads: Int
    /// From how many jobs in one `jobs:` section a second thread reads it, in chunks of half as
    /// many (the fuzzer lowers it, to compare the two ways on small files).
    public var parallelReadFrom: Int

    public init(zones: TimeZoneDatabase = .system, readThreads: Int = 1, parallelReadFrom: Int = Self.parallelReadThreshold) {
        self.zones = zones
        self.readThreads = readThreads
        self.parallelReadFrom = max(2, parallelReadFrom)
    }

    /// Loads and validates the file at `path`.
    @available(*, noasync, message: "reads files; call from the thread pool")
    public func load(path: String) throws(ConfigErrors) -> Configuration {
        let text: String
        switch readConfigFile(path) {
        case .success(let contents): text = contents
        case .failure(let error): throw ConfigErrors([error])
        }
        return try parse(text, path: path)
    }

    /// Validates configuration text as if it were the file at `path`.
    @available(*, noasync, message: "reads the zone database; call from the thread pool")
    public func parse(_ text: String, path: String) throws(ConfigErrors) -> Configuration {
        var reader = NodeReader(file: path)
        reader.noteSource(text)
        if let deep = deepNesting(text) {
            reader.fail(.syntax, at: SourceLocation(file: path, line: deep.line, column: deep.column),
                        "nesting deeper than \(Self.maximumNesting) levels")
            throw ConfigErrors(reader.errors)
        }
        // The jobs are read as they are composed, when two threads may read.
        let stream = readThreads > 1 ? JobStream(loader: self, file: path, daemon: nil, seen: [:], schedules: reader.parsedSchedules) : nil
        defer { stream?.abandon() }
        let root: YAMLNode?
        do {
            root = try YAMLNode.compose(text, jobs: stream?.watcher)
        } catch {
            throw ConfigErrors([Self.syntaxError(error, file: path, text: text)])
        }
        guard let root, !NodeReader.isNull(root) else {
            throw ConfigErrors([ConfigError(code: .missingKey, location: SourceLocation(file: path, line: 1, column: 1),
                                            message: "the file is empty: expected a mapping with a 'jobs:' section")])
        }
        guard let top = reader.mapping(root, what: "configuration") else {
            throw ConfigErrors(reader.errors)
        }
        reader.checkKeys(top, known: Self.topLevelKeys, context: "at the top level")

        let daemonIndex = top.firstIndex { $0.key == "daemon" }
        let daemon = daemonSettings(daemonIndex.map { top[$0].value }, reader: &reader)

        var jobs: [JobDefinition] = []
        var seen: [String: SourceLocation] = [:]
        if let jobsIndex = top.firstIndex(where: { $0.key == "jobs" }) {
            // The stream read its jobs with the settings of a `daemon:` written before `jobs:`.
            let streamed = (daemonIndex.map { $0 < jobsIndex } ?? true) ? stream : nil
            if streamed == nil { stream?.abandon() }
            readJobs(top[jobsIndex].value, daemon: daemon, streamed: streamed, reader: &reader, into: &jobs, seen: &seen)
        } else if top.first(where: { $0.key == "include" }) == nil {
            reader.fail(.missingKey, at: root, "missing 'jobs:' section (an empty one, 'jobs: {}', is allowed)")
        }
        if let include = top.first(where: { $0.key == "include" }) {
            readIncludes(include.value, mainPath: path, daemon: daemon, reader: &reader, into: &jobs, seen: &seen)
        }
        checkChains(jobs, defined: seen, reader: &reader)

        guard reader.errors.isEmpty else {
            // File order (main file first, then includes as read), then position.
            var fileOrder: [String: Int] = [:]
            for error in reader.errors where fileOrder[error.location.file] == nil {
                fileOrder[error.location.file] = error.location.file == path ? -1 : fileOrder.count
            }
            throw ConfigErrors(reader.errors.sorted {
                (fileOrder[$0.location.file]!, $0.location.line, $0.location.column)
                    < (fileOrder[$1.location.file]!, $1.location.line, $1.location.column)
            })
        }
        return Configuration(path: path, daemon: daemon, jobs: jobs, contentHash: StableHash.hex(reader.sources.joined(separator: "\u{0}")))
    }

    /// The `daemon:` section's settings (its defaults where it is missing or wrong), in the
    /// system's zone unless it names one.
    func daemonSettings(_ section: YAMLNode?, reader: inout NodeReader) -> DaemonSettings {
        var daemon = DaemonSettings(timeZone: .utc)
        var zoneKnown = false
        if let section, !NodeReader.isNull(section), let settings = readDaemon(section, reader: &reader) {
            daemon = settings.settings
            zoneKnown = settings.zoneGiven
        }
        if !zoneKnown {
            daemon.timeZone = zones.systemZone()
        }
        return daemon
    }

    /// Reads a `jobs:` section: what `streamed` read of it while it was composed, when it saw
    /// all of it; otherwise the composed section, anew (on two threads when it is large).
    private func readJobs(_ node: YAMLNode, daemon: DaemonSettings, streamed: JobStream?, reader: inout NodeReader,
                          into jobs: inout [JobDefinition], seen: inout [String: SourceLocation]) {
        guard !NodeReader.isNull(node) else { return }
        guard case .mapping(let mapping) = node else {
            _ = reader.mapping(node, what: "jobs")
            return
        }
        let stream: JobStream
        if let streamed, streamed.saw(mapping) {
            stream = streamed
        } else {
            streamed?.abandon()
            stream = JobStream(loader: self, file: reader.file, daemon: daemon, seen: seen, schedules: reader.parsedSchedules)
            stream.feed(mapping)
        }
        let read = stream.finish()
        jobs.append(contentsOf: read.jobs)
        reader.adopt(read.errors)
        seen = read.seen
    }

    /// Runs `body` on a new thread (which inherits this one's priority), or returns nil when the
    /// system has no thread to give.
    static func startThread(_ body: @escaping @Sendable () -> Void) -> pthread_t? {
        final class Body: Sendable {
            let run: @Sendable () -> Void
            init(_ run: @escaping @Sendable () -> Void) { self.run = run }
        }
        let context = Unmanaged.passRetained(Body(body)).toOpaque()
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { context in
            Unmanaged<Body>.fromOpaque(context!).takeRetainedValue().run()
            return nil
        }, context)
        guard rc == 0 else {
            Unmanaged<Body>.fromOpaque(context).release()
            return nil
        }
        return thread
    }

    /// From how many jobs in one `jobs:` section they are read on two threads by default (when
    /// ``readThreads`` allows it): below it, a second thread costs more than it saves.
    public static let parallelReadThreshold = 512

    // MARK: - include:

    /// `include:` globs, relative to the main file, expanded in sorted order; each file holds a
    /// `jobs:` section. A pattern without wildcards names a file that must exist.
    private func readIncludes(_ node: YAMLNode, mainPath: String, daemon: DaemonSettings, reader: inout NodeReader,
                              into jobs: inout [JobDefinition], seen: inout [String: SourceLocation]) {
        let patterns: [(String, YAMLNode)]
        if case .sequence(let sequence) = node {
            patterns = sequence.compactMap { item in reader.nonEmptyString(item, what: "include").map { ($0, item) } }
        } else if let single = reader.nonEmptyString(node, what: "include") {
            patterns = [(single, node)]
        } else {
            return
        }
        let directory = mainPath.contains("/") ? String(mainPath[..<mainPath.lastIndex(of: "/")!]) : "."
        var included = Set<String>()
        for (pattern, patternNode) in patterns {
            let absolute = pattern.hasPrefix("/") ? pattern : directory + "/" + pattern
            let isGlob = pattern.contains { "*?[".contains($0) }
            let files = Self.glob(absolute)
            if files.isEmpty && !isGlob {
                reader.fail(.unreadable, at: patternNode, "include: '\(pattern)' does not exist")
                continue
            }
            for file in files where included.insert(file).inserted {
                includeFile(file, daemon: daemon, reader: &reader, into: &jobs, seen: &seen)
            }
        }
    }

    private func includeFile(_ file: String, daemon: DaemonSettings, reader: inout NodeReader, into jobs: inout [JobDefinition],
                             seen: inout [String: SourceLocation]) {
        let text: String
        switch readConfigFile(file) {
        case .success(let contents): text = contents
        case .failure(let error):
            reader.fail(error.code, at: error.location, error.message)
            return
        }
        reader.noteSource(text)
        var fileReader = NodeReader(file: file)
        defer { reader.adopt(fileReader.errors) }
        if let deep = deepNesting(text) {
            fileReader.fail(.syntax, at: SourceLocation(file: file, line: deep.line, column: deep.column), "nesting deeper than \(Self.maximumNesting) levels")
            return
        }
        let stream = readThreads > 1 ? JobStream(loader: self, file: file, daemon: daemon, seen: seen, schedules: reader.parsedSchedules) : nil
        defer { stream?.abandon() }
        let root: YAMLNode?
        do {
            root = try YAMLNode.compose(text, jobs: stream?.watcher)
        } catch {
            let syntax = Self.syntaxError(error, file: file, text: text)
            fileReader.fail(.syntax, at: syntax.location, syntax.message)
            return
        }
        guard let root, !NodeReader.isNull(root) else { return }
        guard let top = fileReader.mapping(root, what: "included file") else { return }
        fileReader.checkKeys(top, known: Self.includedTopLevelKeys, context: "in an included file (only 'jobs:' belongs here)")
        if let section = top.first(where: { $0.key == "jobs" }) {
            readJobs(section.value, daemon: daemon, streamed: stream, reader: &fileReader, into: &jobs, seen: &seen)
        }
    }

    /// Paths matching a shell pattern, sorted.
    @available(*, noasync)
    static func glob(_ pattern: String) -> [String] {
        var result = glob_t()
        defer { globfree(&result) }
        guard Glibc.glob(pattern, 0, nil, &result) == 0 else { return [] }
        var paths: [String] = []
        for index in 0..<Int(result.gl_pathc) {
            if let path = result.gl_pathv[index] { paths.append(String(cString: path)) }
        }
        return paths.sorted()
    }

    // MARK: - daemon:

    /// `daemon.cluster: {database, node_name, lease}`.
    private func readCluster(_ node: YAMLNode, reader: inout NodeReader) -> ClusterSettings? {
        guard let entries = reader.mapping(node, what: "daemon.cluster") else { return nil }
        reader.checkKeys(entries, known: Self.clusterKeys, context: "in 'daemon.cluster'")
        var database: PostgresURL?
        var nodeName = UserDatabase.hostName()
        var lease = ClusterSettings.defaultLease
        var valid = true
        for entry in entries {
            func what() -> String { "daemon.cluster.\(entry.key)" }
            switch entry.key {
            case "database":
                guard let text = reader.nonEmptyString(entry.value, what: what()) else { valid = false; continue }
                switch PostgresURL.parse(text) {
                case .success(let url): database = url
                case .failure(let error):
                    reader.fail(.invalidValue, at: entry.value, "\(what()): \(error.message)")
                    valid = false
                }
            case "node_name":
                guard let name = reader.nonEmptyString(entry.value, what: what()) else { valid = false; continue }
                guard Self.isValidJobName(name), name.utf8.count <= 64 else {
                    reader.fail(.invalidName, at: entry.value, "\(what()): '\(name)' may only contain letters, digits, '_', '.' and '-' (at most 64)")
                    valid = false
                    continue
                }
                nodeName = name
            case "lease":
                guard let value = duration(entry.value, what: what(), allowZero: false, reader: &reader) else { valid = false; continue }
                guard value >= .seconds(2) else {
                    reader.fail(.invalidValue, at: entry.value, "\(what()): at least 2s (nodes heartbeat four times per lease)")
                    valid = false
                    continue
                }
                lease = value
            default:
                break
            }
        }
        guard valid else { return nil }
        guard let database else {
            reader.fail(.missingKey, at: node, "daemon.cluster: missing 'database' (a URL such as postgresql://jobrunner@db.example/jobrunner)")
            return nil
        }
        return ClusterSettings(database: database, nodeName: nodeName, lease: lease)
    }

    private func readDaemon(_ node: YAMLNode, reader: inout NodeReader) -> (settings: DaemonSettings, zoneGiven: Bool)? {
        guard let pairs = reader.mapping(node, what: "daemon") else { return nil }
        reader.checkKeys(pairs, known: Self.daemonKeys, context: "in 'daemon'")
        var settings = DaemonSettings(timeZone: .utc)
        var zoneGiven = false
        for pair in pairs {
            func what() -> String { "daemon.\(pair.key)" }
            switch pair.key {
            case "time_zone":
                if let name = reader.nonEmptyString(pair.value, what: what()) {
                    do {
                        settings.timeZone = try zones.zone(named: name)
                        zoneGiven = true
                    } catch {
                        reader.fail(.unknownTimeZone, at: pair.value, "\(what()): \(error.message)")
                    }
                }
            case "max_concurrent_runs":
                if let value = reader.integer(pair.value, what: what(), range: 1...100_000) { settings.maxConcurrentRuns = value }
            case "blocking_threads":
                if let value = reader.integer(pair.value, what: what(), range: 1...256) { settings.blockingThreads = value }
            case "shutdown_grace":
                if let value = duration(pair.value, what: what(), allowZero: true, reader: &reader) { settings.shutdownGrace = value }
            case "pools":
                guard !NodeReader.isNull(pair.value), let pools = reader.mapping(pair.value, what: what()) else { continue }
                for pool in pools {
                    if !Self.isValidJobName(pool.key) {
                        reader.fail(.invalidName, at: pool.keyNode, "\(what()): pool name '\(pool.key)' may only contain letters, digits, '_', '.' and '-'")
                    }
                    // `db: 2`, or `db: {size: 2, cluster_wide: true}` (the limit holds across a cluster).
                    if case .mapping = pool.value, let entries = reader.mapping(pool.value, what: "\(what()).\(pool.key)") {
                        reader.checkKeys(entries, known: ["size", "cluster_wide"], context: "in '\(what()).\(pool.key)'")
                        let keyed = KeyedPairs(entries)
                        guard let sizeEntry = keyed["size"] else {
                            reader.fail(.missingKey, at: pool.value, "\(what()).\(pool.key): missing 'size'")
                            continue
                        }
                        if let size = reader.integer(sizeEntry.value, what: "\(what()).\(pool.key).size", range: 1...100_000) {
                            settings.pools[pool.key] = size
                        }
                        if let flag = keyed["cluster_wide"], let wide = reader.bool(flag.value, what: "\(what()).\(pool.key).cluster_wide"), wide {
                            settings.clusterWidePools.insert(pool.key)
                        }
                    } else if let size = reader.integer(pool.value, what: "\(what()).\(pool.key)", range: 1...100_000) {
                        settings.pools[pool.key] = size
                    }
                }
            case "control":
                guard !NodeReader.isNull(pair.value), let entries = reader.mapping(pair.value, what: what()) else { continue }
                reader.checkKeys(entries, known: Self.controlKeys, context: "in 'daemon.control'")
                for entry in entries {
                    func what() -> String { "daemon.control.\(entry.key)" }
                    switch entry.key {
                    case "group":
                        guard let name = reader.nonEmptyString(entry.value, what: what()),
                            !reader.rejectsOutOfRangeID(name, at: entry.value, what: what())
                        else { continue }
                        if let gid = UserDatabase.group(name) {
                            settings.control.group = name
                            settings.control.groupID = gid
                        } else {
                            reader.fail(.invalidValue, at: entry.value, "\(what()): no such group '\(name)'")
                        }
                    case "allowed_uids":
                        guard case .sequence(let items) = entry.value else {
                            reader.fail(.wrongType, at: entry.value, "\(what()): expected a list of uids or user names")
                            continue
                        }
                        for item in items {
                            guard let text = reader.nonEmptyString(item, what: what()),
                                !reader.rejectsOutOfRangeID(text, at: item, what: what())
                            else { continue }
                            if let user = UserDatabase.user(text) {
                                settings.control.allowedUIDs.append(user.uid)
                            } else if let uid = UInt32(text) {
                                settings.control.allowedUIDs.append(uid)
                            } else {
                                reader.fail(.invalidValue, at: item, "\(what()): no such user '\(text)'")
                            }
                        }
                    case "allowed_groups":
                        guard let names = reader.stringList(entry.value, what: what()) else { continue }
                        for name in names where !reader.rejectsOutOfRangeID(name, at: entry.value, what: what()) {
                            if let gid = UserDatabase.group(name) {
                                settings.control.allowedGroups.append(name)
                                settings.control.allowedGIDs.append(gid)
                            } else {
                                reader.fail(.invalidValue, at: entry.value, "\(what()): no such group '\(name)'")
                            }
                        }
                    case "max_connections":
                        if let value = reader.integer(entry.value, what: what(), range: 1...100_000) { settings.control.maxConnections = value }
                    default:
                        break
                    }
                }
            case "cluster":
                guard !NodeReader.isNull(pair.value) else { continue }
                settings.cluster = readCluster(pair.value, reader: &reader)
            case "metrics":
                guard !NodeReader.isNull(pair.value), let entries = reader.mapping(pair.value, what: what()) else { continue }
                reader.checkKeys(entries, known: Self.metricsKeys, context: "in 'daemon.metrics'")
                for entry in entries where entry.key == "listen" {
                    guard let text = reader.nonEmptyString(entry.value, what: "daemon.metrics.listen") else { continue }
                    if let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (1...65_535).contains(port) {
                        var host = String(text[..<colon])
                        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
                        settings.metricsListen = (host.isEmpty ? "0.0.0.0" : host, port)
                    } else {
                        reader.fail(.invalidValue, at: entry.value, "daemon.metrics.listen: '\(text)' is not an address such as 127.0.0.1:9464")
                    }
                }
            case "history":
                guard !NodeReader.isNull(pair.value), let history = reader.mapping(pair.value, what: what()) else { continue }
                reader.checkKeys(history, known: Self.historyKeys, context: "in 'daemon.history'")
                for entry in history {
                    switch entry.key {
                    case "output_tail":
                        if let size = size(entry.value, what: "daemon.history.output_tail", reader: &reader) {
                            if size > 16 << 20 {
                                reader.fail(.invalidValue, at: entry.value, "daemon.history.output_tail: at most 16MiB per run")
                            } else {
                                settings.outputTail = Int(size)
                            }
                        }
                    case "keep_per_job":
                        if let value = reader.integer(entry.value, what: "daemon.history.keep_per_job", range: 1...1_000_000) {
                            settings.keepPerJob = value
                        }
                    case "max_age":
                        if let value = duration(entry.value, what: "daemon.history.max_age", allowZero: false, reader: &reader) {
                            settings.maxHistoryAge = value
                        }
                    default:
                        break
                    }
                }
            default:
                break
            }
        }
        return (settings, zoneGiven)
    }

    // MARK: - jobs:

    func readJob(name: String, keyNode: YAMLNode, node: YAMLNode, daemon: DaemonSettings, reader: inout NodeReader) -> JobDefinition? {
        let errorsBefore = reader.errors.count
        if !Self.isValidJobName(name) {
            reader.fail(.invalidName, at: keyNode, "job name '\(name)' may only contain letters, digits, '_', '.' and '-'")
        }
        let context = "job '\(name)'"
        guard let pairs = reader.mapping(node, what: context) else { return nil }
        reader.checkKeys(pairs, known: Self.jobKeys, context: "in \(context)")
        let keyed = KeyedPairs(pairs)

        // command / shell / steps / http: exactly one.
        var command: JobCommand?
        var steps: [JobStep] = []
        var http: HTTPCall?
        let found = readCommand(keyed, context: context, reader: &reader)
        let works = ["command", "shell", "steps", "http"].compactMap { keyed[$0] }
            .sorted { ($0.keyNode.mark.line, $0.keyNode.mark.column) < ($1.keyNode.mark.line, $1.keyNode.mark.column) }
        // (command and shell together are readCommand's to report.)
        func kind(_ key: String) -> String { key == "shell" ? "command" : key }
        if let first = works.first, let later = works.first(where: { kind($0.key) != kind(first.key) }) {
            reader.fail(.conflictingKeys, at: later.keyNode,
                        "\(context) has both '\(first.key)' and '\(later.key)'; a run is one of command, shell, steps or http")
        } else if let stepsPair = keyed["steps"] {
            var names = StepNames()
            steps = readSteps(stepsPair.value, what: "\(context): steps", context: context, names: &names, reader: &reader) ?? []
        } else if let httpPair = keyed["http"] {
            http = readHTTP(httpPair.value, what: "\(context): http", reader: &reader)
            for key in Self.processOnlyKeys where keyed[key] != nil {
                reader.fail(.conflictingKeys, at: keyed[key]!.keyNode,
                            "\(context): '\(key)' makes no sense for an http job (the request is made inside the daemon)")
            }
        } else {
            switch found {
            case .found(let value): command = value
            case .absent: reader.fail(.missingKey, at: keyNode, "\(context) needs 'command' (an argv list), 'shell' (a command line), 'steps' or 'http'")
            }
        }

        // The job's zone comes first: schedules are computed in it.
        var zone = daemon.timeZone
        if let pair = keyed["time_zone"], let name = reader.nonEmptyString(pair.value, what: "\(context): time_zone") {
            do {
                zone = try zones.zone(named: name)
            } catch {
                reader.fail(.unknownTimeZone, at: pair.value, "\(context): time_zone: \(error.message)")
            }
        }

        // schedule / on_calendar / every: at most one.
        var trigger: JobTrigger?
        let schedulePairs = ["schedule", "on_calendar", "every"].compactMap { keyed[$0] }
        if schedulePairs.count > 1 {
            let sorted = schedulePairs.sorted { ($0.keyNode.mark.line, $0.keyNode.mark.column) < ($1.keyNode.mark.line, $1.keyNode.mark.column) }
            reader.fail(.conflictingKeys, at: sorted[1].keyNode,
                        "\(context) has both '\(sorted[0].key)' and '\(sorted[1].key)'; a job has at most one of schedule, on_calendar and every")
        } else if let pair = schedulePairs.first {
            switch pair.key {
            case "schedule":
                trigger = cronTrigger(pair.value, context: context, reader: &reader)
            case "on_calendar":
                trigger = calendarTrigger(pair.value, context: context, reader: &reader)
            default:
                if let interval = duration(pair.value, what: "\(context): every", allowZero: false, reader: &reader) {
                    trigger = .interval(interval)
                }
            }
        }

        var job = JobDefinition(name: name, command: command ?? .argv(["/bin/true"]), steps: steps, trigger: trigger, timeZone: zone,
                                location: reader.location(keyNode))
        job.http = http
        if let pair = keyed["after"], !NodeReader.isNull(pair.value) {
            job.after = readAfter(pair.value, context: context, reader: &reader)
        }
        if let pair = keyed["run_on_start"], let value = reader.bool(pair.value, what: "\(context): run_on_start") {
            job.runOnStart = value
        }
        if let pair = keyed["random_delay"] {
            job.randomDelay = duration(pair.value, what: "\(context): random_delay", allowZero: true, reader: &reader)
        }
        if let pair = keyed["fixed_random_delay"], let value = reader.bool(pair.value, what: "\(context): fixed_random_delay") {
            job.fixedRandomDelay = value
            if value && keyed["random_delay"] == nil {
                reader.fail(.missingKey, at: pair.keyNode, "\(context): fixed_random_delay needs random_delay (the range of the offset)")
            }
        }
        if let pair = keyed["timeout"] {
            job.timeout = duration(pair.value, what: "\(context): timeout", allowZero: false, reader: &reader)
        }
        if let pair = keyed["kill_grace"], let grace = duration(pair.value, what: "\(context): kill_grace", allowZero: true, reader: &reader) {
            job.killGrace = grace
        }
        if let pair = keyed["environment"], !NodeReader.isNull(pair.value),
            let environment = reader.stringMap(pair.value, what: "\(context): environment")
        {
            for (key, _) in environment where !Self.isValidEnvironmentName(key) {
                reader.fail(.invalidValue, at: pair.value, "\(context): environment: '\(key)' is not a valid variable name")
            }
            job.environment = environment
        }
        if let pair = keyed["working_directory"], let directory = reader.nonEmptyString(pair.value, what: "\(context): working_directory") {
            if directory.hasPrefix("/") {
                job.workingDirectory = directory
            } else {
                reader.fail(.invalidValue, at: pair.value, "\(context): working_directory: '\(directory)' must be an absolute path")
            }
        }
        if let pair = keyed["enabled"], let enabled = reader.bool(pair.value, what: "\(context): enabled") {
            job.enabled = enabled
        }
        if let pair = keyed["inherit_environment"], let names = reader.stringList(pair.value, what: "\(context): inherit_environment") {
            for name in names where !Self.isValidEnvironmentName(name) {
                reader.fail(.invalidValue, at: pair.value, "\(context): inherit_environment: '\(name)' is not a valid variable name")
            }
            job.inheritEnvironment = names
        }
        readRunPolicies(&job, keyed: keyed, keyNode: keyNode, context: context, daemon: daemon, reader: &reader)
        readIdentity(&job, keyed: keyed, context: context, reader: &reader)
        return reader.errors.count == errorsBefore ? job : nil
    }

    // MARK: - after:

    /// `after:` — `[build]`, `build`, or `{build: succeeded, test: any}`.
    private func readAfter(_ node: YAMLNode, context: String, reader: inout NodeReader) -> [AfterCondition] {
        let what = "\(context): after"
        let outcomes = AfterCondition.Outcome.allCases.map(\.rawValue).joined(separator: ", ")
        func name(_ node: YAMLNode) -> String? {
            guard let text = reader.nonEmptyString(node, what: what) else { return nil }
            guard Self.isValidJobName(text) else {
                reader.fail(.invalidName, at: node, "\(what): '\(text)' is not a job name")
                return nil
            }
            return text
        }
        let errorsBefore = reader.errors.count
        var conditions: [AfterCondition] = []
        switch node {
        case .scalar:
            if let job = name(node) { conditions.append(AfterCondition(job: job, location: reader.location(node))) }
        case .sequence(let sequence):
            for element in sequence {
                if let job = name(element) { conditions.append(AfterCondition(job: job, location: reader.location(element))) }
            }
        default:
            guard let pairs = reader.mapping(node, what: what) else { return [] }
            for pair in pairs {
                guard Self.isValidJobName(pair.key) else {
                    reader.fail(.invalidName, at: pair.keyNode, "\(what): '\(pair.key)' is not a job name")
                    continue
                }
                guard let text = reader.nonEmptyString(pair.value, what: "\(what).\(pair.key)") else { continue }
                guard let outcome = AfterCondition.Outcome(rawValue: text) else {
                    reader.fail(.invalidValue, at: pair.value, "\(what).\(pair.key): '\(text)' is not one of \(outcomes)")
                    continue
                }
                conditions.append(AfterCondition(job: pair.key, outcome: outcome, location: reader.location(pair.keyNode)))
            }
        }
        if conditions.isEmpty, reader.errors.count == errorsBefore {
            reader.fail(.invalidValue, at: node, "\(what): names no job")
        }
        var seen: Set<String> = []
        for condition in conditions where !seen.insert(condition.job).inserted {
            reader.fail(.duplicateKey, at: condition.location, "\(what): '\(condition.job)' is named twice")
        }
        return conditions
    }

    /// Every `after:` names a job that exists, and no job follows itself through a chain.
    private func checkChains(_ jobs: [JobDefinition], defined: [String: SourceLocation], reader: inout NodeReader) {
        // Only the edges: a file of many jobs, few of them chained, costs next to nothing here.
        let edges = Dictionary(jobs.lazy.filter { !$0.after.isEmpty }.map { ($0.name, $0.after) }, uniquingKeysWith: { first, _ in first })
        guard !edges.isEmpty else { return }
        for (name, after) in edges.sorted(by: { $0.key < $1.key }) {
            for condition in after where defined[condition.job] == nil {
                var message = "job '\(name)': after: no job named '\(condition.job)'"
                if let suggestion = Suggestion.closest(to: condition.job, among: Array(defined.keys).sorted()) {
                    message += " (did you mean '\(suggestion)'?)"
                }
                reader.fail(.unknownJob, at: condition.location, message)
            }
        }
        // Depth-first: a job met again while on the path closes a cycle.
        var state: [String: Bool] = [:]  // false: on the path; true: done
        var reported: Set<String> = []
        func visit(_ name: String, path: [String]) {
            if state[name] == true { return }
            if state[name] == false {
                let cycle = Array(path[path.firstIndex(of: name)!...]) + [name]
                let key = Set(cycle).sorted().joined(separator: ",")
                let from = cycle[cycle.count - 2]
                guard reported.insert(key).inserted, let condition = edges[from]?.first(where: { $0.job == name }),
                    let target = defined[name]
                else { return }
                reader.fail(.cycle, at: condition.location,
                            "job '\(from)': after: '\(name)' makes a cycle (\(cycle.joined(separator: " → "))); '\(name)' is defined at \(target.file):\(target.line):\(target.column)")
                return
            }
            state[name] = false
            for condition in edges[name] ?? [] where edges[condition.job] != nil {
                visit(condition.job, path: path + [name])
            }
            state[name] = true
        }
        for name in edges.keys.sorted() { visit(name, path: []) }
    }

    // MARK: - http:

    static let httpKeys = ["url", "method", "headers", "header_files", "body", "expect_status", "ca_file", "follow_redirects"]
    static let httpMethods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

    /// `http: {url, method, headers, header_files, body, expect_status, ca_file, follow_redirects}`.
    private func readHTTP(_ node: YAMLNode, what: String, reader: inout NodeReader) -> HTTPCall? {
        guard let pairs = reader.mapping(node, what: what) else { return nil }
        reader.checkKeys(pairs, known: Self.httpKeys, context: "in \(what)")
        let keyed = KeyedPairs(pairs)
        let errorsBefore = reader.errors.count
        guard let urlPair = keyed["url"] else {
            reader.fail(.missingKey, at: node, "\(what) needs 'url' (http:// or https://)")
            return nil
        }
        guard let url = reader.nonEmptyString(urlPair.value, what: "\(what).url") else { return nil }
        let lowered = url.lowercased()
        if !(lowered.hasPrefix("http://") || lowered.hasPrefix("https://")) || url.contains(where: { $0.isWhitespace }) {
            reader.fail(.invalidValue, at: urlPair.value, "\(what).url: '\(url)' is not an http:// or https:// URL")
        }
        var call = HTTPCall(url: url)
        if let pair = keyed["method"], let method = reader.nonEmptyString(pair.value, what: "\(what).method") {
            if Self.httpMethods.contains(method.uppercased()) {
                call.method = method.uppercased()
            } else {
                reader.fail(.invalidValue, at: pair.value, "\(what).method: '\(method)' is not one of \(Self.httpMethods.joined(separator: ", "))")
            }
        }
        func headers(_ key: String) -> [HTTPCall.Header] {
            guard let pair = keyed[key], !NodeReader.isNull(pair.value), let entries = reader.mapping(pair.value, what: "\(what).\(key)") else {
                return []
            }
            var result: [HTTPCall.Header] = []
            for entry in entries {
                let valid = !entry.key.isEmpty && entry.key.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "!#$%&'*+-.^_`|~".contains($0)) }
                guard valid else {
                    reader.fail(.invalidValue, at: entry.keyNode, "\(what).\(key): '\(entry.key)' is not a header name")
                    continue
                }
                guard let value = reader.string(entry.value, what: "\(what).\(key).\(entry.key)") else { continue }
                if value.unicodeScalars.contains(where: { ($0.value < 0x20 && $0 != "\t") || $0.value == 0x7F }) {
                    reader.fail(.invalidValue, at: entry.value, "\(what).\(key).\(entry.key): a header value cannot hold a line break or control character")
                    continue
                }
                if key == "header_files", !value.hasPrefix("/") {
                    reader.fail(.invalidValue, at: entry.value, "\(what).header_files.\(entry.key): '\(value)' must be an absolute path")
                    continue
                }
                result.append(HTTPCall.Header(entry.key, value))
            }
            return result
        }
        call.headers = headers("headers")
        call.headerFiles = headers("header_files")
        if let pair = keyed["body"] { call.body = reader.string(pair.value, what: "\(what).body") }
        if let pair = keyed["expect_status"] {
            call.expectStatus = statusRanges(pair.value, what: "\(what).expect_status", reader: &reader) ?? HTTPCall.defaultExpectStatus
        }
        if let pair = keyed["ca_file"], let path = reader.nonEmptyString(pair.value, what: "\(what).ca_file") {
            if path.hasPrefix("/") {
                call.caFile = path
            } else {
                reader.fail(.invalidValue, at: pair.value, "\(what).ca_file: '\(path)' must be an absolute path")
            }
        }
        if let pair = keyed["follow_redirects"], let value = reader.bool(pair.value, what: "\(what).follow_redirects") {
            call.followRedirects = value
        }
        return reader.errors.count == errorsBefore ? call : nil
    }

    /// `[200-299, 304]`, `200`, or `"200-204"`: statuses 100–599.
    private func statusRanges(_ node: YAMLNode, what: String, reader: inout NodeReader) -> [ClosedRange<Int>]? {
        var items: [YAMLNode] = []
        if case .sequence(let sequence) = node { items = Array(sequence) } else { items = [node] }
        guard !items.isEmpty else {
            reader.fail(.invalidValue, at: node, "\(what): must list at least one status")
            return nil
        }
        var ranges: [ClosedRange<Int>] = []
        for item in items {
            guard case .scalar(let scalar) = item else {
                reader.fail(.wrongType, at: item, "\(what): expected a status (200) or a range (200-299), found \(NodeReader.describe(item))")
                return nil
            }
            let parts = scalar.string.split(separator: "-", omittingEmptySubsequences: false).map { Int($0.filter { $0 != " " }) }
            guard (1...2).contains(parts.count), let low = parts.first!, let high = parts.last!, 100 <= low, low <= high, high <= 599 else {
                reader.fail(.invalidValue, at: item, "\(what): '\(scalar.string)' is not a status (100-599) or a range of them (200-299)")
                return nil
            }
            ranges.append(low...high)
        }
        return ranges
    }

    // MARK: - Run policies

    /// `command:` (an argv) or `shell:` (a command line), exactly one: nil (with an error) when
    /// both are there or a value is wrong, `.absent` when neither is.
    private enum CommandKeys {
        case absent
        case found(JobCommand?)
    }

    private func readCommand(_ keyed: KeyedPairs, context: String, reader: inout NodeReader) -> CommandKeys {
        let commandPair = keyed["command"]
        let shellPair = keyed["shell"]
        if let commandPair, let shellPair {
            let later = commandPair.keyNode.mark.line > shellPair.keyNode.mark.line ? commandPair : shellPair
            reader.fail(.conflictingKeys, at: later.keyNode, "\(context) has both 'command' and 'shell'; keep one (command: runs an argv directly, shell: runs /bin/sh -c)")
            return .found(nil)
        } else if let commandPair {
            if case .scalar = commandPair.value, !NodeReader.isNull(commandPair.value) {
                reader.fail(.wrongType, at: commandPair.value, "\(context): command: expected a list of strings (an argv such as [\"/usr/bin/rsync\", \"-a\"]); use 'shell:' for a command line")
            } else if let argv = reader.stringList(commandPair.value, what: "\(context): command") {
                if argv.isEmpty || argv[0].isEmpty {
                    reader.fail(.invalidValue, at: commandPair.value, "\(context): command: must name a program to run")
                } else {
                    return .found(.argv(argv))
                }
            }
            return .found(nil)
        } else if let shellPair {
            return .found(reader.nonEmptyString(shellPair.value, what: "\(context): shell").map { .shell($0) })
        }
        return .absent
    }

    // MARK: - steps:

    /// Names already given to steps of one job (for duplicates) and groups numbered so far.
    private struct StepNames {
        var seen: [String: SourceLocation] = [:]
        var groups = 0
    }

    /// `steps:` — a non-empty list of steps: `{name, command|shell, timeout, continue_on_failure}`
    /// or `{parallel: {max, steps}, name, continue_on_failure}`.
    private func readSteps(_ node: YAMLNode, what: String, context: String, names: inout StepNames, reader: inout NodeReader) -> [JobStep]? {
        guard case .sequence(let sequence) = node else {
            reader.fail(.wrongType, at: node, "\(what): expected a list of steps, found \(NodeReader.describe(node))")
            return nil
        }
        guard !sequence.isEmpty else {
            reader.fail(.invalidValue, at: node, "\(what): must list at least one step")
            return nil
        }
        let errorsBefore = reader.errors.count
        var steps: [JobStep] = []
        for (index, element) in sequence.enumerated() {
            if let step = readStep(element, what: "\(what)[\(index + 1)]", context: context, names: &names, reader: &reader) {
                steps.append(step)
            }
        }
        return reader.errors.count == errorsBefore ? steps : nil
    }

    private func readStep(_ node: YAMLNode, what: String, context: String, names: inout StepNames, reader: inout NodeReader) -> JobStep? {
        guard let pairs = reader.mapping(node, what: what) else { return nil }
        let keyed = KeyedPairs(pairs)
        let errorsBefore = reader.errors.count
        let isGroup = keyed["parallel"] != nil
        // (A group with a command is reported once, as a conflict, not also as an unknown key.)
        reader.checkKeys(pairs, known: isGroup ? Self.groupStepKeys + ["command", "shell", "http"] : Self.stepKeys, context: "in \(what)")

        var name: String?
        if let pair = keyed["name"], let text = reader.nonEmptyString(pair.value, what: "\(what): name") {
            if !Self.isValidJobName(text) {
                reader.fail(.invalidName, at: pair.value, "\(what): step name '\(text)' may only contain letters, digits, '_', '.' and '-'")
            } else if let first = names.seen[text] {
                reader.fail(.duplicateStep, at: pair.value, "\(context): duplicate step name '\(text)' (also at \(first.file):\(first.line):\(first.column))")
            } else {
                names.seen[text] = reader.location(pair.value)
                name = text
            }
        }
        var continueOnFailure = false
        if let pair = keyed["continue_on_failure"], let value = reader.bool(pair.value, what: "\(what): continue_on_failure") {
            continueOnFailure = value
        }

        if let groupPair = keyed["parallel"] {
            // An unnamed group takes the next free `parallel-<n>`, which no later step may take.
            var groupName = name ?? ""
            if name == nil, keyed["name"] == nil {
                repeat {
                    names.groups += 1
                    groupName = "parallel-\(names.groups)"
                } while names.seen[groupName] != nil
                names.seen[groupName] = reader.location(groupPair.keyNode)
            }
            for kind in ["command", "shell", "http"] where keyed[kind] != nil {
                reader.fail(.conflictingKeys, at: keyed[kind]!.keyNode, "\(what) has both 'parallel' and '\(kind)'; a step is one of command, shell, http or parallel")
            }
            let groupWhat = "\(what): parallel"
            guard let groupPairs = reader.mapping(groupPair.value, what: groupWhat) else { return nil }
            reader.checkKeys(groupPairs, known: Self.parallelKeys, context: "in \(groupWhat)")
            let groupKeyed = KeyedPairs(groupPairs)
            var max: Int?
            if let pair = groupKeyed["max"] {
                max = reader.integer(pair.value, what: "\(groupWhat).max (most steps at once, at least 1)", range: 1...10_000)
            }
            guard let stepsPair = groupKeyed["steps"] else {
                reader.fail(.missingKey, at: groupPair.keyNode, "\(groupWhat) needs 'steps' (the steps to run at once)")
                return nil
            }
            guard let steps = readSteps(stepsPair.value, what: "\(groupWhat).steps", context: context, names: &names, reader: &reader),
                reader.errors.count == errorsBefore
            else { return nil }
            return .parallel(groupName, max: max, steps, continueOnFailure: continueOnFailure)
        }

        var work: JobStep.Work?
        let found = readCommand(keyed, context: what, reader: &reader)
        if let httpPair = keyed["http"] {
            if case .found = found {
                let other = keyed["command"] ?? keyed["shell"]!
                reader.fail(.conflictingKeys, at: httpPair.keyNode, "\(what) has both '\(other.key)' and 'http'; a step is one of command, shell, http or parallel")
            } else if let call = readHTTP(httpPair.value, what: "\(what): http", reader: &reader) {
                work = .http(call)
            }
        } else {
            switch found {
            case .absent:
                reader.fail(.missingKey, at: node, "\(what) needs 'command' (an argv list), 'shell' (a command line), 'http' (a request) or 'parallel' (a group)")
            case .found(let command):
                work = command.map { .process($0) }
            }
        }
        if name == nil, keyed["name"] == nil {
            reader.fail(.missingKey, at: node, "\(what) needs a 'name' (unique within the job: it names the step in history and logs)")
        }
        var timeout: Duration?
        if let pair = keyed["timeout"] {
            timeout = duration(pair.value, what: "\(what): timeout", allowZero: false, reader: &reader)
        }
        guard reader.errors.count == errorsBefore, let name, let work else { return nil }
        return JobStep(name: name, work: work, timeout: timeout, continueOnFailure: continueOnFailure)
    }

    private func readRunPolicies(_ job: inout JobDefinition, keyed: KeyedPairs, keyNode: YAMLNode, context: String,
                                 daemon: DaemonSettings, reader: inout NodeReader) {
        var overlapName = "skip"
        if let pair = keyed["overlap"], let name = reader.nonEmptyString(pair.value, what: "\(context): overlap") {
            if ["skip", "queue", "replace", "allow"].contains(name) {
                overlapName = name
            } else {
                reader.fail(.invalidValue, at: pair.value, "\(context): overlap: '\(name)' is not one of skip, queue, replace, allow")
            }
        }
        let maxQueue = keyed["max_queue"].flatMap { reader.integer($0.value, what: "\(context): max_queue", range: 1...10_000) }
        let maxInstances = keyed["max_instances"].flatMap { reader.integer($0.value, what: "\(context): max_instances", range: 1...10_000) }
        if let pair = keyed["max_queue"], overlapName != "queue" {
            reader.fail(.conflictingKeys, at: pair.keyNode, "\(context): max_queue only applies with 'overlap: queue'")
        }
        if let pair = keyed["max_instances"], overlapName != "allow" {
            reader.fail(.conflictingKeys, at: pair.keyNode, "\(context): max_instances only applies with 'overlap: allow'")
        }
        switch overlapName {
        case "queue": job.overlap = .queue(max: maxQueue ?? 1)
        case "replace": job.overlap = .replace
        case "allow": job.overlap = .allow(maxInstances: maxInstances ?? 1)
        default: job.overlap = .skip
        }

        if let pair = keyed["pool"], let name = reader.nonEmptyString(pair.value, what: "\(context): pool") {
            if daemon.pools[name] == nil {
                let known = daemon.pools.keys.sorted()
                var message = "\(context): pool '\(name)' is not defined under daemon.pools"
                if let suggestion = Suggestion.closest(to: name, among: known) {
                    message += " (did you mean '\(suggestion)'?)"
                } else if !known.isEmpty {
                    message += " (defined: \(known.joined(separator: ", ")))"
                }
                reader.fail(.invalidValue, at: pair.value, message)
            } else {
                job.pool = name
            }
        }

        if let pair = keyed["retry"], !NodeReader.isNull(pair.value), let entries = reader.mapping(pair.value, what: "\(context): retry") {
            reader.checkKeys(entries, known: Self.retryKeys, context: "in \(context): retry")
            var policy = RetryPolicy(attempts: 1)
            var sawAttempts = false
            for entry in entries {
                func what() -> String { "\(context): retry.\(entry.key)" }
                switch entry.key {
                case "attempts":
                    // Present, even if out of range: one error for it, not a second saying it is missing.
                    sawAttempts = true
                    if let value = reader.integer(entry.value, what: what() + " (the total number of tries, 1 = no retry)", range: 1...100) {
                        policy.attempts = value
                    }
                case "backoff":
                    if let value = duration(entry.value, what: what(), allowZero: true, reader: &reader) { policy.backoff = value }
                case "max_backoff":
                    if let value = duration(entry.value, what: what(), allowZero: true, reader: &reader) { policy.maxBackoff = value }
                case "jitter":
                    if let value = reader.bool(entry.value, what: what()) { policy.jitter = value }
                case "on":
                    if let names = reader.stringList(entry.value, what: what()) {
                        var conditions = Set<RetryCondition>()
                        for name in names {
                            if let condition = RetryCondition(rawValue: name) {
                                conditions.insert(condition)
                            } else {
                                reader.fail(.invalidValue, at: entry.value, "\(what()): '\(name)' is not one of failure, timeout, signal")
                            }
                        }
                        policy.on = conditions
                    }
                default:
                    break
                }
            }
            if !sawAttempts {
                reader.fail(.missingKey, at: pair.keyNode, "\(context): retry needs 'attempts' (the total number of tries)")
            }
            if policy.maxBackoff < policy.backoff { policy.maxBackoff = policy.backoff }
            job.retry = policy
        }

        if let pair = keyed["umask"] {
            if case .scalar(let scalar) = pair.value, scalar.string.count >= 3, scalar.string.count <= 4,
                scalar.string.allSatisfy({ ("0"..."7").contains($0) }), let value = UInt32(scalar.string, radix: 8)
            {
                job.umask = value
            } else {
                reader.fail(.invalidValue, at: pair.value, "\(context): umask: expected an octal mode such as \"0027\", found \(NodeReader.describe(pair.value))")
            }
        }
        if let pair = keyed["nice"] {
            job.nice = reader.integer(pair.value, what: "\(context): nice", range: -20...19)
        }
        if let pair = keyed["limits"], !NodeReader.isNull(pair.value), let entries = reader.mapping(pair.value, what: "\(context): limits") {
            reader.checkKeys(entries, known: Self.limitKeys, context: "in \(context): limits")
            for entry in entries {
                func what() -> String { "\(context): limits.\(entry.key)" }
                var value: UInt64?
                if case .scalar(let scalar) = entry.value, ["infinity", "unlimited"].contains(scalar.string) {
                    value = UInt64.max
                } else if entry.key == "cpu" {
                    if case .scalar(let scalar) = entry.value, let seconds = UInt64(scalar.string) {
                        value = seconds
                    } else if let limit = duration(entry.value, what: what(), allowZero: true, reader: &reader) {
                        value = UInt64(max(0, limit.wholeMicroseconds / 1_000_000))
                    }
                } else if entry.key == "nofile" || entry.key == "nproc" {
                    value = reader.integer(entry.value, what: what(), range: 0...Int(Int32.max)).map { UInt64($0) }
                } else {
                    value = size(entry.value, what: what(), reader: &reader)
                }
                guard let value else { continue }
                switch entry.key {
                case "nofile": job.limits.openFiles = value
                case "nproc": job.limits.processes = value
                case "cpu": job.limits.cpuSeconds = value
                case "as": job.limits.addressSpace = value
                case "core": job.limits.coreSize = value
                case "fsize": job.limits.fileSize = value
                default: break
                }
            }
        }

        if let pair = keyed["catch_up"], let name = reader.nonEmptyString(pair.value, what: "\(context): catch_up") {
            if let policy = CatchUpPolicy(rawValue: name) {
                job.catchUp = policy
            } else {
                reader.fail(.invalidValue, at: pair.value, "\(context): catch_up: '\(name)' is not one of none, once, all")
            }
        }
        if let pair = keyed["catch_up_max"], let value = reader.integer(pair.value, what: "\(context): catch_up_max", range: 1...10_000) {
            job.catchUpMax = value
        }
        if let pair = keyed["on_reload"], let name = reader.nonEmptyString(pair.value, what: "\(context): on_reload") {
            if let policy = ReloadPolicy(rawValue: name) {
                job.onReload = policy
            } else {
                reader.fail(.invalidValue, at: pair.value, "\(context): on_reload: '\(name)' is not one of keep, restart")
            }
        }
        if let pair = keyed["on_remove"], let name = reader.nonEmptyString(pair.value, what: "\(context): on_remove") {
            if let policy = RemovalPolicy(rawValue: name) {
                job.onRemove = policy
            } else {
                reader.fail(.invalidValue, at: pair.value, "\(context): on_remove: '\(name)' is not one of finish, cancel")
            }
        }
        if let pair = keyed["on_failure"] { job.onFailure = hookCommand(pair.value, what: "\(context): on_failure", reader: &reader) }
        if let pair = keyed["on_success"] { job.onSuccess = hookCommand(pair.value, what: "\(context): on_success", reader: &reader) }
        if let pair = keyed["hook_timeout"], let value = duration(pair.value, what: "\(context): hook_timeout", allowZero: false, reader: &reader) {
            job.hookTimeout = value
        }
    }

    /// A hook: an argv list, or a string for /bin/sh -c; null means none.
    private func hookCommand(_ node: YAMLNode, what: @autoclosure () -> String, reader: inout NodeReader) -> JobCommand? {
        if NodeReader.isNull(node) { return nil }
        if case .sequence = node {
            guard let argv = reader.stringList(node, what: what()) else { return nil }
            guard let first = argv.first, !first.isEmpty else {
                reader.fail(.invalidValue, at: node, "\(what()): must name a program to run")
                return nil
            }
            return .argv(argv)
        }
        return reader.nonEmptyString(node, what: what()).map { .shell($0) }
    }

    /// `user`, `group`, `supplementary_groups`: resolved to ids now, so a typo is a positioned
    /// error at load time rather than a failed run at 3 a.m.
    private func readIdentity(_ job: inout JobDefinition, keyed: KeyedPairs, context: String, reader: inout NodeReader) {
        let userPair = keyed["user"]
        let groupPair = keyed["group"]
        let supplementaryPair = keyed["supplementary_groups"]
        guard userPair != nil || groupPair != nil || supplementaryPair != nil else { return }
        var identity: RunIdentity?
        if let userPair, let name = reader.nonEmptyString(userPair.value, what: "\(context): user") {
            if reader.rejectsOutOfRangeID(name, at: userPair.value, what: "\(context): user") { return }
            if let user = UserDatabase.user(name) {
                identity = RunIdentity(user: user.name, uid: user.uid, gid: user.gid,
                                       groups: UserDatabase.groups(of: user.name, primary: user.gid), home: user.home, shell: user.shell)
            } else {
                reader.fail(.invalidValue, at: userPair.value, "\(context): user: no such user '\(name)'")
                return
            }
        } else if userPair == nil {
            // Only a group: keep the daemon's user.
            let uid = getuid()
            let current = UserDatabase.user(String(uid))
            identity = RunIdentity(user: current?.name ?? String(uid), uid: uid, gid: getgid(), groups: [],
                                   home: current?.home ?? "/", shell: current?.shell ?? "/bin/sh")
        }
        guard var resolved = identity else { return }
        if let groupPair, let name = reader.nonEmptyString(groupPair.value, what: "\(context): group"),
            !reader.rejectsOutOfRangeID(name, at: groupPair.value, what: "\(context): group")
        {
            if let gid = UserDatabase.group(name) {
                resolved.gid = gid
            } else {
                reader.fail(.invalidValue, at: groupPair.value, "\(context): group: no such group '\(name)'")
            }
        }
        if let supplementaryPair, let names = reader.stringList(supplementaryPair.value, what: "\(context): supplementary_groups") {
            var groups: [UInt32] = []
            for name in names where !reader.rejectsOutOfRangeID(name, at: supplementaryPair.value, what: "\(context): supplementary_groups") {
                if let gid = UserDatabase.group(name) {
                    groups.append(gid)
                } else {
                    reader.fail(.invalidValue, at: supplementaryPair.value, "\(context): supplementary_groups: no such group '\(name)'")
                }
            }
            resolved.groups = groups
        }
        job.identity = resolved
    }

    private func size(_ node: YAMLNode, what: @autoclosure () -> String, reader: inout NodeReader) -> UInt64? {
        guard let text = reader.string(node, what: what()) else { return nil }
        do {
            return try SizeText.parse(text)
        } catch {
            reader.fail(.invalidValue, at: node, "\(what()): \(error.message)")
            return nil
        }
    }

    private func cronTrigger(_ node: YAMLNode, context: String, reader: inout NodeReader) -> JobTrigger? {
        guard let text = reader.nonEmptyString(node, what: "\(context): schedule") else { return nil }
        do {
            let schedule: CronSchedule
            if let known = reader.parsedSchedules[text] {
                schedule = known
            } else {
                schedule = try CronSchedule(parsing: text)
                reader.parsedSchedules[text] = schedule
            }
            switch schedule {
            case .expression(let expression): return .cron(expression)
            case .reboot: return .reboot
            case .every(let interval): return .interval(interval)
            }
        } catch {
            var location = reader.location(node)
            if let field = error.field, let column = Self.column(ofField: field, in: text, node: node) {
                location.column = column
            }
            reader.fail(.invalidSchedule, at: location, "\(context): schedule '\(text)': \(error.message)")
            return nil
        }
    }

    private func calendarTrigger(_ node: YAMLNode, context: String, reader: inout NodeReader) -> JobTrigger? {
        var items: [YAMLNode] = []
        if case .sequence(let sequence) = node {
            items = Array(sequence)
            if items.isEmpty {
                reader.fail(.invalidValue, at: node, "\(context): on_calendar: the list is empty")
                return nil
            }
        } else {
            items = [node]
        }
        var events: [CalendarEvent] = []
        for item in items {
            guard let text = reader.nonEmptyString(item, what: "\(context): on_calendar") else { continue }
            do {
                events.append(try CalendarEvent(parsing: text, zones: zones))
            } catch {
                reader.fail(.invalidSchedule, at: item, "\(context): on_calendar '\(text)': \(error.message)")
            }
        }
        return events.count == items.count ? .calendar(events) : nil
    }

    private func duration(_ node: YAMLNode, what: @autoclosure () -> String, allowZero: Bool, reader: inout NodeReader) -> Duration? {
        guard let text = reader.string(node, what: what()) else { return nil }
        do {
            let value = try DurationText.parse(text)
            if !allowZero && value <= .zero {
                reader.fail(.invalidDuration, at: node, "\(what()): must be longer than 0s")
                return nil
            }
            return value
        } catch {
            reader.fail(.invalidDuration, at: node, "\(what()): \(error.message)")
            return nil
        }
    }

    // MARK: - Helpers

    /// Names of jobs, pools and nodes: `[A-Za-z0-9_.-]`, 1 to 200 bytes.
    public static func isValidJobName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 200 && name.utf8.allSatisfy { byte in
            (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5a) || (byte >= 0x61 && byte <= 0x7a)
                || byte == UInt8(ascii: "_") || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "-")
        }
    }

    static func isValidEnvironmentName(_ name: String) -> Bool {
        guard let first = name.utf8.first, !(first >= 0x30 && first <= 0x39) else { return false }
        return name.utf8.allSatisfy { byte in
            (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5a) || (byte >= 0x61 && byte <= 0x7a) || byte == UInt8(ascii: "_")
        }
    }

    /// The column where the n-th whitespace-separated field of a one-line scalar starts.
    static func column(ofField field: Int, in text: String, node: YAMLNode) -> Int? {
        guard case .scalar(let scalar) = node else { return nil }
        let mark = scalar.mark
        let quoted = scalar.style == .singleQuoted || scalar.style == .doubleQuoted
        guard scalar.style == .plain || quoted else { return nil }
        var index = 0
        var current = 0
        var inField = false
        for character in text.unicodeScalars {
            let isSpace = character == " " || character == "\t"
            if !isSpace && !inField {
                current += 1
                if current == field { return mark.column + (quoted ? 1 : 0) + index }
            }
            inField = !isSpace
            index += 1
        }
        return nil
    }

    /// The position of the first `[`/`{` nested beyond the limit, outside quotes and comments.
    func deepNesting(_ text: String) -> (line: Int, column: Int)? {
        var text = text
        return text.withUTF8 { Self.deepNesting(in: $0) }
    }

    /// One pass over the bytes (a reload of a large file reads every one of them here first).
    private static func deepNesting(in bytes: UnsafeBufferPointer<UInt8>) -> (line: Int, column: Int)? {
        var depth = 0
        var line = 1
        var lineStart = 0
        var quote: UInt8 = 0  // none; else the quote that closes it
        var inComment = false
        var previous: UInt8 = 0x20
        for index in bytes.indices {
            let byte = bytes[index]
            if byte == UInt8(ascii: "\n") {
                line += 1
                lineStart = index + 1
                inComment = false
                previous = byte
                continue
            }
            let before = previous
            previous = byte
            if inComment { continue }
            if quote != 0 {
                if byte == quote { quote = 0 }
                continue
            }
            switch byte {
            case UInt8(ascii: "#") where before == 0x20 || before == 0x09 || index == lineStart:
                inComment = true
            case UInt8(ascii: "\""), UInt8(ascii: "'"):
                if depth > 0 || before == 0x20 || before == UInt8(ascii: ":") { quote = byte }
            case UInt8(ascii: "["), UInt8(ascii: "{"):
                depth += 1
                if depth > Self.maximumNesting { return (line, index - lineStart + 1) }
            case UInt8(ascii: "]"), UInt8(ascii: "}"):
                depth = max(0, depth - 1)
            default:
                break
            }
        }
        return nil
    }

    static func syntaxError(_ error: YAMLError, file: String, text: String? = nil) -> ConfigError {
        func at(_ mark: YAMLNode.Mark?, _ message: String, code: ConfigError.Code = .syntax) -> ConfigError {
            var message = message
            // A tab where YAML wants indentation is the commonest cause: name it.
            if let line = mark?.line, let text, let source = text.split(separator: "\n", omittingEmptySubsequences: false).dropFirst(line - 1).first,
                source.prefix(while: { $0 == " " || $0 == "\t" }).contains("\t")
            {
                message += " (line \(line) is indented with a tab: YAML allows only spaces for indentation)"
            }
            return ConfigError(code: code, location: SourceLocation(file: file, line: mark?.line ?? 1, column: mark?.column ?? 1), message: message)
        }
        switch error {
        case .scanner(let problem, let context, let mark), .parser(let problem, let context, let mark):
            return at(mark, "YAML syntax error: \(problem)" + (context.map { " \($0)" } ?? ""))
        case .composer(let problem, let context, let mark):
            return at(mark, "YAML error: \(problem)" + (context.map { " \($0)" } ?? ""))
        case .reader(let problem, let offset):
            let position = text.map { lineAndColumn(ofUTF8Offset: offset, in: $0) } ?? (1, 1)
            return ConfigError(code: .syntax, location: SourceLocation(file: file, line: position.0, column: position.1),
                               message: "cannot read the file as YAML text: \(problem)")
        case .duplicateKeys(let duplicates, let mark):
            return at(mark, "duplicate key '\(duplicates.joined(separator: "', '"))' (each key, and each job name, may appear once)",
                      code: .duplicateKey)
        case .memory:
            return at(nil, "YAML error: out of memory")
        }
    }

    static func lineAndColumn(ofUTF8Offset offset: Int, in text: String) -> (Int, Int) {
        var line = 1
        var column = 1
        for (index, byte) in text.utf8.enumerated() {
            if index >= offset { break }
            if byte == UInt8(ascii: "\n") {
                line += 1
                column = 1
            } else if byte & 0xC0 != 0x80 {
                column += 1
            }
        }
        return (line, column)
    }
}

// MARK: - File reading

/// Reads a configuration file as UTF-8 text, or says exactly why it cannot.
@available(*, noasync)
func readConfigFile(_ path: String) -> Result<String, ConfigError> {
    let start = SourceLocation(file: path, line: 1, column: 1)
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else {
        let reason = String(cString: strerror(errno))
        return .failure(ConfigError(code: .unreadable, location: start, message: "cannot open the file: \(reason)"))
    }
    defer { close(fd) }
    var status = stat()
    if fstat(fd, &status) == 0, (status.st_mode & S_IFMT) == S_IFDIR {
        return .failure(ConfigError(code: .unreadable, location: start, message: "is a directory, not a configuration file"))
    }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65_536)
    while true {
        let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if count < 0 {
            if errno == EINTR { continue }
            let reason = String(cString: strerror(errno))
            return .failure(ConfigError(code: .unreadable, location: start, message: "cannot read the file: \(reason)"))
        }
        if count == 0 { break }
        bytes.append(contentsOf: chunk[0..<count])
        if bytes.count > ConfigLoader.maximumFileSize {
            return .failure(ConfigError(code: .tooLarge, location: start,
                                        message: "the file is larger than \(ConfigLoader.maximumFileSize >> 20) MiB; that is not a configuration"))
        }
    }
    // Validated and copied in one pass (the standard library's validator); the place of the
    // first bad byte is looked for only when there is one.
    guard let text = String(validating: bytes, as: UTF8.self) else {
        let (line, column) = lineAndColumn(ofByte: firstInvalidUTF8(bytes) ?? 0, in: bytes)
        return .failure(ConfigError(code: .syntax, location: SourceLocation(file: path, line: line, column: column),
                                    message: "not UTF-8 text (a binary file?)"))
    }
    let nul = bytes.withUnsafeBytes { buffer in
        buffer.baseAddress.flatMap { base in memchr(base, 0, buffer.count).map { base.distance(to: UnsafeRawPointer($0)) } }
    }
    if let nul {
        let (line, column) = lineAndColumn(ofByte: nul, in: bytes)
        return .failure(ConfigError(code: .syntax, location: SourceLocation(file: path, line: line, column: column),
                                    message: "contains a NUL byte (a binary file?)"))
    }
    return .success(text)
}

private func firstInvalidUTF8(_ bytes: [UInt8]) -> Int? {
    var iterator = bytes.makeIterator()
    var decoder = UTF8()
    var offset = 0
    while true {
        switch decoder.decode(&iterator) {
        case .scalarValue(let scalar):
            offset += UTF8.width(scalar)
        case .emptyInput:
            return nil
        case .error:
            return offset
        }
    }
}

private func lineAndColumn(ofByte index: Int, in bytes: [UInt8]) -> (Int, Int) {
    var line = 1
    var column = 1
    for byte in bytes[0..<index] {
        if byte == UInt8(ascii: "\n") {
            line += 1
            column = 1
        } else if byte & 0xC0 != 0x80 {
            column += 1
        }
    }
    return (line, column)
}
