import JobRunnerSupervision
import JobRunnerHistory
import JobRunnerAPI
import JobRunnerControl
import JobRunnerCore
import JobRunnerSchedule
import JobRunnerStore
import Logging
import ServiceLifecycle
import Systemd
import UnixSignals

/// Traps SIGHUP (before READY=1 is sent: SIGHUP's default action would kill the daemon) and
/// serves the reload queue: SIGHUPs and API requests, one reload at a time. SIGHUPs that arrive
/// during a reload coalesce into one more reload.
struct ReloadService: Service {
    let reloader: Reloader
    let onReady: @Sendable () async -> Void

    func run() async {
        let hangups = await UnixSignalsSequence(trapping: .sighup)
        await onReady()
        await withDiscardingTaskGroup { group in
            group.addTask {
                for await _ in hangups { reloader.hangup() }
            }
            await reloader.serve()
            group.cancelAll()
        }
    }
}

/// Sends STOPPING=1 the moment graceful shutdown begins (it is the last service, so the first
/// to hear of it).
struct ShutdownAnnouncer: Service {
    let notifier: Notifier
    let logger: Logger
    /// Followers of every run's output: their streams end now, so the control server can
    /// close without waiting for a line that will never come.
    let broadcast: OutputBroadcast

    func run() async {
        do {
            try await gracefulShutdown()
        } catch {
            return
        }
        logger.notice("stopping: no new runs will start")
        notifier.stopping(status: "stopping")
        broadcast.finishAll()
    }
}

/// Keeps systemd's STATUS= line current: recomputed whenever the engine reports a change,
/// sent only when it differs, so an idle daemon sends nothing.
actor StatusReporter: Service {
    private let scheduler: Scheduler
    private let notifier: Notifier
    private let clock: any SchedulerClock
    private let writer: HistoryWriter
    private let pokes: AsyncStream<Void>
    private let poker: AsyncStream<Void>.Continuation
    private var lastSent = ""
    private var reloadError: String?

    init(scheduler: Scheduler, notifier: Notifier, clock: any SchedulerClock, writer: HistoryWriter) {
        self.writer = writer
        self.scheduler = scheduler
        self.notifier = notifier
        self.clock = clock
        (pokes, poker) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    /// Asks for the line to be recomputed (cheap; callable from any thread).
    nonisolated func poke() {
        poker.yield()
    }

    func reloadFinished(_ result: ReloadResult) {
        reloadError = result.result == "ok" ? nil : (result.errors.first ?? "invalid configuration")
    }

    /// The current status line.
    func line() async -> String {
        let summary = await scheduler.summary()
        var line: String
        switch summary.state {
        case .draining:
            line = "stopping: waiting for \(summary.runningCount) run\(summary.runningCount == 1 ? "" : "s")"
        case .stopped:
            line = "stopped"
        case .starting, .running:
            line = "\(summary.jobCount) job\(summary.jobCount == 1 ? "" : "s"), \(summary.runningCount) running"
            if summary.waitingCount > 0 { line += ", \(summary.waitingCount) waiting" }
            if let next = summary.nextFire {
                line += ", next: \(next.job) at \(next.at) (\(DurationText.relative(next.at, now: clock.now())))"
            }
        }
        if let reloadError { line = "reload failed: \(reloadError); " + line }
        if let failure = writer.failure { line = "history writes failing (\(failure)); " + line }
        return line
    }

    func run() async {
        for await _ in pokes.cancelOnGracefulShutdown() {
            let current = await line()
            if current != lastSent {
                lastSent = current
                notifier.status(current)
            }
            // At most ten lines a second: a burst of runs ending does not cost a line each.
            try? await Pause.sleep(for: .milliseconds(100))
        }
    }
}
