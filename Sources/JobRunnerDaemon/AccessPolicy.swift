import Foundation
import JobRunnerConfig
import JobRunnerControl
import JobRunnerCore
import Synchronization

/// Who may change things through the control socket: root, the daemon's own user, the uids of
/// `daemon.control.allowed_uids`, and members of `daemon.control.allowed_groups`. Everyone who
/// can connect may read. Reloads replace the lists.
final class AccessPolicy: Sendable {
    private let settings: Mutex<ControlSettings>

    init(_ settings: ControlSettings) {
        self.settings = Mutex(settings)
    }

    func update(_ settings: ControlSettings) {
        self.settings.withLock { $0 = settings }
    }

    func allows(_ peer: PeerCredentials) -> Bool {
        if peer.uid == 0 || peer.uid == geteuid() { return true }
        let control = settings.withLock { $0 }
        if control.allowedUIDs.contains(peer.uid) { return true }
        guard !control.allowedGIDs.isEmpty else { return false }
        if control.allowedGIDs.contains(peer.gid) { return true }
        return !Set(Self.groups(of: peer.pid)).isDisjoint(with: control.allowedGIDs)
    }

    /// The supplementary groups of a process (the `Groups:` line of /proc/PID/status).
    static func groups(of pid: Int32) -> [UInt32] {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return [] }
        for line in status.split(separator: "\n") where line.hasPrefix("Groups:") {
            return line.dropFirst("Groups:".count).split(whereSeparator: { $0 == " " || $0 == "\t" }).compactMap { UInt32($0) }
        }
        return []
    }
}

/// A run's output lines as the API's type, for as long as the run prints or the follower listens.
func outputInfoStream(_ source: AsyncStream<OutputLine>) -> AsyncStream<OutputLineInfo> {
    let (stream, continuation) = AsyncStream.makeStream(of: OutputLineInfo.self, bufferingPolicy: .bufferingNewest(10_000))
    // Unstructured because it lives exactly as long as the follower's HTTP response: it ends
    // with the run's output, or is cancelled when the follower goes away.
    let task = Task {
        for await line in source { continuation.yield(OutputLineInfo(stream: line.stream.rawValue, text: line.text)) }
        continuation.finish()
    }
    continuation.onTermination = { _ in task.cancel() }
    return stream
}
