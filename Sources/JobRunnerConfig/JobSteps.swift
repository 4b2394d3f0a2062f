/// One step of a run made of steps (`steps:`): a process, or a group of steps run at once.
///
/// Steps of a list run in sequence; a ``ParallelGroup`` runs its steps concurrently. The rules
/// are those of a task group: every step started is awaited, the first failure (of a step
/// without `continue_on_failure`) stops the sequence and cancels the group's running siblings
/// with the job's kill sequence, steps not started are skipped, and every failure is recorded.
public struct JobStep: Sendable, Hashable {
    public enum Work: Sendable, Hashable {
        /// A process, in a session of its own, with the run's identity, environment and limits.
        case process(JobCommand)
        /// A request made in-process on the daemon's pooled HTTP client.
        case http(HTTPCall)
        /// Steps run at once.
        case parallel(ParallelGroup)
    }

    /// Unique within the job (`[A-Za-z0-9_.-]+`); a group without one is `parallel-<n>`.
    public var name: String
    public var work: Work
    /// This step's own limit (the job's `timeout` covers the whole run).
    public var timeout: Duration?
    /// A failure of this step is recorded but is not the run's and stops nothing.
    public var continueOnFailure: Bool

    public init(name: String, work: Work, timeout: Duration? = nil, continueOnFailure: Bool = false) {
        self.name = name
        self.work = work
        self.timeout = timeout
        self.continueOnFailure = continueOnFailure
    }

    /// A process step.
    public static func process(_ name: String, _ command: JobCommand, timeout: Duration? = nil,
                               continueOnFailure: Bool = false) -> JobStep {
        JobStep(name: name, work: .process(command), timeout: timeout, continueOnFailure: continueOnFailure)
    }

    /// An HTTP step.
    public static func http(_ name: String, _ call: HTTPCall, timeout: Duration? = nil, continueOnFailure: Bool = false) -> JobStep {
        JobStep(name: name, work: .http(call), timeout: timeout, continueOnFailure: continueOnFailure)
    }

    /// A group of steps run at once, at most `max` at a time (nil: all).
    public static func parallel(_ name: String, max: Int? = nil, _ steps: [JobStep], continueOnFailure: Bool = false) -> JobStep {
        JobStep(name: name, work: .parallel(ParallelGroup(max: max, steps: steps)), continueOnFailure: continueOnFailure)
    }

    /// The kind of step, as the API and history name it.
    public var kind: StepKind {
        switch work {
        case .process(.argv): .command
        case .process(.shell): .shell
        case .http: .http
        case .parallel: .parallel
        }
    }

    /// This step and every step inside it, depth first, with their depth (0 at the top).
    public func flattened(depth: Int = 0) -> [(step: JobStep, depth: Int)] {
        var result = [(self, depth)]
        if case .parallel(let group) = work {
            for step in group.steps { result += step.flattened(depth: depth + 1) }
        }
        return result
    }
}

/// `parallel:` — steps run at once.
public struct ParallelGroup: Sendable, Hashable {
    /// Most steps running at once (a semaphore); nil means all of them.
    public var max: Int?
    public var steps: [JobStep]

    public init(max: Int? = nil, steps: [JobStep]) {
        self.max = max
        self.steps = steps
    }
}

/// What a step is, by name (as in the API and history).
public enum StepKind: String, Sendable, Hashable, Codable {
    case command
    case shell
    case http
    case parallel
}

/// `after:` — the job fires when a fire of `job` reaches a final outcome (after its retries).
public struct AfterCondition: Sendable, Hashable {
    public enum Outcome: String, Sendable, Hashable, CaseIterable {
        /// The fire succeeded.
        case succeeded
        /// It failed for good: a non-zero exit, a signal, a timeout, or it could not start.
        case failed
        /// Either (a fire cancelled, skipped or interrupted triggers nothing).
        case any
    }

    public var job: String
    public var outcome: Outcome
    /// Where it is written (not part of its identity).
    public var location: SourceLocation

    public init(job: String, outcome: Outcome = .succeeded, location: SourceLocation = SourceLocation(file: "<memory>", line: 1, column: 1)) {
        self.job = job
        self.outcome = outcome
        self.location = location
    }

    public static func == (lhs: AfterCondition, rhs: AfterCondition) -> Bool {
        lhs.job == rhs.job && lhs.outcome == rhs.outcome
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(job)
        hasher.combine(outcome)
    }
}

/// `http:` — a request made in-process (a step, or a job's whole work): an expected status is
/// success, any other status a failure carrying it, a connection or TLS error a failure
/// carrying the reason.
public struct HTTPCall: Sendable, Hashable {
    public var url: String
    public var method: String
    /// Headers sent as written (name, value), in order.
    public var headers: [Header]
    /// Headers whose values are read from files at each request (a token, a secret): the value
    /// is the file's first line, and is never shown by the API or logs.
    public var headerFiles: [Header]
    public var body: String?
    /// Statuses that mean success (default 200–299).
    public var expectStatus: [ClosedRange<Int>]
    /// PEM certificates to trust instead of the system's store.
    public var caFile: String?
    public var followRedirects: Bool

    public struct Header: Sendable, Hashable {
        public var name: String
        public var value: String

        public init(_ name: String, _ value: String) {
            self.name = name
            self.value = value
        }
    }

    public static let defaultExpectStatus = [200...299]

    public init(url: String, method: String = "GET", headers: [Header] = [], headerFiles: [Header] = [], body: String? = nil,
                expectStatus: [ClosedRange<Int>] = Self.defaultExpectStatus, caFile: String? = nil, followRedirects: Bool = true) {
        self.url = url
        self.method = method
        self.headers = headers
        self.headerFiles = headerFiles
        self.body = body
        self.expectStatus = expectStatus
        self.caFile = caFile
        self.followRedirects = followRedirects
    }

    /// Whether `status` means success.
    public func expects(_ status: Int) -> Bool {
        expectStatus.contains { $0.contains(status) }
    }

    /// `POST https://monitor.example/ping`, for a person (no header values).
    public var description: String { "\(method) \(url)" }
}
