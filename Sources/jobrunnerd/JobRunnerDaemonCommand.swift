import ArgumentParser
import JobRunnerAPI
import JobRunnerDaemon
import Logging

extension LogFormat: ExpressibleByArgument {}

@main
struct JobRunnerDaemonCommand: AsyncParsableCommand {
    /// The entry point. Before the first task starts, the daemon's own task pool takes the place
    /// of libdispatch's (see `Daemon.useOwnTaskPool`); then the arguments are parsed and run.
    static func main() async {
        Daemon.useOwnTaskPool()
        await main(nil)
    }

    static let configuration = CommandConfiguration(
        commandName: "jobrunnerd",
        abstract: "Runs jobs on schedules, each a tracked process tree with a timeout, under systemd or on its own.",
        discussion: """
            Signals: SIGHUP reloads the configuration (running runs are untouched); SIGTERM and SIGINT \
            stop firing, let running runs finish for daemon.shutdown_grace, then tear them down.
            Exit codes: 0 clean stop, 78 invalid configuration, 1 any other fatal error.
            """,
        version: JobRunnerVersion.string
    )

    @Option(name: .long, help: "Configuration file.")
    var config = DaemonOptions.defaultConfigPath

    @Flag(name: .long, help: "Validate the configuration, print every error, and exit (0 valid, 78 invalid).")
    var checkConfig = false

    @Flag(name: .long, help: "Check the cluster database named by daemon.cluster: connectivity, schema, nodes (0 usable, 1 not).")
    var checkCluster = false

    @Option(name: .long, help: "Directory for state (history, lock).")
    var stateDirectory = DaemonOptions.defaultStateDirectory

    @Option(name: .long, help: "Path of the control socket.")
    var socket = DaemonOptions.defaultSocketPath

    @Option(name: .long, help: "Directory for runtime files (per-run notify sockets).")
    var runtimeDirectory = DaemonOptions.defaultRuntimeDirectory

    @Option(name: .long, help: "This node's name in a cluster (overrides daemon.cluster.node_name).")
    var nodeName: String?

    @Option(name: .long, help: "Log format: journal, text or json (default: journal when stderr is the journal, else text).")
    var logFormat: LogFormat?

    @Option(name: .long, help: "Lowest level logged: trace, debug, info, notice, warning, error, critical.")
    var logLevel: Logger.Level = .info

    func run() async throws {
        if checkConfig {
            throw ExitCode(await Daemon.checkConfig(path: config))
        }
        if checkCluster {
            throw ExitCode(await Daemon.checkCluster(path: config))
        }
        let format = logFormat ?? .automatic
        let level = logLevel
        LoggingSystem.bootstrap { label in
            var handler = format.makeHandler(label: label)
            handler.logLevel = level
            return handler
        }
        let options = DaemonOptions(configPath: config, stateDirectory: stateDirectory, socketPath: socket,
                                    runtimeDirectory: runtimeDirectory, nodeName: nodeName)
        let code = await Daemon.run(options, logger: Logger(label: "jobrunnerd"))
        throw ExitCode(code)
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}

