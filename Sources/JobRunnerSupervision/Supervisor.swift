import JobRunnerCore
import CLinuxSupport
import JobRunnerConfig
import JobRunnerSchedule
import Logging
import NIOCore
import NIOPosix
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Starts a run's process and watches it to the end: output line by line, the timeout (which
/// the run may push out with `EXTEND_TIMEOUT_USEC`), the kill sequence (SIGTERM to the process
/// group, `kill_grace`, SIGKILL), cancellation, and afterwards whatever the run left outside
/// its group.
///
/// The run is a process in a session of its own, so signals aimed at its group never reach the
/// daemon, and the reaper kills whatever is left of the group the moment its leader exits.
public final class Supervisor: RunExecutor, Sendable {
    /// How long output may keep flowing after the run's exit while something still holds its
    /// pipes open (with every writer gone, the rest is read to its end).
    static let outputDrainLimit: TimeAmount = .seconds(2)
    /// `/dev/null`, opened once (close-on-exec, at the first run) and given to every run as its
    /// stdin: reading it holds no state, so one descriptor serves them all and a run costs no
    /// `open`. If that first `open` failed (descriptors exhausted), each run opens its own.
    private static let devNull = open("/dev/null", O_RDONLY | O_CLOEXEC)

    private let eventLoopGroup: any EventLoopGroup
    private let reaper: ChildReaper
    private let logger: Logger
    private let wallClock: @Sendable () -> Timestamp
    private let daemonEnvironment: [String: String]
    /// Where runs' notify sockets are read (nil: runs get no `NOTIFY_SOCKET`).
    private let notifyHub: NotifyHub?
    /// Where runs' output pipes are read.
    private let outputHub = OutputHub.shared
    private let sweeps: ProcessSweeps?
    /// The cluster node this daemon is (given to runs as `JOBRUNNER_NODE`), nil alone.
    private let nodeName: String?
    /// Tests only: close descriptors the way kernels without close_range need.
    private let forceDescriptorLoop: Bool
    /// Where every run's output goes as it is printed (`logs -f` of all runs).
    private let broadcast: OutputBroadcast?
    /// Where `http` steps and jobs make their requests (nil: such runs fail to start).
    private let http: HTTPCaller?

    /// - Parameters:
    ///   - blockingPool: where sweeps of /proc run; without one, escaped processes are not hunted.
    ///   - notify: whether runs get a `NOTIFY_SOCKET` of their own (read by ``NotifyHub``).
    public init(
        eventLoopGroup: any EventLoopGroup,
        reaper: ChildReaper = .shared,
        blockingPool: NIOThreadPool? = nil,
        notify: Bool = false,
        environment daemonEnvironment: [String: String]? = nil,
        nodeName: String? = nil,
        broadcast: OutputBroadcast? = nil,
        http: HTTPCaller? = nil,
        descriptorFallbackForTests: Bool = false,
        logger: Logger,
        wallClock: @escaping @Sendable () -> Timestamp
    ) {
        self.nodeName = nodeName
        self.broadcast = broadcast
        self.http = http
        self.forceDescriptorLoop = descriptorFallbackForTests
        self.eventLoopGroup = eventLoopGroup
        self.reaper = reaper
        self.logger = logger
        self.wallClock = wallClock
        self.notifyHub = notify ? .shared : nil
        self.sweeps = blockingPool.map { ProcessSweeps(pool: $0, reaper: reaper) }
        // The daemon's environment (runs inherit `inherit_environment` from it): given, or read
        // once here.
        if let daemonEnvironment {
            self.daemonEnvironment = daemonEnvironment
            return
        }
        var environment: [String: String] = [:]
        var pointer = environ
        while let entry = pointer.pointee {
            let text = String(cString: entry)
            if let equals = text.firstIndex(of: "=") {
                environment[String(text[..<equals])] = String(text[text.index(after: equals)...])
            }
            pointer += 1
        }
        self.daemonEnvironment = environment
    }

