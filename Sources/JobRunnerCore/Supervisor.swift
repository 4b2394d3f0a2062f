import JobRunnerConfig
import JobRunnerSchedule
import CLinuxSupport
import Logging
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// One run to execute.
public struct RunRequest: Sendable {
    public var id: RunID
    public var job: JobDefinition
    public var scheduledTime: Timestamp
    public var attempt: Int

    public init(id: RunID, job: JobDefinition, scheduledTime: Timestamp, attempt: Int = 1) {
        self.id = id
        self.job = job
        self.scheduledTime = scheduledTime
        self.attempt = attempt
    }
}

/// What happened to a run.
public struct RunResult: Sendable {
    public var outcome: RunOutcome
    public var startedAt: Timestamp
    public var endedAt: Timestamp
    public var pid: Int32?
}

/// Starts a run's process and watches it to the end: output line by line, the timeout, the kill
/// sequence (SIGTERM to the process group, `kill_grace`, SIGKILL), and cancellation.
///
/// The run is a process in a session of its own, so signals aimed at its group never reach the
/// daemon, and the reaper kills whatever is left of the group the moment its leader exits.
public final class Supervisor: Sendable {
    /// Environment variables a run inherits from the daemon when set there.
    public static let inheritedVariables = ["PATH", "LANG", "LC_ALL"]
    /// How long output may keep flowing after the run's processes are gone.
    static let outputDrainLimit: TimeAmount = .seconds(2)

    private let eventLoopGroup: any EventLoopGroup
    private let reaper: ChildReaper
    private let logger: Logger
    private let wallClock: @Sendable () -> Timestamp
    private let inherited: [String: String]
    private let tailCapacity: Int

    public init(
        eventLoopGroup: any EventLoopGroup,
        reaper: ChildReaper = .shared,
        logger: Logger,
        tailCapacity: Int = RunOutput.defaultTailCapacity,
        wallClock: @escaping @Sendable () -> Timestamp
    ) {
        self.eventLoopGroup = eventLoopGroup
        self.reaper = reaper
        self.logger = logger
        self.wallClock = wallClock
        self.tailCapacity = tailCapacity
        var inherited: [String: String] = [:]
        for name in Self.inheritedVariables {
            if let value = getenv(name) { inherited[name] = String(cString: value) }
        }
        if inherited["PATH"] == nil { inherited["PATH"] = ProcessLauncher.defaultSearchPath }
        self.inherited = inherited
    }

    private enum Event: Sendable {
        case exited(ExitStatus)
        case deadline
        case graceOver
        case cancel
        case outputClosed
        case drainTimeout
    }

