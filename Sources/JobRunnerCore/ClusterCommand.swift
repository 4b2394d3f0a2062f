import JobRunnerConfig

/// A request one node makes of another, or of all: stored as a row only the daemon's database
/// role may write, read back by the receivers. Every field is checked when read, so a row that
/// is not a command the daemon could have written is ignored.
public enum ClusterCommand: Equatable, Sendable {
    /// Stop a run on the node running it.
    case cancel(node: String, run: RunID)
    /// Start a run of a job now, on a node, under an id the asking node chose.
    case run(node: String, job: String, run: RunID)
    /// Pause or resume a job on every node (`from` is the asking node, which already applied it).
    case pause(job: String, paused: Bool, from: String)

    /// The command's kind and arguments, in the order `init(fields:)` reads them.
    public var fields: [String] {
        switch self {
        case .cancel(let node, let run): ["cancel", node, run.rawValue]
        case .run(let node, let job, let run): ["run", node, job, run.rawValue]
        case .pause(let job, let paused, let from): ["pause", job, paused ? "1" : "0", from]
        }
    }

    /// Reads a command; nil for anything this daemon would not have written.
    public init?(fields: [String]) {
        func name(_ text: String) -> String? { ConfigLoader.isValidJobName(text) ? text : nil }
        switch (fields.first, fields.count) {
        case ("cancel", 3):
            guard let node = name(fields[1]), let run = RunID(validating: fields[2]) else { return nil }
            self = .cancel(node: node, run: run)
        case ("run", 4):
            guard let node = name(fields[1]), let job = name(fields[2]), let run = RunID(validating: fields[3]) else { return nil }
            self = .run(node: node, job: job, run: run)
        case ("pause", 4):
            guard let job = name(fields[1]), fields[2] == "0" || fields[2] == "1", let from = name(fields[3]) else { return nil }
            self = .pause(job: job, paused: fields[2] == "1", from: from)
        default:
            return nil
        }
    }

    /// The run the command names, if any.
    public var runID: RunID? {
        switch self {
        case .cancel(_, let run), .run(_, _, let run): run
        case .pause: nil
        }
    }
}
