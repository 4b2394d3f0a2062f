import JobRunnerConfig
import JobRunnerSchedule
import Testing

/// `daemon.cluster`: the PostgreSQL URL forms operators write, and every bad value reported at
/// its position.
@Suite struct ClusterConfigTests {
    func load(_ cluster: String) throws(ConfigErrors) -> Configuration {
        try ConfigLoader().parse("""
            daemon:
              cluster:
            \(cluster)
            jobs:
              a: { command: ["/bin/true"] }
            """, path: "c.yaml")
    }

    func error(_ cluster: String) -> ConfigError? {
        do {
            _ = try load(cluster)
            Issue.record("expected an error")
            return nil
        } catch {
            #expect(error.errors.count == 1, "\(error.errors)")
            return error.errors.first
        }
    }

    @Test func tcpURLWithEverything() throws {
        let settings = try #require(try load("""
                database: "postgresql://runner:s3cret@db.example:6432/jobs?sslmode=require"
                node_name: web-1
                lease: 30s
            """).daemon.cluster)
        #expect(settings.database.user == "runner")
        #expect(settings.database.password == "s3cret")
        #expect(settings.database.host == "db.example")
        #expect(settings.database.port == 6432)
        #expect(settings.database.database == "jobs")
        #expect(settings.database.tls == .require)
        #expect(settings.database.socketPath == nil)
        #expect(settings.nodeName == "web-1")
        #expect(settings.lease == .seconds(30))
        // The password never reaches logs or status.
        #expect(settings.database.description == "postgresql://runner:***@db.example:6432/jobs")
    }

    @Test func unixSocketURLs() throws {
        let encoded = try PostgresURL.parse("postgresql://jobrunner@%2Frun%2Fpostgresql/jobrunner").get()
        #expect(encoded.socketPath == "/run/postgresql/.s.PGSQL.5432")
        let query = try PostgresURL.parse("postgresql:///jobrunner?host=/tmp/pg&port=5433").get()
        #expect(query.socketPath == "/tmp/pg/.s.PGSQL.5433")
        #expect(query.database == "jobrunner")
    }

    @Test func defaultsAreTheHostNameAndFifteenSeconds() throws {
        let settings = try #require(try load("""
                database: "postgresql://jobrunner@db/jobrunner"
            """).daemon.cluster)
        #expect(settings.lease == .seconds(15))
        #expect(!settings.nodeName.isEmpty)
    }

    @Test func badValuesArePositioned() throws {
        let scheme = try #require(error("""
                database: "mysql://root@db/jobs"
            """))
        #expect(scheme.description == "c.yaml:3:15: daemon.cluster.database: the URL scheme must be postgresql://, not mysql://")
        let lease = try #require(error("""
                database: "postgresql://jobrunner@db/jobrunner"
                lease: 500ms
            """))
        #expect(lease.description.hasPrefix("c.yaml:4:12: daemon.cluster.lease: at least 2s"))
        let name = try #require(error("""
                database: "postgresql://jobrunner@db/jobrunner"
                node_name: "web 1"
            """))
        #expect(name.description.hasPrefix("c.yaml:4:16: daemon.cluster.node_name: 'web 1' may only contain"))
        let missing = try #require(error("""
                node_name: web-1
            """))
        #expect(missing.description.contains("daemon.cluster: missing 'database'"))
        let unknown = try #require(error("""
                database: "postgresql://jobrunner@db/jobrunner"
                leas: 10s
            """))
        #expect(unknown.description.contains("'leas'") && unknown.description.contains("lease"), "\(unknown)")
    }
}

@Suite struct ClusterWidePoolConfigTests {
    @Test func poolsTakeASizeOrAMapping() throws {
        let configuration = try ConfigLoader().parse("""
            daemon:
              pools: { local: 2, shared: { size: 3, cluster_wide: true } }
            jobs: {}
            """, path: "p.yaml")
        #expect(configuration.daemon.pools == ["local": 2, "shared": 3])
        #expect(configuration.daemon.clusterWidePools == ["shared"])
        do {
            _ = try ConfigLoader().parse("daemon:\n  pools: { shared: { cluster_wide: true } }\njobs: {}\n", path: "p.yaml")
            Issue.record("a pool without a size was accepted")
        } catch {
            #expect(error.errors.map(\.description) == ["p.yaml:2:20: daemon.pools.shared: missing 'size'"])
        }
    }
}

/// Strings that cannot reach the kernel are refused where they are written.
@Suite struct NulCharacterTests {
    @Test func nulInAnArgumentIsAPositionedError() throws {
        do {
            _ = try ConfigLoader().parse("jobs:\n  j:\n    command: [\"/bin/echo\", \"a\\0b\"]\n", path: "n.yaml")
            Issue.record("a NUL in an argument was accepted")
        } catch {
            #expect(error.errors.map(\.description) == ["n.yaml:3:28: job 'j': command[1]: contains a NUL character (\\0)"])
        }
    }
}