    /// Runs the request to the end and returns how it ended. Never throws: a failed spawn, a
    /// non-zero exit and a timeout are outcomes. Cancelling the calling task tears the run down
    /// with its kill sequence and still waits for the process to end.
    public func run(
        _ request: RunRequest,
        output tail: OutputTail? = nil,
        onLine: (@Sendable (OutputLine) -> Void)? = nil,
        onStarted: @Sendable (Int32, Timestamp) -> Void = { _, _ in }
    ) async -> RunResult {
        var logger = self.logger
        logger[metadataKey: "job"] = "\(request.job.name)"
        logger[metadataKey: "run_id"] = "\(request.id)"
        let job = request.job

        let environment = environment(for: request)
        let executable: String
        switch ProcessLauncher.resolveExecutable(job.command.arguments[0], searchPath: environment["PATH"]) {
        case .success(let path): executable = path
        case .failure(let error): return spawnFailed(error, logger: logger)
        }

        // Pipes for stdout and stderr; the daemon keeps the read ends, the child gets the write ends.
        var outPipe: [Int32] = [-1, -1]
        var errPipe: [Int32] = [-1, -1]
        guard jr_pipe_cloexec(&outPipe) == 0 else { return spawnFailed(SpawnError("pipe: \(lastError())"), logger: logger) }
        guard jr_pipe_cloexec(&errPipe) == 0 else {
            close(outPipe[0]); close(outPipe[1])
            return spawnFailed(SpawnError("pipe: \(lastError())"), logger: logger)
        }
        let devNull = open("/dev/null", O_RDONLY | O_CLOEXEC)

        let spec = LaunchSpec(
            executable: executable,
            arguments: job.command.arguments,
            environment: environment.map { "\($0.key)=\($0.value)" }.sorted(),
            workingDirectory: job.workingDirectory,
            stdin: devNull,
            stdout: outPipe[1],
            stderr: errPipe[1]
        )
        let mailbox = Mailbox<Event>()
        let launched = reaper.launch(killGroupOnExit: true, onExit: { mailbox.post(.exited($0)) }) {
            ProcessLauncher.spawn(spec)
        }
        close(outPipe[1])
        close(errPipe[1])
        if devNull >= 0 { close(devNull) }

        let pid: Int32
        switch launched {
        case .success(let started):
            pid = started
        case .failure(let error):
            close(outPipe[0])
            close(errPipe[0])
            return spawnFailed(error, logger: logger)
        }
        let startedAt = wallClock()
        logger[metadataKey: "pid"] = "\(pid)"
        onStarted(pid, startedAt)
        logger.info("run started", metadata: ["command": "\(job.command)"])

        let deliver: @Sendable (OutputLine) -> Void = { [logger] line in
            tail?.append(line)
            onLine?(line)
            logger.info("\(line.text)", metadata: ["stream": "\(line.stream.rawValue)"])
        }
        let eventLoop = eventLoopGroup.next()
        let channels = [
            await attachOutput(fd: outPipe[0], stream: .stdout, eventLoop: eventLoop, deliver: deliver, mailbox: mailbox),
            await attachOutput(fd: errPipe[0], stream: .stderr, eventLoop: eventLoop, deliver: deliver, mailbox: mailbox),
        ]
        var openStreams = channels.count

        // MARK: Supervision loop
        var imposed: RunOutcome?
        var exitStatus: ExitStatus?
        var timer: Scheduled<Void>?
        if let timeout = job.timeout {
            timer = eventLoop.scheduleTask(in: .microseconds(timeout.wholeMicroseconds)) { mailbox.post(.deadline) }
        }

        func terminate(because outcome: RunOutcome) {
            imposed = outcome
            timer?.cancel()
            logger.notice("stopping run", metadata: ["reason": "\(outcome.name)", "kill_grace": "\(DurationText.format(job.killGrace))"])
            kill(-pid, SIGTERM)
            kill(-pid, SIGCONT)
            if job.killGrace > .zero {
                timer = eventLoop.scheduleTask(in: .microseconds(job.killGrace.wholeMicroseconds)) { mailbox.post(.graceOver) }
            } else {
                kill(-pid, SIGKILL)
            }
        }

        await withTaskCancellationHandler {
            while exitStatus == nil || openStreams > 0 {
                switch await mailbox.next() {
                case .exited(let status):
                    exitStatus = status
                    timer?.cancel()
                    if openStreams > 0 {
                        timer = eventLoop.scheduleTask(in: Self.outputDrainLimit) { mailbox.post(.drainTimeout) }
                    }
                case .deadline where exitStatus == nil && imposed == nil:
                    terminate(because: .timedOut)
                case .cancel where exitStatus == nil && imposed == nil:
                    terminate(because: .cancelled)
                case .graceOver where exitStatus == nil:
                    logger.warning("run still alive after kill_grace, sending SIGKILL")
                    kill(-pid, SIGKILL)
                case .outputClosed:
                    openStreams -= 1
                case .drainTimeout where exitStatus != nil:
                    // Something outside the run's process group still holds its output open.
                    for channel in channels { channel?.close(promise: nil) }
                default:
                    break
                }
            }
        } onCancel: {
            mailbox.post(.cancel)
        }
        timer?.cancel()

        let endedAt = wallClock()
        let outcome: RunOutcome
        if let imposed {
            outcome = imposed
        } else {
            switch exitStatus! {
            case .exited(0): outcome = .succeeded
            case .exited(let code): outcome = .failed(exitCode: code)
            case .signalled(let signal, _): outcome = .signalled(signal)
            }
        }
        let duration = DurationText.format(startedAt.duration(to: endedAt))
        switch outcome {
        case .succeeded:
            logger.info("run finished", metadata: ["outcome": "\(outcome.name)", "duration": "\(duration)"])
        default:
            logger.warning("run finished", metadata: ["outcome": "\(outcome.name)", "duration": "\(duration)",
                                                      "detail": "\(exitStatus?.description ?? "")"])
        }
        return RunResult(outcome: outcome, startedAt: startedAt, endedAt: endedAt, pid: pid)
    }

    // MARK: - Helpers

    /// The run's environment: PATH, LANG and LC_ALL from the daemon, the job's own variables,
    /// and the JOBRUNNER_* variables describing the run. Nothing else leaks from the daemon.
    func environment(for request: RunRequest) -> [String: String] {
        var environment = inherited
        for (key, value) in request.job.environment { environment[key] = value }
        environment["JOBRUNNER_JOB"] = request.job.name
        environment["JOBRUNNER_RUN_ID"] = request.id.rawValue
        environment["JOBRUNNER_SCHEDULED_TIME"] = request.scheduledTime.description
        environment["JOBRUNNER_ATTEMPT"] = "\(request.attempt)"
        return environment
    }

    private func spawnFailed(_ error: SpawnError, logger: Logger) -> RunResult {
        let now = wallClock()
        logger.error("cannot start run", metadata: ["outcome": "spawn_failed", "error": "\(error.message)"])
        return RunResult(outcome: .spawnFailed(reason: error.message), startedAt: now, endedAt: now, pid: nil)
    }

    /// Reads one pipe on the event loop; posts `.outputClosed` when it reaches end of file.
    private func attachOutput(
        fd: Int32,
        stream: OutputStreamKind,
        eventLoop: any EventLoop,
        deliver: @escaping @Sendable (OutputLine) -> Void,
        mailbox: Mailbox<Event>
    ) async -> (any Channel)? {
        let future = NIOPipeBootstrap(group: eventLoop)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        LineSplitter(stream: stream, maximumLineLength: RunOutput.maximumLineLength, deliver: deliver)
                    )
                }
            }
            .takingOwnershipOfDescriptor(input: fd)
        do {
            let channel = try await future.get()
            channel.closeFuture.whenComplete { _ in mailbox.post(.outputClosed) }
            return channel
        } catch {
            logger.error("cannot read run output", metadata: ["error": "\(error)"])
            close(fd)
            mailbox.post(.outputClosed)
            return nil
        }
    }
}

func lastError() -> String {
    String(cString: strerror(errno))
}
