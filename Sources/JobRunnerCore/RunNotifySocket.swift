import JobRunnerSchedule
#if canImport(Glibc)
import Glibc
#endif

/// A run's own `NOTIFY_SOCKET`: a datagram socket in a directory only the run's user can
/// enter, so every message on it is the run's, whoever sent it — no looking up the sender's
/// pid, which races with short-lived senders such as `systemd-notify`.
struct RunNotifySocket {
    /// What a job may tell the daemon, in sd_notify(3) terms.
    enum Message: Sendable, Equatable {
        case status(String)
        case extendTimeout(Duration)
        case ready
    }

    let directory: String
    let path: String
    /// The bound socket; the daemon reads it, the run sends to `path`.
    let descriptor: Int32

    /// Creates `<runtime>/runs/<run id>/notify`, owned by the run's user when it has one.
    static func create(runtimeDirectory: String, runID: String, owner: (uid: UInt32, gid: UInt32)?) -> Result<RunNotifySocket, SpawnError> {
        let runs = runtimeDirectory + "/runs"
        mkdir(runtimeDirectory, 0o755)
        mkdir(runs, 0o711)
        let directory = runs + "/" + runID
        guard mkdir(directory, 0o700) == 0 || errno == EEXIST else {
            return .failure(SpawnError("notify socket directory \(directory): \(lastError())"))
        }
        let path = directory + "/notify"
        guard path.utf8.count < 108 else {
            rmdir(directory)
            return .failure(SpawnError("notify socket path \(path) is longer than 107 bytes; use a shorter runtime directory"))
        }
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else {
            rmdir(directory)
            return .failure(SpawnError("notify socket: \(lastError())"))
        }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            for (index, byte) in path.utf8.enumerated() { buffer[index] = byte }
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0 else {
            let error = lastError()
            close(fd)
            rmdir(directory)
            return .failure(SpawnError("notify socket \(path): \(error)"))
        }
        // The run's user must be able to enter the directory and write to the socket; nobody
        // else may.
        if let owner, owner.uid != geteuid() {
            chown(directory, owner.uid, owner.gid)
            chown(path, owner.uid, owner.gid)
        }
        chmod(path, 0o600)
        return .success(RunNotifySocket(directory: directory, path: path, descriptor: fd))
    }

    /// Removes the socket file and its directory (the descriptor is closed by its reader).
    func remove() {
        unlink(path)
        rmdir(directory)
    }

    /// Parses one datagram: newline-separated `KEY=value` assignments.
    static func parse(_ datagram: String) -> [Message] {
        var messages: [Message] = []
        for line in datagram.split(separator: "\n") {
            guard let equals = line.firstIndex(of: "=") else { continue }
            let key = line[..<equals]
            let value = String(line[line.index(after: equals)...])
            switch key {
            case "STATUS":
                messages.append(.status(String(value.prefix(1024))))
            case "EXTEND_TIMEOUT_USEC":
                // Any number a job sends is at most the longest duration anything accepts, so the
                // deadline it moves cannot overflow.
                if let micros = UInt64(value) {
                    messages.append(.extendTimeout(.microseconds(Int64(min(micros, UInt64(DurationText.maximum.wholeMicroseconds))))))
                }
            case "READY":
                if value == "1" { messages.append(.ready) }
            default:
                continue
            }
        }
        return messages
    }
}
