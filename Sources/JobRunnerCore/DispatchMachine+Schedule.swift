import JobRunnerConfig
import JobRunnerSchedule
import Logging
import OrderedCollections

extension DispatchMachine {
    /// The first fire of a job from now (nil when it only runs on request or at startup).
    /// In a cluster (`clustered`), intervals are aligned to the Unix epoch and random delays
    /// derive from the occurrence, so every node names the same instants.
    static func firstDue(of job: JobDefinition, now: Timestamp, uptime: Duration, seed: UInt64, clustered: Bool) -> Due? {
        guard job.enabled, let trigger = job.trigger else { return nil }
        switch trigger {
        case .cron, .calendar:
            return trigger.nextOccurrence(after: now, in: job.timeZone).map {
                .wall(occurrence: $0, delay: randomDelay(for: job, occurrence: $0, seed: seed, derived: clustered))
            }
        case .interval where clustered:
            return trigger.nextOccurrence(after: now, in: job.timeZone, aligned: true).map {
                .wall(occurrence: $0, delay: randomDelay(for: job, occurrence: $0, seed: seed, derived: true))
            }
        case .interval(let interval):
            return .uptime(occurrence: uptime + interval, delay: randomDelay(for: job, occurrence: nil, seed: seed))
        case .reboot:
            return nil
        }
    }

    /// The random delay of one fire of a job.
    func nextDelay(for job: JobDefinition, occurrence: Timestamp?) -> Duration {
        Self.randomDelay(for: job, occurrence: occurrence, seed: jitterSeed, derived: clustered)
    }

    /// The random delay of one fire: fresh and uniform in [0, random_delay), or with
    /// `fixed_random_delay` one stable offset per job and machine (like systemd's
    /// FixedRandomDelay). With `derived` (a cluster), the delay is a hash of the occurrence, the
    /// same on every node.
    public static func randomDelay(for job: JobDefinition, occurrence: Timestamp?, seed: UInt64, derived: Bool = false) -> Duration {
        guard let range = job.randomDelay, range > .zero else { return .zero }
        let span = UInt64(range.wholeMicroseconds)
        if job.fixedRandomDelay {
            return .microseconds(Int64(StableHash.of(job.name, seed: seed) % span))
        }
        if derived, let occurrence {
            return .microseconds(Int64(StableHash.of("\(job.name)@\(occurrence.microseconds)", seed: seed) % span))
        }
        return .microseconds(Int64(UInt64.random(in: 0..<span)))
    }

    /// The seed for `fixed_random_delay` offsets on a machine (from its /etc/machine-id).
    public static func jitterSeed(machineID: String) -> UInt64 {
        StableHash.of(machineID, seed: 0)
    }

    /// Occurrences a job missed while the daemon was down, as its `catch_up` policy wants them
    /// run: none, the latest, or each (the latest `catch_up_max`). A job never catches up on
    /// time before the daemon first knew it.
    static func missedOccurrences(of job: JobDefinition, memory: JobMemory?, now: Timestamp, notices: inout [DispatchAction]) -> [Timestamp] {
        guard let memory, let trigger = job.trigger else { return [] }
        switch trigger {
        case .cron, .calendar: break
        case .interval, .reboot: return []
        }
        let candidates = [memory.lastOccurrence, memory.firstSeen].compactMap { $0 }
        guard let since = candidates.max() else { return [] }
        var missed: [Timestamp] = []
        var count = 0
        var cursor = since
        while count < 1_000_000, let next = trigger.nextOccurrence(after: cursor, in: job.timeZone), next <= now {
            count += 1
            missed.append(next)
            if missed.count > job.catchUpMax { missed.removeFirst() }
            cursor = next
        }
        guard count > 0, let latest = missed.last else { return [] }
        switch job.catchUp {
        case .none:
            notices.append(.log(.notice, "occurrences missed while the daemon was down are not run (catch_up: none)", [
                "job": "\(job.name)", "missed": .number(count), "since": "\(since)",
            ]))
            return []
        case .once:
            notices.append(.log(.notice, "catching up once for occurrences missed while the daemon was down", [
                "job": "\(job.name)", "missed": .number(count), "latest": "\(latest)",
            ]))
            return [latest]
        case .all:
            notices.append(.log(.notice, "catching up occurrences missed while the daemon was down", [
                "job": "\(job.name)", "missed": .number(count), "running": .number(missed.count),
            ]))
            return missed
        }
    }

    /// When a due job fires, on the wall clock.
    static func fireInstant(_ due: Due?, now: Timestamp, uptime: Duration) -> Timestamp? {
        switch due {
        case .wall(let occurrence, let delay): occurrence.advanced(by: delay)
        case .uptime(let occurrence, let delay): now.advanced(by: occurrence + delay - uptime)
        case nil: nil
        }
    }
}