    /// Runs the request to the end and returns how it ended. Never throws: a failed spawn, a
    /// non-zero exit and a timeout are outcomes. Cancelling the calling task, or the handle,
    /// tears the run down with its kill sequence and still waits for the process to end.
    public func run(
        _ request: RunRequest,
        handle: RunHandle = RunHandle(),
        output tail: OutputTail? = nil,
        onLine: (@Sendable (OutputLine) -> Void)? = nil,
        onStarted: @escaping @Sendable (Int32, Timestamp) -> Void = { _, _ in }
    ) async -> RunResult {
        var logger = self.logger
        logger[metadataKey: "job"] = "\(request.job.name)"
        logger[metadataKey: "run_id"] = "\(request.id)"
        if request.attempt > 1 { logger[metadataKey: "attempt"] = .number(request.attempt) }
        let job = request.job
        var environment = environment(for: job)
        environment["JOBRUNNER_JOB"] = job.name
        environment["JOBRUNNER_RUN_ID"] = request.id.rawValue
        environment["JOBRUNNER_SCHEDULED_TIME"] = request.scheduledTime.description
        environment["JOBRUNNER_ATTEMPT"] = "\(request.attempt)"
        if let nodeName { environment["JOBRUNNER_NODE"] = nodeName }
        if let cause = request.triggeredBy { environment["JOBRUNNER_TRIGGERED_BY"] = cause }

        var lineHandler = onLine
        if let broadcast {
            lineHandler = { [name = job.name, id = request.id] line in
                onLine?(line)
                broadcast.publish(job: name, run: id, line)
            }
        }
        if let call = job.http {
            // Cancellable and bounded by the job's timeout like any run (the request's own
            // deadline is the same timeout).
            let (answer, imposed) = await supervised(job: job, handle: handle, logger: logger) { [self, lineHandler, logger] in
                await self.request(call, job: job, step: nil, timeout: job.timeout, logger: logger, tail: tail, onLine: lineHandler,
                                   onStarted: onStarted).result
            }
            var result = answer
            if let imposed { result.outcome = imposed }
            return result
        }
        if !job.steps.isEmpty {
            return await runSteps(request, environment: environment, handle: handle, logger: logger, tail: tail, onLine: lineHandler,
                                  onStarted: onStarted)
        }
        return await execute(
            command: job.command, job: job, environment: environment, stdin: nil, timeout: job.timeout,
            notify: notifyHub != nil, handle: handle, logger: logger, tail: tail, onLine: lineHandler, onStarted: onStarted
        )
    }

    /// Runs the request to the end (``RunExecutor``): output to `output`, `started` once its
    /// process runs.
    public func run(_ request: RunRequest, handle: RunHandle, output: OutputTail,
                    started: @escaping @Sendable (Int32, Timestamp) -> Void) async -> RunResult {
        await run(request, handle: handle, output: output, onLine: nil, onStarted: started)
    }

    /// Kills what a finished run left outside its process group (found through the child
    /// subreaper). Runs on the blocking pool; call after the run's outcome is recorded.
    public func sweepLeftovers(of request: RunRequest) async {
        guard let sweeps, ChildReaper.isSubreaper else { return }
        let killed = await sweeps.sweep(after: request.id.rawValue)
        if !killed.isEmpty {
            logger.warning("killed processes the run left outside its process group", metadata: [
                "job": "\(request.job.name)", "run_id": "\(request.id)", "pids": "\(killed.map(String.init).joined(separator: ","))",
            ])
        }
    }

