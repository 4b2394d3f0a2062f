import JobRunnerSchedule

/// Something that happened to a run or a job, for the persistent history.
public enum JournalEvent: Sendable {
    /// A fire was recorded (waiting for a slot). `occurrence` is the schedule occurrence it
    /// handles, for wall-clock schedules: after a crash that occurrence never runs again.
    case fired(RunRecord, occurrence: Timestamp?)
    /// A fire that will not run (skipped, or dropped before it started), with its occurrence.
    case settled(RunRecord, occurrence: Timestamp?)
    /// The run's process started.
    case started(id: RunID, pid: Int32, at: Timestamp)
    /// The run ended (its record carries the outcome, times and output tail).
    case finished(RunRecord)
    /// A job was paused or resumed.
    case paused(job: String, Bool)
    /// These jobs exist from `at` on (jobs already known keep their first date): a job never
    /// catches up on time before it existed.
    case known(jobs: [String], at: Timestamp)
}

/// Where the engine writes its history. Recording never blocks; `flush` waits until what was
/// recorded is written, which the engine does before it starts a run's process, so a crash
/// cannot make an occurrence run twice.
public protocol RunJournal: Sendable {
    /// Records an event; returns its place in the journal (1 for the first).
    @discardableResult
    func record(_ event: JournalEvent) -> UInt64
    /// Returns when the events up to `place` (recorded earlier) are written, or writing is
    /// failing (runs go on without history rather than wait for a full disk). A run's start
    /// waits for its own fire, not for whatever was recorded after it.
    func flush(through place: UInt64) async
}

extension RunJournal {
    /// Returns when every event recorded so far is written (or writing is failing).
    public func flush() async {
        await flush(through: .max)
    }
}

/// What the engine knows about a job from before it started.
public struct JobMemory: Sendable, Hashable {
    /// The last occurrence a fire handled (ran, queued or skipped).
    public var lastOccurrence: Timestamp?
    /// When the daemon first knew the job: it never catches up on time before that.
    public var firstSeen: Timestamp?
    public var paused: Bool

    public init(lastOccurrence: Timestamp? = nil, firstSeen: Timestamp? = nil, paused: Bool = false) {
        self.lastOccurrence = lastOccurrence
        self.firstSeen = firstSeen
        self.paused = paused
    }
}
