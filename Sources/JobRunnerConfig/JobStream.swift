#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CLinuxSupport
import Dispatch
import JobRunnerSchedule
import Synchronization

/// Reads the jobs of one `jobs:` section, in chunks, possibly while the composer is still
/// composing the rest of it: the composer hands each entry over as it ends (``watcher``), and
/// from the chunk that completes ``ConfigLoader/parallelReadFrom`` jobs (a chunk is half as
/// many) the ``SecondReader`` reads the chunks composed so far while the first thread goes on
/// composing. When composition ends the first thread reads what is left beside the second.
/// Without the composer (``feed(_:)``), it is the same read of an already composed section, on
/// one thread or two.
///
/// Each job is read alone, from nodes nobody changes, and the chunks' jobs and errors join in
/// file order: what a read yields does not depend on which thread read which chunk. All of this
/// class but ``ChunkQueue`` lives on the thread that composes.
final class JobStream {
    private let loader: ConfigLoader
    private let file: String
    private let chunkSize: Int
    /// The daemon settings jobs are read with: given, or read (``begin(_:)``) from the `daemon:`
    /// section before `jobs:`. A `daemon:` written after `jobs:` makes the stream useless.
    private var daemon: DaemonSettings?
    private var seen: [String: SourceLocation]
    private let schedules: [String: CronSchedule]
    /// Keys that are not names, then names already taken: the errors a section's keys give,
    /// in the order a read of the whole section reports them.
    private var keyErrors: NodeReader
    private var duplicateErrors: NodeReader
    private var pending: [MappingPair] = []
    private var admitted = 0
    private var chunks = 0
    /// Entries handed over, and how often a `jobs:` section began (twice is a composer error).
    private var observed = 0
    private var begun = 0
    private let queue = ChunkQueue()
    /// Signalled when the second reader is done with this section.
    private var secondDone: DispatchSemaphore?
    private var secondTried = false
    private var ended = false

    init(loader: ConfigLoader, file: String, daemon: DaemonSettings?, seen: [String: SourceLocation], schedules: [String: CronSchedule]) {
        self.loader = loader
        self.file = file
        self.daemon = daemon
        self.seen = seen
        self.schedules = schedules
        keyErrors = NodeReader(file: file)
        duplicateErrors = NodeReader(file: file)
        chunkSize = max(1, loader.parallelReadFrom / 2)
    }

    deinit {
        abandon()
    }

    /// What the composer calls while composing the section.
    var watcher: JobsWatcher {
        JobsWatcher(begin: { [unowned self] before in begin(before) }, entry: { [unowned self] pair in entry(pair) })
    }

    /// Reads every entry of an already composed section.
    func feed(_ mapping: YAMLNode.Mapping) {
        seen.reserveCapacity(seen.count + mapping.pairs.count)
        begin([])
        for pair in mapping.pairs { entry(pair) }
    }

    /// Whether this stream saw all of `mapping` (the section as composed). The caller knows
    /// whether the settings it read jobs with are the file's (no `daemon:` after `jobs:`).
    func saw(_ mapping: YAMLNode.Mapping) -> Bool {
        !ended && begun == 1 && observed == mapping.pairs.count
    }

    private func begin(_ before: [(key: YAMLNode, value: YAMLNode)]) {
        begun += 1
        guard daemon == nil else { return }
        let section = before.first { if case .scalar(let scalar) = $0.key { scalar.string == "daemon" } else { false } }
        var scratch = NodeReader(file: file)
        daemon = loader.daemonSettings(section?.value, reader: &scratch)
    }

    private func entry(_ pair: (key: YAMLNode, value: YAMLNode)) {
        observed += 1
        guard begun == 1, !ended else { return }
        guard case .scalar(let scalar) = pair.key else {
            keyErrors.fail(.wrongType, at: pair.key, "jobs: keys must be plain names, found \(NodeReader.describe(pair.key))")
            return
        }
        let location = keyErrors.location(pair.key)
        // One lookup for a new name; a duplicate puts the first place back.
        if let first = seen.updateValue(location, forKey: scalar.string) {
            seen[scalar.string] = first
            duplicateErrors.fail(.duplicateJob, at: location,
                                 "duplicate job name '\(scalar.string)' (also defined at \(first.file):\(first.line))")
            return
        }
        if pending.isEmpty { pending.reserveCapacity(chunkSize) }
        pending.append((scalar.string, pair.key, pair.value))
        admitted += 1
        if pending.count == chunkSize { push() }
    }

    private func push() {
        queue.push(pending)
        pending = []
        chunks += 1
        guard loader.readThreads > 1, !secondTried, admitted >= loader.parallelReadFrom, let daemon else { return }
        secondTried = true
        let (queue, loader, file, schedules) = (self.queue, self.loader, self.file, self.schedules)
        secondDone = SecondReader.shared.start {
            var reader = NodeReader(file: file)
            reader.parsedSchedules = schedules
            while let (index, chunk) = queue.take(waiting: true) {
                queue.store(index, loader.readChunk(chunk, daemon: daemon, reader: &reader))
            }
        }
    }