    /// Runs a job's `on_failure`/`on_success` hook with the run's identity and limits, the
    /// outcome in its environment and the output tail on stdin, under `hook_timeout`.
    public func runHook(_ hook: JobCommand, kind: String, for request: RunRequest, result: RunResult, output: String) async -> RunOutcome {
        var logger = self.logger
        logger[metadataKey: "job"] = "\(request.job.name)"
        logger[metadataKey: "run_id"] = "\(request.id)"
        logger[metadataKey: "hook"] = "\(kind)"
        var environment = environment(for: request.job)
        environment["JOBRUNNER_JOB"] = request.job.name
        environment["JOBRUNNER_RUN_ID"] = request.id.rawValue
        environment["JOBRUNNER_SCHEDULED_TIME"] = request.scheduledTime.description
        environment["JOBRUNNER_ATTEMPT"] = "\(request.attempt)"
        environment["JOBRUNNER_OUTCOME"] = result.outcome.name
        environment["JOBRUNNER_EXIT_CODE"] = result.outcome.exitCode.map { "\($0)" } ?? ""
        if let nodeName { environment["JOBRUNNER_NODE"] = nodeName }
        if let cause = request.triggeredBy { environment["JOBRUNNER_TRIGGERED_BY"] = cause }
        let bytes = Array(output.utf8)
        let memfd = bytes.withUnsafeBytes { jr_memfd_with_contents($0.baseAddress, $0.count) }
        let stdin = memfd >= 0 ? Descriptor(memfd) : nil
        let hookResult = await execute(
            command: hook, job: request.job, environment: environment, stdin: stdin, timeout: request.job.hookTimeout,
            notify: false, handle: RunHandle(), logger: logger, tail: nil, onLine: nil, onStarted: { _, _ in }
        )
        hookResult.log(logger, "hook")
        // A hook is supervised as a run is: whatever it left outside its process group (it
        // carries the run's JOBRUNNER_RUN_ID) is found and killed once it has ended.
        if hookResult.pid != nil { await sweepLeftovers(of: request) }
        return hookResult.outcome
    }

    // MARK: - Execution

