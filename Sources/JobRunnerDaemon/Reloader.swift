import CLinuxSupport
import JobRunnerSupervision
import JobRunnerHistory
import JobRunnerAPI
import JobRunnerCluster
import JobRunnerConfig
import JobRunnerControl
import JobRunnerCore
import JobRunnerSchedule
import JobRunnerStore
import Logging
import Metrics
import NIOPosix
import ServiceLifecycle
import Systemd

/// Re-reads the configuration and applies it, one reload at a time.
///
/// SIGHUP and `POST /v1/reload` go through one queue, served by ``serve()`` alone: a request
/// (or a SIGHUP) that arrives while a reload runs waits for the next one, which reads the file
/// again — so requests coalesce, each answer names the generation its own reload produced, in
/// order, and the file applied last is the one written last.
///
/// The new file is read and validated completely on the blocking pool, off to the side; only a
/// valid configuration reaches the scheduler, so a bad file never half-applies and never takes
/// the daemon down.
actor Reloader {
    private let (rings, doorbell) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    /// Requests waiting for the next reload to start.
    private var waiting: [CheckedContinuation<ReloadResult, Never>] = []
    private var serving = true

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

    /// SIGHUP: a reload soon (several while one runs make one more).
    nonisolated func hangup() {
        doorbell.yield()
    }

    /// `POST /v1/reload`: waits for the next reload to run (after any in progress) and returns
    /// what it did.
    func requestReload() async -> ReloadResult {
        guard serving else { return stopping }
        return await withCheckedContinuation { continuation in
            waiting.append(continuation)
            doorbell.yield()
        }
    }

    /// Runs the queued reloads one at a time until graceful shutdown.
    func serve() async {
        for await _ in rings.cancelOnGracefulShutdown() {
            // Those who asked before this point get this reload, which reads the file now.
            let batch = waiting
            waiting = []
            let result = await reloadAndNotify()
            for continuation in batch { continuation.resume(returning: result) }
        }
        serving = false
        for continuation in waiting { continuation.resume(returning: stopping) }
        waiting = []
    }

    private var stopping: ReloadResult {
        ReloadResult(at: clock.now().description, result: "failed", generation: 0, errors: ["the daemon is stopping"])
    }

    /// A reload as systemd sees it: RELOADING=1, the reload, READY=1 with the new status line.
    private func reloadAndNotify() async -> ReloadResult {
        notifier.reloading()
        let result = await reload()
        await status.reloadFinished(result)
        notifier.ready(status: await status.line())
        // The parse's garbage stays in its thread's arena unless handed back: ten reloads of
        // 10,000 jobs held 3.5× the memory of the first load.
        try? await pool.runIfActive { jr_release_free_memory() }
        return result
    }

    /// Loads, validates and applies the configuration file; returns what happened.
    private func reload() async -> ReloadResult {
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
            logger.error("reload failed, keeping previous configuration", metadata: ["errors": .number(errors.errors.count)])
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
