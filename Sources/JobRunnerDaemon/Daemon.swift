import CLinuxSupport
import JobRunnerSupervision
import JobRunnerHistory
import JobRunnerAPI
import Foundation
import JobRunnerCluster
import JobRunnerConfig
import JobRunnerControl
import JobRunnerCore
import JobRunnerSchedule
import JobRunnerStore
import Logging
import Metrics
import Prometheus
import NIOPosix
import ServiceLifecycle
import Systemd
import UnixSignals

/// How the daemon was started.
public struct DaemonOptions: Sendable {
    public var configPath: String
    public var stateDirectory: String
    public var socketPath: String
    /// Where per-run notify sockets are made.
    public var runtimeDirectory: String
    /// Overrides `daemon.cluster.node_name` (so every node can share one configuration file).
    public var nodeName: String?

    public static let defaultConfigPath = "/etc/jobrunner/jobrunner.yaml"
    public static let defaultStateDirectory = "/var/lib/jobrunner"
    public static let defaultSocketPath = "/run/jobrunner/jobrunner.sock"
    public static let defaultRuntimeDirectory = "/run/jobrunner"

    public init(configPath: String, stateDirectory: String, socketPath: String, runtimeDirectory: String, nodeName: String? = nil) {
        self.nodeName = nodeName
        self.configPath = configPath
        self.stateDirectory = stateDirectory
        self.socketPath = socketPath
        self.runtimeDirectory = runtimeDirectory
    }
}

/// Exit codes of `jobrunnerd`.
public enum DaemonExitCode {
    public static let success: Int32 = 0
    public static let failure: Int32 = 1
    /// EX_CONFIG: the configuration is invalid.
    public static let config: Int32 = 78
}

/// The daemon: wires the engine, the control API and systemd together and runs them as one
/// service group until SIGTERM or SIGINT.
public enum Daemon {
    /// How much lower than the daemon's other threads the blocking pool runs (nice increment).
    static let blockingPoolNice: Int32 = 10

    /// `--check-config`: validates the file, prints every error, and returns the exit code.
    public static func checkConfig(path: String) async -> Int32 {
        do {
            let configuration = try await NIOThreadPool.singleton.runIfActive { () throws -> Configuration in
                try ConfigLoader().load(path: path)
            }
            print("\(path): OK, \(configuration.jobs.count) job\(configuration.jobs.count == 1 ? "" : "s")")
            return DaemonExitCode.success
        } catch let errors as ConfigErrors {
            FileHandle.standardError.write(Data((errors.description + "\n").utf8))
            return DaemonExitCode.config
        } catch {
            FileHandle.standardError.write(Data("\(path): \(error)\n".utf8))
            return DaemonExitCode.config
        }
    }

