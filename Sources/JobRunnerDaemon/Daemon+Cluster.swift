import JobRunnerSupervision
import JobRunnerHistory
import JobRunnerAPI
import Foundation
import JobRunnerCluster
import JobRunnerConfig
import JobRunnerSchedule
import Logging
import NIOPosix

extension Daemon {
    /// `--check-cluster`: connects to the cluster database of the configuration, reads its
    /// schema version and its nodes, and prints them. 0 when the database is usable, 1 when
    /// not (78 for an invalid configuration).
    public static func checkCluster(path: String) async -> Int32 {
        let configuration: Configuration
        do {
            configuration = try await NIOThreadPool.singleton.runIfActive { () throws -> Configuration in
                try ConfigLoader().load(path: path)
            }
        } catch {
            FileHandle.standardError.write(Data("\(error)\n".utf8))
            return DaemonExitCode.config
        }
        guard let settings = configuration.daemon.cluster else {
            FileHandle.standardError.write(Data("\(path): no daemon.cluster section; this daemon runs alone\n".utf8))
            return DaemonExitCode.config
        }
        var logger = Logger(label: "jobrunnerd")
        logger.logLevel = .critical
        let database = ClusterDatabase(url: settings.database, idleInTransaction: settings.idleInTransactionLimit, logger: logger)
        return await ClusterDatabase.serving(database) { await report(database, settings: settings, configuration: configuration) }
    }

    private static func report(_ database: ClusterDatabase, settings: ClusterSettings, configuration: Configuration) async -> Int32 {
        print("database: \(settings.database)")
        print("node:     \(settings.nodeName) (lease \(DurationText.format(settings.lease)))")
        do {
            let report = try await database.within(.seconds(10), "checking the cluster database") {
                try await database.inspect()
            }
            print("server:   \(report.serverVersion)")
            switch report.schemaVersion {
            case nil:
                print("schema:   none yet (created when the first node starts)")
            case let version? where version > ClusterDatabase.schemaVersion:
                print("schema:   version \(version), NEWER than this jobrunnerd understands (\(ClusterDatabase.schemaVersion))")
                return DaemonExitCode.failure
            case let version?:
                print("schema:   version \(version) (this jobrunnerd: \(ClusterDatabase.schemaVersion))")
            }
            if report.nodes.isEmpty {
                print("nodes:    none")
            } else {
                print("nodes:")
                for node in report.nodes {
                    print("  \(node.name)  \(node.state)  heartbeat \(String(format: "%.1f", node.heartbeatAge))s ago  "
                        + "pid \(node.pid)  config \(node.configHash.prefix(12))"
                        + (node.configHash != configuration.contentHash && node.state == "alive" ? " (differs from this file)" : ""))
                }
            }
            return DaemonExitCode.success
        } catch {
            FileHandle.standardError.write(Data("cannot use the cluster database: \(ClusterDatabase.describe(error))\n".utf8))
            return DaemonExitCode.failure
        }
    }
}
