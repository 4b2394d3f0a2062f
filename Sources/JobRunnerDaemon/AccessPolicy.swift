import JobRunnerSupervision
import JobRunnerHistory
import JobRunnerAPI
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
        // The groups the kernel recorded when the client connected, never /proc/<pid> now.
        return !Set(peer.groups ?? []).isDisjoint(with: control.allowedGIDs)
    }
}