    /// The section's jobs in file order, its errors, and the names now taken.
    func finish() -> (jobs: [JobDefinition], errors: [ConfigError], seen: [String: SourceLocation]) {
        precondition(!ended && begun == 1, "a stream is finished once, after its section began")
        if !pending.isEmpty { push() }
        queue.close()
        guard let daemon else { preconditionFailure("a section began without its daemon settings") }
        var reader = NodeReader(file: file)
        reader.parsedSchedules = schedules
        while let (index, chunk) = queue.take(waiting: false) {
            queue.store(index, loader.readChunk(chunk, daemon: daemon, reader: &reader))
        }
        join()
        ended = true
        var jobs: [JobDefinition] = []
        jobs.reserveCapacity(admitted)
        var errors = keyErrors.errors + duplicateErrors.errors
        for result in queue.results(count: chunks) {
            jobs.append(contentsOf: result.jobs)
            errors.append(contentsOf: result.errors)
        }
        return (jobs, errors, seen)
    }

    /// Stops reading and waits for the second thread: the file failed to compose, or was read
    /// otherwise. Does nothing once finished.
    func abandon() {
        guard !ended else { return }
        ended = true
        queue.close(abandoning: true)
        join()
    }

    private func join() {
        secondDone?.wait()
        secondDone = nil
    }
}

/// The thread that reads beside the composing one: started on first use, then parked on a
/// semaphore between reads for the life of the process (it never wakes on its own), and
/// running at the priority of the thread it reads for (the blocking pool's nice +10 in the
/// daemon, as far as the system lets it go back and forth). One thread for every reload keeps
/// the job definitions it builds in one malloc arena, where the next reload's reuse the memory
/// the previous ones leave: a thread started for each reload drew whichever arena glibc handed
/// it, and ten reloads of 10,000 jobs left 2.3–3.5× the first load's private memory spread over
/// a dozen arenas, which `malloc_trim` does not shrink from the top.
final class SecondReader: Sendable {
    static let shared = SecondReader()

    private struct State {
        var body: (@Sendable () -> Void)?
        var done: DispatchSemaphore?
        var started = false
    }

    private let state = Mutex(State())
    private let wake = DispatchSemaphore(value: 0)

    /// Runs `body` on the thread; returns what is signalled once it ended, or nil when the
    /// thread is reading for another load or cannot be started (the caller then reads alone).
    func start(_ body: @escaping @Sendable () -> Void) -> DispatchSemaphore? {
        errno = 0
        let callerNice = getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0)
        let nice: Int32? = errno == 0 ? callerNice : nil
        let done = DispatchSemaphore(value: 0)
        let launch = state.withLock { state -> Bool? in
            guard state.body == nil else { return nil }
            state.body = {
                // `who` 0 with PRIO_PROCESS is the calling thread on Linux.
                if let nice { _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, nice) }
                body()
            }
            state.done = done
            defer { state.started = true }
            return !state.started
        }
        guard let launch else { return nil }
        if launch {
            guard let thread = ConfigLoader.startThread({ self.serve() }) else {
                state.withLock { $0 = State() }
                return nil
            }
            pthread_detach(thread)
        }
        wake.signal()
        return done
    }

    /// The thread's name, as `/proc` shows it.
    static let threadName = "jr-config-read"

    private func serve() {
        jr_name_current_thread(Self.threadName)
        while true {
            wake.wait()
            guard let (body, done) = state.withLock({ state in state.body.map { ($0, state.done!) } }) else { continue }
            body()
            state.withLock {
                $0.body = nil
                $0.done = nil
            }
            done.signal()
        }
    }
}

/// The chunks of a section waiting to be read and what reading them gave, shared by the
/// composing thread and the second reader.
final class ChunkQueue: Sendable {
    typealias Read = (jobs: [JobDefinition], errors: [ConfigError])

    private struct State {
        var chunks: [[MappingPair]] = []
        var taken = 0
        var closed = false
        var abandoned = false
        var results: [Read?] = []
    }

    private let state = Mutex(State())
    /// Signalled once per chunk pushed and once at close: a waiting reader wakes for each.
    private let ready = DispatchSemaphore(value: 0)

    func push(_ chunk: [MappingPair]) {
        state.withLock {
            $0.chunks.append(chunk)
            $0.results.append(nil)
        }
        ready.signal()
    }

    func close(abandoning: Bool = false) {
        state.withLock {
            $0.closed = true
            $0.abandoned = $0.abandoned || abandoning
        }
        ready.signal()
    }

    /// The next chunk to read and its index, or nil when there is none left (waiting for one
    /// until the queue closes, with `waiting`).
    func take(waiting: Bool) -> (Int, [MappingPair])? {
        while true {
            if waiting { ready.wait() }
            let next = state.withLock { state -> (Int, [MappingPair])?? in
                guard !state.abandoned else { return .some(nil) }
                if state.taken < state.chunks.count {
                    let index = state.taken
                    state.taken += 1
                    defer { state.chunks[index] = [] }
                    return (index, state.chunks[index])
                }
                return state.closed || !waiting ? .some(nil) : nil
            }
            if let next { return next }
        }
    }

    func store(_ index: Int, _ result: Read) {
        state.withLock { $0.results[index] = result }
    }

    /// Every chunk's result, in order (once both readers are done).
    func results(count: Int) -> [Read] {
        state.withLock { state in (0..<count).map { state.results[$0]! } }
    }
}

extension ConfigLoader {
    /// The jobs of one chunk, and the errors reading them gave.
    func readChunk(_ chunk: [MappingPair], daemon: DaemonSettings, reader: inout NodeReader) -> ChunkQueue.Read {
        var jobs: [JobDefinition] = []
        jobs.reserveCapacity(chunk.count)
        for entry in chunk {
            if let job = readJob(name: entry.key, keyNode: entry.keyNode, node: entry.value, daemon: daemon, reader: &reader) {
                jobs.append(job)
            }
        }
        return (jobs, reader.takeErrors())
    }
}
