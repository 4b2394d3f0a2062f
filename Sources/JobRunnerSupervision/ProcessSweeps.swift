import JobRunnerSchedule
import JobRunnerConfig
import JobRunnerCore
import NIOPosix

/// Runs process sweeps (see ``ProcessSweeper``) on the blocking pool, one at a time, at most
/// one every ``spacing``, batching the runs that end meanwhile into the next one: with thousands
/// of runs a second, /proc is read fifty times a second, not thousands.
actor ProcessSweeps {
    /// The least time from one sweep's start to the next's.
    static let spacing: Duration = .milliseconds(20)

    private let pool: NIOThreadPool
    private let reaper: ChildReaper
    private var sweeping = false
    private var lastSweep: ContinuousClock.Instant?
    private var queued: [(run: String, continuation: CheckedContinuation<[Int32], Never>)] = []

    init(pool: NIOThreadPool, reaper: ChildReaper) {
        self.pool = pool
        self.reaper = reaper
    }

    /// Kills what `run` left outside its process group; returns those pids.
    func sweep(after run: String) async -> [Int32] {
        if sweeping {
            return await withCheckedContinuation { queued.append((run, $0)) }
        }
        sweeping = true
        defer { sweeping = false }
        var batch: [(run: String, continuation: CheckedContinuation<[Int32], Never>?)] = [(run, nil)]
        var mine: [Int32] = []
        while !batch.isEmpty {
            if let lastSweep, ContinuousClock.now - lastSweep < Self.spacing {
                try? await Pause.sleep(until: lastSweep + Self.spacing)
                batch += queued.map { ($0.run, $0.continuation) }
                queued = []
            }
            lastSweep = .now
            let runs = Set(batch.map(\.run))
            let leaders = reaper.watchedPIDs
            let killed = (try? await pool.runIfActive { ProcessSweeper.sweep(endedRuns: runs, leaders: leaders) }) ?? []
            for entry in batch {
                let own = killed.filter { $0.run == entry.run }.map(\.pid)
                if let continuation = entry.continuation {
                    continuation.resume(returning: own)
                } else {
                    mine = own
                }
            }
            batch = queued.map { ($0.run, $0.continuation) }
            queued = []
        }
        return mine
    }
}
