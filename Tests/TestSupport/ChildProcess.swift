import CLinuxSupport
import Foundation
import Synchronization

/// A program started by a test, its stdout and stderr merged into one pipe read line by line.
///
/// Spawned with `posix_spawn` and reaped with `waitpid` on its own pid: every descriptor here
/// is close-on-exec and closed exactly once, by its single owner. (With Foundation's `Process`
/// and `Pipe`, suites running side by side saw their own control connections closed before a
/// request was written; with this, never.)
public final class ChildProcess: Sendable {
    public let pid: pid_t
    /// Every line the program writes to stdout or stderr.
    public let lines = EventQueue<String>()
    /// The exit status (or 128 + signal) once the program is reaped.
    private let exits = EventQueue<Int32>()
    /// Pushed once the output reached end of file.
    private let outputEnded = EventQueue<Bool>()
    private let output = Mutex(Data())
    private let reaped = Atomic<Bool>(false)
    private let reapedSignal = DispatchSemaphore(value: 0)

    /// Starts `executable` with `arguments`; `environment` replaces the test process's own when
    /// given.
    public init(_ executable: String, _ arguments: [String], environment: [String: String]? = nil) throws {
        var descriptors: [Int32] = [-1, -1]
        guard jr_pipe_cloexec(&descriptors) == 0 else { throw TimeoutError("pipe2 failed: errno \(errno)") }
        let (readEnd, writeEnd) = (descriptors[0], descriptors[1])
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, writeEnd, 1)
        posix_spawn_file_actions_adddup2(&actions, writeEnd, 2)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var defaults = sigset_t()
        sigfillset(&defaults)
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setsigmask(&attributes, &empty)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))

        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        let env = (environment ?? ProcessInfo.processInfo.environment).map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { env.forEach { free($0) } }
        var child: pid_t = 0
        let rc = posix_spawn(&child, executable, &actions, &attributes, argv, env)
        close(writeEnd)
        guard rc == 0 else {
            close(readEnd)
            throw TimeoutError("cannot start \(executable): \(String(cString: strerror(rc)))")
        }
        pid = child

        Thread { [self] in
            var pending = Data()
            var buffer = [UInt8](repeating: 0, count: 65_536)
            while true {
                let count = read(readEnd, &buffer, buffer.count)
                if count < 0 && errno == EINTR { continue }
                if count <= 0 { break }
                let chunk = buffer[0..<count]
                output.withLock { $0.append(contentsOf: chunk) }
                pending.append(contentsOf: chunk)
                while let newline = pending.firstIndex(of: 0x0A) {
                    lines.push(String(decoding: pending[pending.startIndex..<newline], as: UTF8.self))
                    pending.removeSubrange(pending.startIndex...newline)
                }
            }
            close(readEnd)
            if !pending.isEmpty { lines.push(String(decoding: pending, as: UTF8.self)) }
            outputEnded.push(true)
        }.start()
        Thread { [self, child] in
            var status: Int32 = 0
            while waitpid(child, &status, 0) < 0 && errno == EINTR {}
            reaped.store(true, ordering: .releasing)
            reapedSignal.signal()
            let signal = status & 0x7F
            exits.push(signal == 0 ? (status >> 8) & 0xFF : 128 + signal)
        }.start()
    }

    /// Runs a program to its end and returns its exit status and everything it printed.
    public static func run(_ executable: String, _ arguments: [String], environment: [String: String]? = nil,
                           within timeout: Duration = .seconds(60)) async throws -> (status: Int32, output: String) {
        let child = try ChildProcess(executable, arguments, environment: environment)
        let status = try await child.waitForExit(within: timeout)
        _ = try await child.outputEnded.seen(within: timeout, "end of output") { $0 }
        return (status, child.outputText)
    }

    /// False once the program has been reaped.
    public var isRunning: Bool { !reaped.load(ordering: .acquiring) }

    /// Everything printed so far.
    public var outputText: String { output.withLock { String(decoding: $0, as: UTF8.self) } }

    /// Waits for the program to exit: its exit status, or 128 + the signal that killed it.
    public func waitForExit(within timeout: Duration = .seconds(30)) async throws -> Int32 {
        try await exits.seen(within: timeout, "exit of \(pid)") { _ in true }
    }

    public func signal(_ signal: Int32) {
        if isRunning { Foundation.kill(pid, signal) }
    }

    /// Kills the program if it still runs and blocks until it is reaped (for `defer` blocks).
    public func kill() {
        signal(SIGKILL)
        reapedSignal.wait()
        reapedSignal.signal()
    }
}
