import CSystemd

#if canImport(Glibc)
import Glibc
#endif

/// Tells the service manager about the daemon's state through `sd_notify(3)`.
///
/// Every message is a silent no-op when `NOTIFY_SOCKET` is not set (not run by systemd).
/// The protocol strings live only here.
public struct Notifier: Sendable {
    public init() {}

    /// Whether a service manager listens (`NOTIFY_SOCKET` is set).
    public var isConnected: Bool {
        getenv("NOTIFY_SOCKET") != nil
    }

    /// `READY=1` with a status line: start-up or a reload is complete.
    public func ready(status: String) {
        send("READY=1\nSTATUS=\(Self.oneLine(status))")
    }

    /// `RELOADING=1` with `MONOTONIC_USEC`, as `Type=notify-reload` requires (systemd ≥ 253
    /// waits for the timestamp; older ones ignore it).
    public func reloading() {
        send("RELOADING=1\nMONOTONIC_USEC=\(Self.monotonicMicroseconds())\nSTATUS=reloading configuration")
    }

    /// `STOPPING=1`: shutdown has begun.
    public func stopping(status: String) {
        send("STOPPING=1\nSTATUS=\(Self.oneLine(status))")
    }

    /// `STATUS=`: one line for `systemctl status`.
    public func status(_ text: String) {
        send("STATUS=\(Self.oneLine(text))")
    }

    /// `EXTEND_TIMEOUT_USEC=`: asks for more time to stop (or start) than the unit allows.
    public func extendTimeout(by duration: Duration) {
        let (seconds, attoseconds) = duration.components
        let microseconds = max(0, seconds * 1_000_000 + attoseconds / 1_000_000_000_000)
        send("EXTEND_TIMEOUT_USEC=\(microseconds)")
    }

    /// `STATUS=` and `ERRNO=` for a fatal start error, so `systemctl status` says why.
    public func failed(status: String, errno code: Int32) {
        send("STATUS=\(Self.oneLine(status))\nERRNO=\(code)")
    }

    /// `WATCHDOG=1`: the daemon's main loop is alive.
    public func watchdog() {
        send("WATCHDOG=1")
    }

    /// The watchdog interval systemd asked for (`WATCHDOG_USEC` for this pid), if any.
    public func watchdogInterval() -> Duration? {
        var microseconds: UInt64 = 0
        guard sd_watchdog_enabled(0, &microseconds) > 0, microseconds > 0 else { return nil }
        return .microseconds(Int64(microseconds))
    }

    private func send(_ message: String) {
        guard isConnected else { return }
        _ = message.withCString { sd_notify(0, $0) }
    }

    static func oneLine(_ text: String) -> String {
        var line = text.replacingNewlines()
        if line.utf8.count > 1000 { line = String(line.prefix(1000)) + "…" }
        return line
    }

    static func monotonicMicroseconds() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return Int64(now.tv_sec) * 1_000_000 + Int64(now.tv_nsec) / 1000
    }
}

extension String {
    fileprivate func replacingNewlines() -> String {
        String(map { $0.isNewline ? " " : $0 })
    }
}
