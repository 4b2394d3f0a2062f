import JobRunnerSchedule
import JobRunnerConfig
import JobRunnerCore
import CLinuxSupport

#if canImport(Glibc)
import Glibc
#endif

/// A file descriptor with exactly one owner: closed when its owner goes away, on every path,
/// unless handed over with ``take()`` (to NIO, or to a table that closes it later). No early
/// return can leak one, and none can be closed twice.
struct Descriptor: ~Copyable {
    let raw: Int32

    init(_ raw: Int32) {
        self.raw = raw
    }

    /// Opens `path` close-on-exec; nil with errno set on failure.
    static func open(_ path: String, _ flags: Int32) -> Descriptor? {
        let fd = Glibc.open(path, flags | O_CLOEXEC)
        return fd >= 0 ? Descriptor(fd) : nil
    }

    /// Gives up ownership: the caller (or whoever it hands the number to) closes it now.
    consuming func take() -> Int32 {
        let raw = self.raw
        discard self
        return raw
    }

    deinit {
        close(raw)
    }
}

/// Both ends of a close-on-exec pipe, each with its own owner.
struct Pipe: ~Copyable {
    var read: Descriptor
    var write: Descriptor

    /// A new pipe; nil with errno set on failure.
    static func make() -> Pipe? {
        var ends: [Int32] = [-1, -1]
        guard jr_pipe_cloexec(&ends) == 0 else { return nil }
        return Pipe(read: Descriptor(ends[0]), write: Descriptor(ends[1]))
    }
}
