import JobRunnerCluster
import JobRunnerConfig
import JobRunnerControl
import JobRunnerCore
import JobRunnerSchedule
import JobRunnerStore
import Logging
import Metrics
import NIOPosix
import Systemd

/// Re-reads the configuration and applies it, one reload at a time.
///
/// The new file is read and validated completely on the blocking pool, off to the side; only a
/// valid configuration reaches the scheduler, so a bad file never half-applies and never takes
/// the daemon down.
actor Reloader {
    private let path: String
    private let loader: ConfigLoader
    private let pool: NIOThreadPool
    private let scheduler: Scheduler
    private let daemon: DaemonState
    private let writer: HistoryWriter
    private let clock: any SchedulerClock
    private let logger: Logger
    private let notifier: Notifier
    private let status: StatusReporter
    private let access: AccessPolicy
    /// The cluster this node joined at start (its settings need a restart to change).
    private let cluster: (coordinator: ClusterCoordinator, settings: ClusterSettings)?

    init(path: String, loader: ConfigLoader, pool: NIOThreadPool, scheduler: Scheduler, daemon: DaemonState,
         writer: HistoryWriter, clock: any SchedulerClock, logger: Logger, notifier: Notifier, status: StatusReporter,
         access: AccessPolicy, cluster: (coordinator: ClusterCoordinator, settings: ClusterSettings)? = nil) {
        self.cluster = cluster
        self.access = access
        self.writer = writer
        self.notifier = notifier
        self.status = status
        self.path = path
        self.loader = loader
        self.pool = pool
        self.scheduler = scheduler
        self.daemon = daemon
        self.clock = clock
        self.logger = logger
    }

    /// A reload as systemd sees it (SIGHUP or `POST /v1/reload`): RELOADING=1, the reload,
    /// READY=1 with the new status line.
    func reloadAndNotify() async -> ReloadResult {
        notifier.reloading()
        let result = await reload()
        await status.reloadFinished(result)
        notifier.ready(status: await status.line())
        return result
    }

    /// Loads, validates and applies the configuration file; returns what happened.
    func reload() async -> ReloadResult {
        logger.info("reloading configuration", metadata: ["path": "\(path)"])
        let loader = self.loader
        let path = self.path
        let result: ReloadResult
        do {
            let configuration = try await pool.runIfActive { () throws -> Configuration in
                try loader.load(path: path)
            }
            let summary = await scheduler.apply(configuration)
            access.update(configuration.daemon.control)
            Gauge(label: "jobrunner_config_generation").record(Double(summary.generation))
            Counter(label: "jobrunner_reloads_total", dimensions: [("result", "ok")]).increment()
            writer.setRetention(.init(keepPerJob: configuration.daemon.keepPerJob, maxAge: configuration.daemon.maxHistoryAge))
            if let cluster {
                cluster.coordinator.setConfigHash(configuration.contentHash)
                if configuration.daemon.cluster?.database != cluster.settings.database || configuration.daemon.cluster?.lease != cluster.settings.lease {
                    logger.warning("daemon.cluster changed: it applies at the next restart; this node stays in its cluster")
                }
            } else if configuration.daemon.cluster != nil {
                logger.warning("daemon.cluster added: it applies at the next restart")
            }
            result = ReloadResult(at: summary.at.description, result: "ok", generation: summary.generation,
                                  added: summary.added, changed: summary.changed, removed: summary.removed)
        } catch let errors as ConfigErrors {
            for error in errors.errors {
                logger.error("\(error.description)")
            }
            logger.error("reload failed, keeping previous configuration", metadata: ["errors": "\(errors.errors.count)"])
            Counter(label: "jobrunner_reloads_total", dimensions: [("result", "failed")]).increment()
            let generation = await scheduler.summary().generation
            result = ReloadResult(at: clock.now().description, result: "failed", generation: generation,
                                  errors: errors.errors.map(\.description))
        } catch {
            logger.error("reload failed, keeping previous configuration", metadata: ["error": "\(error)"])
            let generation = await scheduler.summary().generation
            result = ReloadResult(at: clock.now().description, result: "failed", generation: generation, errors: ["\(error)"])
        }
        daemon.setLastReload(result)
        return result
    }
}
