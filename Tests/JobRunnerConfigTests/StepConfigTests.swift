import JobRunnerConfig
import JobRunnerSchedule
import Testing

/// `steps:` — what loads, and every mistake reported at its place.
@Suite struct StepConfigTests {
    func load(_ yaml: String) throws -> Configuration {
        try ConfigLoader().parse(yaml, path: "jobs.yaml")
    }


    @Test func nestedGroupsLoadWithDefaultGroupNames() throws {
        let job = try #require(try load("""
            jobs:
              deploy:
                steps:
                  - { name: build, command: [make] }
                  - parallel:
                      steps:
                        - { name: a, shell: "echo a" }
                        - parallel: { max: 1, steps: [ { name: b1, shell: "echo b1" }, { name: b2, shell: "echo b2" } ] }
                  - { name: named-group, parallel: { steps: [ { name: c, shell: "echo c" } ] }, continue_on_failure: true }
            """).jobs.first)
        #expect(job.steps.map(\.name) == ["build", "parallel-1", "named-group"])
        #expect(job.steps.flatMap { $0.flattened() }.map { "\($0.depth) \($0.step.name)" } == [
            "0 build", "0 parallel-1", "1 a", "1 parallel-2", "2 b1", "2 b2", "0 named-group", "1 c",
        ])
        #expect(job.steps[2].continueOnFailure)
    }

    @Test func aStepCannotTakeTheNameOfAnUnnamedGroup() throws {
        let first = try ConfigLoader().parse("""
            jobs:
              a:
                steps:
                  - { name: parallel-1, shell: "true" }
                  - parallel: { steps: [ { name: x, shell: "true" } ] }
            """, path: "jobs.yaml")
        #expect(first.jobs[0].steps.map(\.name) == ["parallel-1", "parallel-2"])
        do {
            _ = try ConfigLoader().parse("""
                jobs:
                  a:
                    steps:
                      - parallel: { steps: [ { name: x, shell: "true" } ] }
                      - { name: parallel-1, shell: "true" }
                """, path: "jobs.yaml")
            Issue.record("expected a duplicate")
        } catch {
            #expect(error.errors.map(\.description) == ["jobs.yaml:5:17: job 'a': duplicate step name 'parallel-1' (also at jobs.yaml:4:9)"])
        }
    }

    @Test func mistakesAreReportedWhereTheyAre() {
        let found = configErrors("""
            jobs:
              a:
                command: [/bin/true]
                steps:
                  - { name: x, shell: "true" }
              b:
                steps: []
              c:
                steps:
                  - { name: same, shell: "true" }
                  - parallel: { steps: [ { name: same, shell: "true" } ] }
              d:
                steps:
                  - parallel: { max: 0, steps: [ { name: y, shell: "true" } ] }
                  - parallel: { steps: [] }
                  - parallel: { max: 2 }
              e:
                steps:
                  - { name: two, shell: "true", command: [/bin/true] }
                  - { shell: "true" }
                  - { name: kinds, shell: "true", parallel: { steps: [ { name: z, shell: "true" } ] } }
                  - { name: typo, shell: "true", timout: 5s }
                  - { name: "bad name", shell: "true" }
                  - { name: nothing }
            """)
        let messages = found.map { "\($0.location.line):\($0.location.column) \($0.message)" }
        func has(_ line: Int, _ fragment: String) -> Bool {
            messages.contains { $0.hasPrefix("\(line):") && $0.contains(fragment) }
        }
        #expect(has(4, "has both 'command' and 'steps'"), "\(messages)")
        #expect(has(7, "must list at least one step"), "\(messages)")
        #expect(has(11, "duplicate step name 'same' (also at jobs.yaml:10:"), "\(messages)")
        #expect(has(14, "max (most steps at once, at least 1)"), "\(messages)")
        #expect(has(15, "must list at least one step"), "\(messages)")
        #expect(has(16, "needs 'steps'"), "\(messages)")
        #expect(has(19, "has both 'command' and 'shell'"), "\(messages)")
        #expect(has(20, "needs a 'name'"), "\(messages)")
        #expect(has(21, "has both 'parallel' and 'shell'"), "\(messages)")
        #expect(has(22, "unknown key 'timout'") && has(22, "did you mean 'timeout'"), "\(messages)")
        #expect(has(23, "step name 'bad name' may only contain"), "\(messages)")
        #expect(has(24, "needs 'command' (an argv list), 'shell' (a command line), 'http' (a request) or 'parallel'"), "\(messages)")
        #expect(found.count == 12, "\(messages)")
    }
}

/// `after:` — the forms it takes, and chains that cannot work refused at load.
@Suite struct ChainConfigTests {

    @Test func everyFormLoads() throws {
        let configuration = try ConfigLoader().parse("""
            jobs:
              build: { shell: "true" }
              test: { shell: "true", after: build }
              report: { shell: "true", after: [build, test] }
              alert: { shell: "true", schedule: "0 * * * *", after: { build: failed, test: any } }
            """, path: "jobs.yaml")
        let after = Dictionary(uniqueKeysWithValues: configuration.jobs.map { ($0.name, $0.after.map { "\($0.job) \($0.outcome)" }) })
        #expect(after["test"] == ["build succeeded"])
        #expect(after["report"] == ["build succeeded", "test succeeded"])
        #expect(after["alert"] == ["build failed", "test any"])
        #expect(configuration.jobs.first { $0.name == "alert" }?.trigger != nil, "a follower may have its own schedule")
    }

    @Test func unknownJobsCyclesAndTyposAreRefusedWithBothPlaces() {
        let found = configMessages("""
            jobs:
              build: { shell: "true", after: deploy }
              test: { shell: "true", after: [biuld, build] }
              deploy: { shell: "true", after: { test: succeeded } }
              loner: { shell: "true", after: loner }
              odd: { shell: "true", after: { build: maybe } }
              twice: { shell: "true", after: [build, build] }
            """)
        #expect(found.contains("jobs.yaml:3:34: job 'test': after: no job named 'biuld' (did you mean 'build'?)"), "\(found)")
        #expect(found.contains("jobs.yaml:3:41: job 'test': after: 'build' makes a cycle (build → deploy → test → build); 'build' is defined at jobs.yaml:2:3"), "\(found)")
        #expect(found.contains { $0.hasPrefix("jobs.yaml:5:") && $0.contains("'loner' makes a cycle (loner → loner); 'loner' is defined at jobs.yaml:5:3") }, "\(found)")
        #expect(found.contains("jobs.yaml:6:41: job 'odd': after.build: 'maybe' is not one of succeeded, failed, any"), "\(found)")
        #expect(found.contains { $0.hasPrefix("jobs.yaml:7:") && $0.contains("'build' is named twice") }, "\(found)")
        #expect(found.count == 5, "\(found)")
    }
}

/// `http:` as a job's work or a step, and what it refuses.
@Suite struct HTTPConfigTests {
    @Test func aJobAndAStepLoad() throws {
        let configuration = try ConfigLoader().parse("""
            jobs:
              warm:
                every: 5m
                http:
                  url: "http://127.0.0.1:8080/cron"
                  method: post
                  headers: { X-Source: jobrunner }
                  header_files: { Authorization: /etc/jobrunner/token }
                  body: "{}"
                  expect_status: [200-299, 304]
                  follow_redirects: false
                retry: { attempts: 3, backoff: 5s, on: [failure, status, connect] }
              nightly:
                steps:
                  - { name: dump, shell: "true" }
                  - { name: ping, http: { url: "https://monitor.example/ping", ca_file: /etc/ssl/monitor.pem }, timeout: 10s }
            """, path: "jobs.yaml")
        let warm = try #require(configuration.jobs.first)
        let call = try #require(warm.http)
        #expect(call.method == "POST")
        #expect(call.headers == [.init("X-Source", "jobrunner")])
        #expect(call.headerFiles == [.init("Authorization", "/etc/jobrunner/token")])
        #expect(call.expectStatus == [200...299, 304...304])
        #expect(!call.followRedirects && call.body == "{}")
        #expect(call.expects(304) && !call.expects(302))
        #expect(warm.retry?.on == [.failure, .status, .connect])
        let ping = try #require(configuration.jobs.last?.steps.last)
        #expect(ping == .http("ping", HTTPCall(url: "https://monitor.example/ping", caFile: "/etc/ssl/monitor.pem"), timeout: .seconds(10)))
    }

    @Test func mistakesAreReportedWhereTheyAre() {
        do {
            _ = try ConfigLoader().parse("""
                jobs:
                  a:
                    http: { url: "ftp://x/y" }
                    user: nobody
                  b:
                    command: [/bin/true]
                    http: { url: "http://x/" }
                  c:
                    http: { url: "http://x/", method: FETCH, expect_status: [200-99], header_files: { Token: relative/path } }
                  d:
                    http: { method: GET }
                  e:
                    http: { url: "http://x/", headers: { "bad name": v } }
                  f:
                    steps:
                      - { name: s, http: { url: "http://x/" }, shell: "true" }
                """, path: "jobs.yaml")
            Issue.record("expected the configuration to be rejected")
        } catch {
            let messages = error.errors.map(\.description)
            func has(_ line: Int, _ fragment: String) -> Bool { messages.contains { $0.hasPrefix("jobs.yaml:\(line):") && $0.contains(fragment) } }
            #expect(has(3, "'ftp://x/y' is not an http:// or https:// URL"), "\(messages)")
            #expect(has(4, "'user' makes no sense for an http job"), "\(messages)")
            #expect(has(7, "has both 'command' and 'http'"), "\(messages)")
            #expect(has(9, "method: 'FETCH' is not one of GET"), "\(messages)")
            #expect(has(9, "'200-99' is not a status (100-599) or a range of them"), "\(messages)")
            #expect(has(9, "'relative/path' must be an absolute path"), "\(messages)")
            #expect(has(11, "needs 'url'"), "\(messages)")
            #expect(has(13, "'bad name' is not a header name"), "\(messages)")
            #expect(has(16, "has both 'shell' and 'http'"), "\(messages)")
            #expect(messages.count == 9, "\(messages)")
        }
    }
}
