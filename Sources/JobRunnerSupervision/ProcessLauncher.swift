import JobRunnerSchedule
import JobRunnerConfig
import JobRunnerCore
import CLinuxSupport

#if canImport(Glibc)
import Glibc
#endif

/// Why a process could not be started: a message for a person ("chdir /srv/x: No such file or directory").
public struct SpawnError: Error, Sendable, Hashable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Everything needed to start one process.
struct LaunchSpec: Sendable {
    struct Identity: Sendable, Hashable {
        var uid: uid_t
        var gid: gid_t
        var groups: [gid_t]
    }

    struct Limit: Sendable, Hashable {
        var resource: Int32
        var soft: UInt64
        var hard: UInt64
    }

    var executable: String
    var arguments: [String]
    /// `NAME=value` entries.
    var environment: [String]
    var workingDirectory: String?
    var stdin: Int32
    var stdout: Int32
    var stderr: Int32
    var newSession = true
    var umask: mode_t?
    var nice: Int32?
    var identity: Identity?
    var limits: [Limit] = []
    /// Tests only: mark descriptors close-on-exec one by one, as where close_range is missing.
    var forceDescriptorLoop = false
}

/// Starts processes with `vfork` + `execve` through a small C shim.
///
/// The shim does in the child what a job needs and `posix_spawn` cannot express: a new session,
/// resource limits, nice, umask, user and groups, working directory, default signal
/// dispositions, and closing every descriptor of the daemon. The calling thread is suspended
/// only until the child has exec'ed (well under a millisecond), so this runs inline rather than
/// on the blocking pool, where a saturated pool would delay every start.
enum ProcessLauncher {
    static func spawn(_ spec: LaunchSpec) -> ChildReaper.SpawnAttempt {
        let argv = CStringArray(spec.arguments)
        let envp = CStringArray(spec.environment)
        defer {
            argv.free()
            envp.free()
        }
        let groups = spec.identity?.groups ?? []
        let limits = spec.limits.map { jr_rlimit(resource: $0.resource, soft: $0.soft, hard: $0.hard) }
        // The daemon's own descriptor limit, read here: the child's would be the job's.
        let descriptorBound = jr_descriptor_bound(1 << 20)
        var pid: pid_t = 0
        var stage: Int32 = 0
        let errorNumber: Int32 = spec.executable.withCString { path in
            withOptionalCString(spec.workingDirectory) { directory in
                groups.withUnsafeBufferPointer { groupBuffer in
                    limits.withUnsafeBufferPointer { limitBuffer in
                        var request = jr_spawn_request()
                        request.path = path
                        request.argv = UnsafePointer(argv.pointer)
                        request.envp = UnsafePointer(envp.pointer)
                        request.working_directory = directory
                        request.stdin_fd = spec.stdin
                        request.stdout_fd = spec.stdout
                        request.stderr_fd = spec.stderr
                        request.new_session = spec.newSession ? 1 : 0
                        if let umask = spec.umask {
                            request.set_umask = 1
                            request.umask_value = UInt32(umask)
                        }
                        if let nice = spec.nice {
                            request.set_nice = 1
                            request.nice_value = nice
                        }
                        if let identity = spec.identity {
                            request.set_ids = 1
                            request.uid = identity.uid
                            request.gid = identity.gid
                            request.group_count = Int32(groupBuffer.count)
                            request.groups = groupBuffer.baseAddress
                        }
                        request.limit_count = Int32(limitBuffer.count)
                        request.limits = limitBuffer.baseAddress
                        request.descriptor_bound = descriptorBound
                        request.force_descriptor_loop = spec.forceDescriptorLoop ? 1 : 0
                        return jr_spawn(&request, &pid, &stage)
                    }
                }
            }
        }
        if errorNumber == 0 {
            return .started(pid)
        }
        let reason = String(cString: strerror(errorNumber))
        let error: SpawnError
        switch Int(stage) {
        case Int(JR_STAGE_FORK.rawValue): error = SpawnError("fork: \(reason)")
        case Int(JR_STAGE_SETSID.rawValue): error = SpawnError("setsid: \(reason)")
        case Int(JR_STAGE_RLIMIT.rawValue): error = SpawnError("setrlimit: \(reason)")
        case Int(JR_STAGE_NICE.rawValue): error = SpawnError("nice: \(reason)")
        case Int(JR_STAGE_GROUPS.rawValue): error = SpawnError("setgroups: \(reason)")
        case Int(JR_STAGE_SETGID.rawValue): error = SpawnError("setgid: \(reason)")
        case Int(JR_STAGE_SETUID.rawValue): error = SpawnError("setuid: \(reason)")
        case Int(JR_STAGE_CHDIR.rawValue): error = SpawnError("working directory \(spec.workingDirectory ?? ""): \(reason)")
        case Int(JR_STAGE_DUP.rawValue): error = SpawnError("dup2: \(reason)")
        default: error = SpawnError("exec \(spec.executable): \(reason)")
        }
        return stage == Int32(JR_STAGE_FORK.rawValue) ? .failed(error) : .failedInChild(pid, error)
    }

    /// The path to execute for `name`: itself when it contains a slash, else the first
    /// executable regular file named so in `searchPath` (the run's own PATH).
    static func resolveExecutable(_ name: String, searchPath: String?) -> Result<String, SpawnError> {
        if name.contains("/") {
            return .success(name)
        }
        let directories = (searchPath ?? defaultSearchPath).split(separator: ":", omittingEmptySubsequences: false)
        for directory in directories {
            let candidate = (directory.isEmpty ? "." : String(directory)) + "/" + name
            var status = stat()
            if stat(candidate, &status) == 0, (status.st_mode & S_IFMT) == S_IFREG, access(candidate, X_OK) == 0 {
                return .success(candidate)
            }
        }
        return .failure(SpawnError("program '\(name)' not found in PATH (\(searchPath ?? defaultSearchPath))"))
    }

    static let defaultSearchPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
}

/// A NULL-terminated array of C strings that lives until `free()`.
private struct CStringArray {
    let pointer: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>
    let count: Int

    init(_ strings: [String]) {
        count = strings.count
        pointer = .allocate(capacity: strings.count + 1)
        for (index, string) in strings.enumerated() {
            pointer[index] = strdup(string)
        }
        pointer[strings.count] = nil
    }

    func free() {
        for index in 0..<count {
            Glibc.free(pointer[index])
        }
        pointer.deallocate()
    }
}

private func withOptionalCString<R>(_ string: String?, _ body: (UnsafePointer<CChar>?) -> R) -> R {
    guard let string else { return body(nil) }
    return string.withCString { body($0) }
}