    private func execute(
        command: JobCommand,
        job: JobDefinition,
        environment: [String: String],
        stdin: consuming Descriptor?,
        timeout: Duration?,
        notify wantsNotify: Bool,
        handle: RunHandle,
        logger: Logger,
        tail: OutputTail?,
        step: String? = nil,
        relay: (@Sendable (NotifyMessage) -> Void)? = nil,
        onLine: (@Sendable (OutputLine) -> Void)?,
        onStarted: @Sendable (Int32, Timestamp) -> Void
    ) async -> RunResult {
        // Every descriptor below has one owner (`Descriptor`, `Pipe`, `NotifyEndpoint`): an
        // early return closes whatever was opened, and nothing is closed twice.
        var logger = logger
        var environment = environment
        let executable: String
        switch ProcessLauncher.resolveExecutable(command.arguments[0], searchPath: environment["PATH"]) {
        case .success(let path): executable = path
        case .failure(let error): return spawnFailed(error, logger: logger)
        }
        let mailbox = handle.mailbox
        var notifyEndpoint: NotifyEndpoint?
        if wantsNotify, let notifyHub {
            switch notifyHub.open(runID: environment["JOBRUNNER_RUN_ID"] ?? "run", allowedUID: job.identity?.uid ?? geteuid(),
                                  deliver: { messages in for message in messages { mailbox.post(.notify(message)) } }) {
            case .success(let endpoint):
                environment["NOTIFY_SOCKET"] = endpoint.path
                notifyEndpoint = consume endpoint
            case .failure(let error):
                logger.warning("run gets no notify socket", metadata: ["error": "\(error.message)"])
            }
        }
        // Pipes for stdout and stderr; the daemon keeps the read ends, the child gets the write ends.
        guard let output = Pipe.make() else { return spawnFailed(SpawnError("pipe: \(lastError())"), logger: logger) }
        guard let errors = Pipe.make() else { return spawnFailed(SpawnError("pipe: \(lastError())"), logger: logger) }
        // stdin: what the caller gave (a hook's output tail), else the daemon's one `/dev/null`.
        let input = stdin ?? (Self.devNull >= 0 ? nil : Descriptor.open("/dev/null", O_RDONLY))
        let stdinDescriptor: Int32
        switch input {
        case .some(let descriptor):
            stdinDescriptor = descriptor.raw
        case .none where Self.devNull >= 0:
            stdinDescriptor = Self.devNull
        case .none:
            return spawnFailed(SpawnError("/dev/null: \(lastError())"), logger: logger)
        }

        var spec = LaunchSpec(
            executable: executable,
            arguments: command.arguments,
            environment: environment.map { "\($0.key)=\($0.value)" }.sorted(),
            workingDirectory: job.workingDirectory,
            stdin: stdinDescriptor,
            stdout: output.write.raw,
            stderr: errors.write.raw
        )
        spec.umask = job.umask.map { mode_t($0) }
        spec.nice = job.nice.map { Int32($0) }
        spec.limits = Self.limits(job.limits)
        spec.forceDescriptorLoop = forceDescriptorLoop
        if let identity = job.identity, identity.uid != geteuid() || identity.gid != getegid() || geteuid() == 0 {
            spec.identity = .init(uid: identity.uid, gid: identity.gid, groups: identity.groups)
        }
        let launched = reaper.launch(killGroupOnExit: true, onExit: { mailbox.post(.exited($0, $1)) }) {
            ProcessLauncher.spawn(spec)
        }
        // The child has its own copies now (or there is no child).
        _ = consume input
        _ = consume output.write
        _ = consume errors.write

        let pid: Int32
        switch launched {
        case .success(let started):
            pid = started
        case .failure(let error):
            return spawnFailed(error, logger: logger)
        }
        let startedAt = wallClock()
        logger[metadataKey: "pid"] = .number(pid)
        onStarted(pid, startedAt)
        logger.info("run started", metadata: ["command": "\(command)"])

        let deliver: @Sendable ([OutputLine]) -> Void = { [logger, wallClock] lines in
            let now = wallClock()
            for var line in lines {
                line.at = now
                line.step = step
                tail?.append(line)
                onLine?(line)
                // `output` marks the entry as a line the job printed (the text log shows it so).
                logger.info("\(line.text)", metadata: ["stream": "\(line.stream.rawValue)", "output": .stringConvertible(true)])
            }
        }
        let eventLoop = eventLoopGroup.next()
        // The output hub owns the read ends from here on; each posts `.outputClosed` at its end.
        var readers: [UInt64] = []
        var openStreams = 0
        for (descriptor, stream) in [(output.read.take(), OutputStreamKind.stdout), (errors.read.take(), .stderr)] {
            if let token = outputHub.read(descriptor, stream: stream, deliver: deliver, closed: { mailbox.post(.outputClosed) }) {
                readers.append(token)
                openStreams += 1
            } else {
                logger.error("cannot read run output", metadata: ["output_stream": "\(stream.rawValue)", "error": "\(lastError())"])
            }
        }

        // MARK: Supervision loop
        var imposed: RunOutcome?
        var exitStatus: ExitStatus?
        var usage: ResourceUsage?
        var deadline: NIODeadline?
        var timer: Scheduled<Void>?
        if let timeout {
            deadline = .now() + .microseconds(timeout.wholeMicroseconds)
            timer = eventLoop.scheduleTask(deadline: deadline!) { mailbox.post(.deadline) }
        }

        func terminate(because outcome: RunOutcome) {
            imposed = outcome
            timer?.cancel()
            logger.notice("stopping run", metadata: ["reason": "\(outcome.name)", "kill_grace": .seconds(job.killGrace)])
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
                case .exited(let status, let cost):
                    exitStatus = status
                    usage = cost
                    timer?.cancel()
                    // Pipes whose every writer is gone reach their end by themselves; only one
                    // still held open (from outside the run's process group, or by a member not
                    // yet gone) needs the drain deadline.
                    if openStreams > 0 && !outputHub.writersGone(readers) {
                        timer = eventLoop.scheduleTask(in: Self.outputDrainLimit) { mailbox.post(.drainTimeout) }
                    }
                case .deadline where exitStatus == nil && imposed == nil:
                    // A deadline pushed out meanwhile (EXTEND_TIMEOUT_USEC) makes this one stale.
                    if let current = deadline, current > .now() {
                        timer = eventLoop.scheduleTask(deadline: current) { mailbox.post(.deadline) }
                    } else {
                        terminate(because: .timedOut)
                    }
                case .cancel where exitStatus == nil && imposed == nil:
                    terminate(because: .cancelled)
                case .graceOver where exitStatus == nil:
                    logger.warning("run still alive after kill_grace, sending SIGKILL")
                    kill(-pid, SIGKILL)
                case .outputClosed:
                    openStreams -= 1
                case .drainTimeout where exitStatus != nil:
                    // Something outside the run's process group still holds its output open.
                    for token in readers { outputHub.stop(token) }
                    readers = []
                case .notify(let message):
                    handle.record(message)
                    relay?(message)
                    switch message {
                    case .extendTimeout(let extra) where exitStatus == nil && imposed == nil && deadline != nil:
                        let extended = NIODeadline.now() + .microseconds(extra.wholeMicroseconds)
                        if extended > deadline! {
                            deadline = extended
                            logger.info("run extended its timeout", metadata: ["by": .seconds(extra)])
                        }
                    case .status(let text):
                        logger.debug("run status", metadata: ["status": "\(text)"])
                    default:
                        break
                    }
                default:
                    break
                }
            }
        } onCancel: {
            mailbox.post(.cancel)
        }
        timer?.cancel()
        // The run is over: its notify socket closes here (on the early returns above, with them).
        _ = consume notifyEndpoint

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
        return RunResult(outcome: outcome, startedAt: startedAt, endedAt: endedAt, pid: pid, exitStatus: exitStatus, usage: usage)
    }

    // MARK: - Steps

    /// A run made of steps: the tree's rules are ``StepTree``'s; each process step is executed
    /// as a run is (its own session, the job's kill sequence), with `JOBRUNNER_STEP` and its own
    /// `timeout`. The job's `timeout` covers the whole run (a step's `EXTEND_TIMEOUT_USEC`
    /// pushes out both); cancelling the run cancels the tree.
    private func runSteps(
        _ request: RunRequest, environment: [String: String], handle: RunHandle, logger: Logger, tail: OutputTail?,
        onLine: (@Sendable (OutputLine) -> Void)?, onStarted: @escaping @Sendable (Int32, Timestamp) -> Void
    ) async -> RunResult {
        let job = request.job
        let mailbox = handle.mailbox
        let startedAt = wallClock()
        // The engine hears of the run's start once, at its first step's (an HTTP step has no
        // process: pid 0); the run's pid is its first process step's.
        let firstStep = Mutex<(reported: Bool, pid: Int32?)>((false, nil))
        let stepStarted: @Sendable (Int32, Timestamp) -> Void = { pid, at in
            let report = firstStep.withLock { first -> Bool in
                if first.pid == nil, pid > 0 { first.pid = pid }
                defer { first.reported = true }
                return !first.reported
            }
            if report { onStarted(pid, at) }
        }
        let leaf: StepTree.Leaf = { [self] step, depth in
            var stepLogger = logger
            stepLogger[metadataKey: "step"] = "\(step.name)"
            let command: JobCommand
            switch step.work {
            case .process(let given):
                command = given
            case .http(let call):
                let (result, status) = await self.request(call, job: job, step: step.name, timeout: step.timeout, logger: stepLogger, tail: tail,
                                                          onLine: onLine, onStarted: stepStarted)
                var stepResult = StepResult(name: step.name, kind: step.kind, depth: depth, outcome: result.outcome, startedAt: result.startedAt,
                                            endedAt: result.endedAt, continueOnFailure: step.continueOnFailure)
                stepResult.httpStatus = status
                stepResult.retryAfter = result.retryAfter
                return stepResult
            case .parallel:
                return StepResult(name: step.name, kind: step.kind, depth: depth, outcome: .spawnFailed(reason: "a group is not a leaf"))
            }
            var stepEnvironment = environment
            stepEnvironment["JOBRUNNER_STEP"] = step.name
            let result = await execute(
                command: command, job: job, environment: stepEnvironment, stdin: nil, timeout: step.timeout,
                notify: notifyHub != nil, handle: RunHandle(), logger: stepLogger, tail: tail, step: step.name,
                relay: { mailbox.post(.notify($0)) }, onLine: onLine, onStarted: stepStarted
            )
            result.log(stepLogger, "step")
            return StepResult(name: step.name, kind: step.kind, depth: depth, outcome: result.outcome, startedAt: result.pid == nil ? nil : result.startedAt,
                              endedAt: result.pid == nil ? nil : result.endedAt, pid: result.pid, usage: result.usage,
                              continueOnFailure: step.continueOnFailure)
        }

        let (report, imposed) = await supervised(job: job, handle: handle, logger: logger) {
            await StepTree.run(job.steps, leaf: leaf)
        }
        let pid = firstStep.withLock { $0.pid }
        var result = RunResult(outcome: imposed ?? report.failure ?? .succeeded, startedAt: startedAt, endedAt: wallClock(), pid: pid,
                               exitStatus: nil, usage: report.steps.totalUsage, steps: report.steps)
        // A failing HTTP step's `Retry-After` is the run's.
        if imposed == nil, let failure = report.failure {
            result.retryAfter = report.steps.first { $0.outcome == failure && $0.retryAfter != nil }?.retryAfter
        }
        return result
    }

    /// Supervises work done inside the daemon (a run's tree of steps, an HTTP request) as
    /// `execute` supervises a process: the job's `timeout` (pushed out by a step's
    /// `EXTEND_TIMEOUT_USEC`) and a cancel of the run's handle or task cancel the work, which
    /// must then end promptly; the run's outcome is then `timed_out` or `cancelled`. Notify
    /// messages relayed to the handle's mailbox are recorded on it.
    private func supervised<Value: Sendable>(
        job: JobDefinition, handle: RunHandle, logger: Logger, _ work: @escaping @Sendable () async -> Value
    ) async -> (value: Value, imposed: RunOutcome?) {
        let mailbox = handle.mailbox
        let eventLoop = eventLoopGroup.next()
        var deadline: NIODeadline?
        var timer: Scheduled<Void>?
        if let timeout = job.timeout {
            deadline = .now() + .microseconds(timeout.wholeMicroseconds)
            timer = eventLoop.scheduleTask(deadline: deadline!) { mailbox.post(.deadline) }
        }
        var imposed: RunOutcome?
        let value = await withTaskCancellationHandler {
            await withTaskGroup(of: Value.self) { group -> Value in
                group.addTask {
                    let value = await work()
                    mailbox.post(.workEnded)
                    return value
                }
                func stop(because outcome: RunOutcome) {
                    imposed = outcome
                    timer?.cancel()
                    logger.notice("stopping run", metadata: ["reason": "\(outcome.name)", "kill_grace": .seconds(job.killGrace)])
                    group.cancelAll()
                }
                loop: while true {
                    switch await mailbox.next() {
                    case .workEnded:
                        break loop
                    case .deadline where imposed == nil:
                        if let current = deadline, current > .now() {
                            timer = eventLoop.scheduleTask(deadline: current) { mailbox.post(.deadline) }
                        } else {
                            stop(because: .timedOut)
                        }
                    case .cancel where imposed == nil:
                        stop(because: .cancelled)
                    case .notify(let message):
                        handle.record(message)
                        if case .extendTimeout(let extra) = message, imposed == nil, let current = deadline {
                            let extended = NIODeadline.now() + .microseconds(extra.wholeMicroseconds)
                            if extended > current { deadline = extended }
                        }
                    default:
                        break
                    }
                }
                timer?.cancel()
                // The one child has ended (it posted `.workEnded` last).
                return await group.next()!
            }
        } onCancel: {
            mailbox.post(.cancel)
        }
        return (value, imposed)
    }


    // MARK: - HTTP

    /// Makes an `http` request for a run or a step: its answer is its output (status line,
    /// headers, the first `output_tail` bytes of body), its outcome as ``HTTPCaller`` says.
    private func request(
        _ call: HTTPCall, job: JobDefinition, step: String?, timeout: Duration?, logger: Logger, tail: OutputTail?,
        onLine: (@Sendable (OutputLine) -> Void)?, onStarted: @Sendable (Int32, Timestamp) -> Void
    ) async -> (result: RunResult, status: Int?) {
        let startedAt = wallClock()
        guard let http else {
            return (RunResult(outcome: .spawnFailed(reason: "this daemon makes no HTTP requests"), startedAt: startedAt, endedAt: startedAt,
                              pid: nil, exitStatus: nil), nil)
        }
        onStarted(0, startedAt)
        logger.info("request started", metadata: ["method": "\(call.method)", "url": "\(call.url)"])
        let clock = ContinuousClock()
        let began = clock.now
        let answer = await http.call(call, timeout: timeout, outputLimit: tail?.capacity ?? DaemonSettings.defaultOutputTail)
        let took = began.duration(to: clock.now)
        let now = wallClock()
        for text in answer.lines {
            let line = OutputLine(stream: .stdout, text: text, at: now, step: step)
            tail?.append(line)
            onLine?(line)
        }
        EngineMetrics.httpRequest(job: job.name, step: step, status: answer.status.map(String.init) ?? answer.outcome.name, duration: took)
        var metadata: Logger.Metadata = ["outcome": "\(answer.outcome.name)", "duration": .seconds(took)]
        if let status = answer.status { metadata["status"] = .number(status) }
        if let detail = answer.outcome.detail, answer.status == nil { metadata["detail"] = "\(detail)" }
        if answer.outcome == .succeeded {
            logger.notice("request finished", metadata: metadata)
        } else {
            logger.warning("request finished", metadata: metadata)
        }
        var result = RunResult(outcome: answer.outcome, startedAt: startedAt, endedAt: now, pid: nil, exitStatus: nil)
        result.retryAfter = answer.retryAfter
        return (result, answer.status)
    }

    // MARK: - Helpers

    /// The run's environment: the variables of `inherit_environment` (default PATH, LANG,
    /// LC_ALL) that the daemon has, USER/LOGNAME/HOME/SHELL when the job runs as a user, and the
    /// job's own variables. Nothing else leaks from the daemon.
    func environment(for job: JobDefinition) -> [String: String] {
        var environment: [String: String] = [:]
        for name in job.inheritEnvironment {
            if let value = daemonEnvironment[name] { environment[name] = value }
        }
        if job.inheritEnvironment.contains("PATH"), environment["PATH"] == nil {
            environment["PATH"] = ProcessLauncher.defaultSearchPath
        }
        if let identity = job.identity {
            environment["USER"] = identity.user
            environment["LOGNAME"] = identity.user
            environment["HOME"] = identity.home
            environment["SHELL"] = identity.shell
        }
        for (key, value) in job.environment { environment[key] = value }
        return environment
    }

    /// Linux resource numbers (`RLIMIT_NPROC` is hidden behind _GNU_SOURCE in Glibc's module).
    enum Resource: Int32 {
        case cpu = 0, fileSize = 1, core = 4, processes = 6, openFiles = 7, addressSpace = 9
    }

    static func limits(_ limits: ResourceLimits) -> [LaunchSpec.Limit] {
        var result: [LaunchSpec.Limit] = []
        func add(_ resource: Resource, _ value: UInt64?) {
            guard let value else { return }
            let limit = value  // UInt64.max is RLIM_INFINITY on Linux
            result.append(.init(resource: resource.rawValue, soft: limit, hard: limit))
        }
        add(.openFiles, limits.openFiles)
        add(.processes, limits.processes)
        add(.cpu, limits.cpuSeconds)
        add(.addressSpace, limits.addressSpace)
        add(.core, limits.coreSize)
        add(.fileSize, limits.fileSize)
        return result
    }

    private func spawnFailed(_ error: SpawnError, logger: Logger) -> RunResult {
        let now = wallClock()
        logger.error("cannot start run", metadata: ["outcome": "spawn_failed", "error": "\(error.message)"])
        return RunResult(outcome: .spawnFailed(reason: error.message), startedAt: now, endedAt: now, pid: nil, exitStatus: nil)
    }
}

func lastError() -> String {
    String(cString: strerror(errno))
}
