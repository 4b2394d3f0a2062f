import JobRunnerConfig
import Testing

/// The errors a configuration read as `jobs.yaml` is refused with; a test failure if it loads.
func configErrors(_ yaml: String) -> [ConfigError] {
    do {
        _ = try ConfigLoader().parse(yaml, path: "jobs.yaml")
        Issue.record("expected the configuration to be rejected")
        return []
    } catch {
        return error.errors
    }
}

/// ``configErrors(_:)`` as the messages an operator reads (`jobs.yaml:LINE:COLUMN: …`).
func configMessages(_ yaml: String) -> [String] {
    configErrors(yaml).map(\.description)
}