    /// Runs the daemon to the end and returns its exit code.
    public static func run(_ options: DaemonOptions, logger: Logger) async -> Int32 {
        signal(SIGPIPE, SIG_IGN)
        // Before the first load: what a reload frees in the second reader's arena goes back.
        jr_bound_free_memory_kept()
        let notifier = Notifier()
        let clock = SystemClock()
        let startedAt = clock.now()
        let startedUptime = clock.uptime()

        // MARK: Configuration
        // Nothing else runs yet: a large file is read on two threads.
        let loader = ConfigLoader(readThreads: 2)
        let configuration: Configuration
        do {
            var loaded = try await NIOThreadPool.singleton.runIfActive { () throws -> Configuration in
                defer { jr_release_free_memory() }
                return try loader.load(path: options.configPath)
            }
            if let nodeName = options.nodeName { loaded.daemon.cluster?.nodeName = nodeName }
            configuration = loaded
        } catch let errors as ConfigErrors {
            for error in errors.errors { logger.error("\(error.description)") }
            logger.critical("invalid configuration, not starting", metadata: ["errors": .number(errors.errors.count)])
            notifier.failed(status: "invalid configuration: \(errors.summary)", errno: EINVAL)
            return DaemonExitCode.config
        } catch {
            logger.critical("cannot load configuration", metadata: ["error": "\(error)"])
            notifier.failed(status: "cannot load configuration: \(error)", errno: EINVAL)
            return DaemonExitCode.config
        }

        // MARK: State directory, lock, socket
        let passed = SocketActivation.takeSockets()
        let activated = SocketActivation.controlSocket(in: passed)
        for socket in passed where socket.descriptor != activated?.descriptor {
            logger.warning("ignoring a socket passed by systemd", metadata: ["fd": .number(socket.descriptor), "name": "\(socket.name)"])
            close(socket.descriptor)
        }
        if let activated {
            logger.info("serving the control API on the socket passed by systemd", metadata: ["name": "\(activated.name)"])
        }
        let lock: Int32
        let listener: Int32
        let machineID: String
        do {
            (lock, listener, machineID) = try await NIOThreadPool.singleton.runIfActive { () throws -> (Int32, Int32, String) in
                let (lock, listener) = try prepareRuntime(options, group: configuration.daemon.control.groupID,
                                                          activated: activated?.descriptor)
                let machineID = (try? String(contentsOfFile: "/etc/machine-id", encoding: .utf8)) ?? ProcessInfo.processInfo.hostName
                return (lock, listener, machineID.trimmingCharacters(in: .whitespacesAndNewlines))
            }
        } catch {
            logger.critical("cannot start", metadata: ["error": "\(error)"])
            notifier.failed(status: "cannot start: \(error)", errno: EIO)
            return DaemonExitCode.failure
        }
        defer {
            close(lock)
        }
        if !ChildReaper.becomeSubreaper() {
            logger.warning("cannot become a child subreaper; orphaned job processes will go to PID 1")
        }
        if let settings = configuration.daemon.cluster, let socket = settings.database.socketPath, access(socket, F_OK) != 0 {
            let reason = "no PostgreSQL server is listening at \(socket)"
            logger.critical("cannot use the cluster database, not starting", metadata: ["database": "\(settings.database)", "error": "\(reason)"])
            notifier.failed(status: "cannot use the cluster database \(settings.database): \(reason)", errno: EIO)
            return DaemonExitCode.failure
        }
        // The cluster's connection pool runs beside the daemon as a child task, for its whole life.
        let database = configuration.daemon.cluster.map {
            ClusterDatabase(url: $0.database, idleInTransaction: $0.idleInTransactionLimit, logger: logger)
        }
        return await ClusterDatabase.serving(database) {
            await serve(options, configuration: configuration, database: database, listener: listener, activated: activated,
                        machineID: machineID, notifier: notifier, clock: clock, startedAt: startedAt, startedUptime: startedUptime,
                        loader: loader, logger: logger)
        }
    }

