/// How the engine shows it is alive and, while stopping, how long it still needs.
///
/// `beat` is called from the scheduler's own loop — not from a timer beside it — so a wedged
/// scheduler stops beating (systemd's watchdog then restarts the daemon), while a live one
/// beats at least every `interval` even when nothing is due.
public struct Heartbeat: Sendable {
    public enum Phase: Sendable, Equatable {
        /// The scheduler's loop turned.
        case running
        /// Stopping: `runs` are still alive and the daemon needs at most `timeLeft` more
        /// (the rest of `shutdown_grace`, the longest `kill_grace`, and a margin).
        case draining(runs: Int, timeLeft: Duration)
    }

    /// Most time between beats while running (nil: no beats while running).
    public var interval: Duration?
    /// Most time between beats while draining.
    public var drainInterval: Duration
    public var beat: @Sendable (Phase) -> Void

    public init(interval: Duration?, drainInterval: Duration = .seconds(5), beat: @escaping @Sendable (Phase) -> Void) {
        self.interval = interval
        self.drainInterval = drainInterval
        self.beat = beat
    }

    /// Margin added to the time a drain asks for.
    static let drainMargin = Duration.seconds(10)
}