    /// The daemon once its configuration is loaded and its state directory locked: history,
    /// engine, control API, systemd, as one service group until SIGTERM or SIGINT.
    static func serve(_ options: DaemonOptions, configuration: Configuration, database: ClusterDatabase?, listener: Int32,
                      activated: SocketActivation.PassedSocket?, machineID: String, notifier: Notifier, clock: SystemClock,
                      startedAt: Timestamp, startedUptime: Duration, loader: ConfigLoader, logger: Logger) async -> Int32 {

        // MARK: History (and the cluster)
        let history: any HistoryStore
        let memories: [String: JobMemory]
        var cluster: (database: ClusterDatabase, coordinator: ClusterCoordinator, settings: ClusterSettings)?
        do {
            if let settings = configuration.daemon.cluster, let database {
                let coordinator = ClusterCoordinator(database: database, settings: settings, machineID: machineID,
                                                     version: EngineControlHandler.version, configHash: configuration.contentHash,
                                                     logger: logger)
                try await database.within(.seconds(15), "connecting to the cluster database") {
                    try await database.migrate()
                    try await coordinator.join()
                }
                cluster = (database, coordinator, settings)
                history = PostgresHistory(database: database, node: settings.nodeName, writeLimit: settings.lease, logger: logger)
            } else {
                let path = options.stateDirectory + "/state.sqlite"
                history = try await NIOThreadPool.singleton.runIfActive { try SQLiteHistory(path: path) }
            }
            let interrupted = try await history.recoverInterrupted(at: clock.now())
            if !interrupted.isEmpty {
                let ids = Set(interrupted.map(\.id.rawValue))
                let killed = try await NIOThreadPool.singleton.runIfActive { ProcessSweeper.killLeftovers(ofRuns: ids) }
                logger.warning("runs were interrupted by the daemon's last stop", metadata: [
                    "runs": .number(interrupted.count), "jobs": "\(Set(interrupted.map(\.job)).sorted().joined(separator: ","))",
                    "killed_processes": .number(killed),
                ])
            }
            memories = try await history.jobMemories()
        } catch {
            if let settings = configuration.daemon.cluster {
                let reason = ClusterDatabase.describe(error)
                logger.critical("cannot use the cluster database, not starting", metadata: [
                    "database": "\(settings.database)", "error": "\(reason)",
                ])
                notifier.failed(status: "cannot use the cluster database \(settings.database): \(reason)", errno: EIO)
            } else {
                logger.critical("cannot open the history", metadata: ["error": "\(error)", "state_directory": "\(options.stateDirectory)"])
                notifier.failed(status: "cannot open the history in \(options.stateDirectory): \(error)", errno: EIO)
            }
            return DaemonExitCode.failure
        }

        // MARK: Engine
        let metricsRegistry = PrometheusCollectorRegistry()
        var metricsFactory = PrometheusMetricsFactory(registry: metricsRegistry)
        metricsFactory.durationHistogramBuckets = [
            "jobrunner_fire_lateness_seconds": [.microseconds(100), .milliseconds(1), .milliseconds(5), .milliseconds(10),
                                                .milliseconds(50), .milliseconds(100), .milliseconds(500), .seconds(1), .seconds(10)],
        ]
        MetricsSystem.bootstrap(metricsFactory)
        Gauge(label: "jobrunner_config_generation").record(1)
        let access = AccessPolicy(configuration.daemon.control)
        let pool = NIOThreadPool(numberOfThreads: configuration.daemon.blockingThreads)
        // Its threads run at nice +10 relative to the daemon's others (see README, blocking_threads).
        onLowerPriorityThread(niceIncrement: Self.blockingPoolNice) { pool.start() }
        let eventLoopGroup = MultiThreadedEventLoopGroup.singleton
        let registry = RunRegistry()
        let broadcast = OutputBroadcast()
        let http = HTTPCaller(eventLoopGroup: eventLoopGroup, blockingPool: pool)
        let supervisor = Supervisor(eventLoopGroup: eventLoopGroup, blockingPool: pool, notify: true,
                                    nodeName: cluster?.settings.nodeName, broadcast: broadcast, http: http, logger: logger,
                                    wallClock: { clock.now() })
        let statusBox = StatusBox()
        let writer = HistoryWriter(
            history: history,
            retention: .init(keepPerJob: configuration.daemon.keepPerJob, maxAge: configuration.daemon.maxHistoryAge),
            logger: logger, onHealthChange: { _ in statusBox.poke() })
        let scheduler = Scheduler(configuration: configuration, executor: supervisor, registry: registry, clock: clock,
                                  logger: logger,
                                  // In a cluster every node derives the same random delays.
                                  jitterSeed: Scheduler.jitterSeed(machineID: cluster == nil ? machineID : "jobrunner-cluster"),
                                  journal: writer, memories: memories, heartbeat: Self.heartbeat(notifier, logger: logger),
                                  cluster: cluster?.coordinator, onChange: { statusBox.poke() })
        cluster?.coordinator.attach(scheduler)
        let status = StatusReporter(scheduler: scheduler, notifier: notifier, clock: clock, writer: writer)
        statusBox.reporter = status
        let daemonState = DaemonState(configPath: options.configPath, startedAt: startedAt, startedUptime: startedUptime)
        // A reload reads on two threads only when the pool may use two (blocking_threads).
        var loader = loader
        loader.readThreads = min(2, configuration.daemon.blockingThreads)
        let reloader = Reloader(path: options.configPath, loader: loader, pool: pool, scheduler: scheduler, daemon: daemonState,
                                writer: writer, clock: clock, logger: logger, notifier: notifier, status: status,
                                access: access, cluster: cluster.map { ($0.coordinator, $0.settings) })
        let handler = EngineControlHandler(scheduler: scheduler, registry: registry, history: history, writer: writer,
                                           reloader: reloader, daemon: daemonState, clock: clock,
                                           metricsRegistry: metricsRegistry, access: access, cluster: cluster?.coordinator,
                                           broadcast: broadcast)
        var limits = ControlServer.Limits()
        limits.maxConnections = configuration.daemon.control.maxConnections
        let control = ControlServer(listeningSocket: listener, handler: handler, eventLoopGroup: eventLoopGroup, logger: logger,
                                    limits: limits)
        var metricsServer: ControlServer?
        if let listen = configuration.daemon.metricsListen {
            do {
                let socket = try await NIOThreadPool.singleton.runIfActive { try ControlSocket.listenTCP(host: listen.host, port: listen.port) }
                metricsServer = ControlServer(listeningSocket: socket, handler: handler, eventLoopGroup: eventLoopGroup, logger: logger,
                                              metricsOnly: true)
                logger.info("serving /metrics over TCP", metadata: ["address": "\(listen.host):\(listen.port)"])
            } catch {
                logger.critical("cannot listen for metrics", metadata: ["error": "\(error)"])
                notifier.failed(status: "cannot listen for metrics on \(listen.host):\(listen.port): \(error)", errno: EADDRINUSE)
                return DaemonExitCode.failure
            }
        }

        let reloadService = ReloadService(reloader: reloader) {
            let line = await status.line()
            logger.info("ready", metadata: ["jobs": .number(configuration.jobs.count), "socket": "\(options.socketPath)",
                                            "config": "\(options.configPath)"])
            notifier.ready(status: line)
        }
        // Graceful shutdown runs in reverse order: announce, drain the scheduler, write the last
        // history, then close the control socket (so status stays readable while runs
        // finish), then the rest.
        let group = ServiceGroup(configuration: .init(
            services: [
                .init(service: reloadService),
                .init(service: status),
                .init(service: control),
            ] + (metricsServer.map { [ServiceGroupConfiguration.ServiceConfiguration(service: $0)] } ?? [])
            // The coordinator stops after the writer, so the node heartbeats while its runs drain
            // and leaves the cluster only once their history is written.
            + (cluster.map { [ServiceGroupConfiguration.ServiceConfiguration(service: $0.coordinator)] } ?? []) + [
                .init(service: writer),
                .init(service: scheduler),
                .init(service: ShutdownAnnouncer(notifier: notifier, logger: logger, broadcast: broadcast)),
            ],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger
        ))
        var exitCode = DaemonExitCode.success
        do {
            try await group.run()
        } catch {
            logger.critical("stopped on an error", metadata: ["error": "\(error)"])
            exitCode = DaemonExitCode.failure
        }
        if activated == nil { unlink(options.socketPath) }
        await http.shutdown()
        try? await pool.shutdownGracefully()
        logger.info("stopped", metadata: ["exit_code": .number(exitCode)])
        return exitCode
    }

    // MARK: - Helpers

    /// Creates the state directory, locks it, and binds the control socket (unless systemd
    /// passed one: `activated`).
    @available(*, noasync)
    static func prepareRuntime(_ options: DaemonOptions, group: UInt32?, activated: Int32?) throws -> (lock: Int32, listener: Int32) {
        try makeDirectory(options.stateDirectory, mode: 0o750)
        try makeDirectory(options.runtimeDirectory, mode: 0o755)
        let lock = try lockStateDirectory(options.stateDirectory)
        // Runs' notify sockets are abstract names now; per-run directories an earlier version
        // made here (and left behind when it was killed) go.
        try? FileManager.default.removeItem(atPath: options.runtimeDirectory + "/runs")
        if let activated { return (lock, activated) }
        do {
            try makeDirectory((options.socketPath as NSString).deletingLastPathComponent, mode: 0o755)
            return (lock, try ControlSocket.listen(path: options.socketPath, group: group))
        } catch {
            close(lock)
            throw error
        }
    }

    static func makeDirectory(_ path: String, mode: mode_t) throws {
        guard !path.isEmpty else { return }
        do {
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: mode])
        } catch {
            throw DaemonError("cannot create directory \(path): \(error.localizedDescription)")
        }
    }

    /// Holds an exclusive lock on the state directory for the daemon's lifetime, so two daemons
    /// never share one history.
    static func lockStateDirectory(_ directory: String) throws -> Int32 {
        let path = directory + "/jobrunnerd.lock"
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o640)
        guard fd >= 0 else { throw DaemonError("cannot open \(path): \(String(cString: strerror(errno)))") }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            close(fd)
            throw DaemonError("another jobrunnerd is using the state directory \(directory)")
        }
        return fd
    }
}

struct DaemonError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Lets the scheduler, created before the status reporter, poke it.
final class StatusBox: @unchecked Sendable {
    // Written once during start-up, before any service runs; read-only afterwards.
    var reporter: StatusReporter?
    func poke() { reporter?.poke() }
}

extension Daemon {
    /// The scheduler's heartbeat under systemd: `WATCHDOG=1` at half of `WATCHDOG_USEC` (when the
    /// unit has `WatchdogSec=`), and while draining `EXTEND_TIMEOUT_USEC=` with the time the
    /// runs may still take, so systemd does not kill the daemon before its own kill sequence.
    static func heartbeat(_ notifier: Notifier, logger: Logger) -> Heartbeat? {
        guard notifier.isConnected else { return nil }
        let watchdog = notifier.watchdogInterval()
        if let watchdog {
            logger.info("systemd watchdog enabled", metadata: ["interval": .seconds(watchdog)])
        }
        return Heartbeat(interval: watchdog.map { $0 / 2 }, drainInterval: min(watchdog.map { $0 / 2 } ?? .seconds(5), .seconds(5))) { phase in
            if watchdog != nil { notifier.watchdog() }
            if case .draining(_, let timeLeft) = phase { notifier.extendTimeout(by: timeLeft) }
        }
    }
}
