import JobRunnerConfig
import Testing

/// The errors a configuration read as `jobs.yaml` is refused with; a test failure if it loads.
func configErrors(_ yaml: String, loader: ConfigLoader = ConfigLoader()) -> [ConfigError] {
    rejection { () throws(ConfigErrors) in try loader.parse(yaml, path: "jobs.yaml") }
}

/// ``configErrors(_:)`` as the messages an operator reads (`jobs.yaml:LINE:COLUMN: …`).
func configMessages(_ yaml: String) -> [String] {
    configErrors(yaml).map(\.description)
}

/// The errors the file at `path` is refused with, loaded as the daemon loads it; a test failure
/// if it loads.
func fileErrors(_ path: String, loader: ConfigLoader = ConfigLoader()) -> [ConfigError] {
    rejection { () throws(ConfigErrors) in try loader.load(path: path) }
}

private func rejection(_ load: () throws(ConfigErrors) -> Configuration) -> [ConfigError] {
    do {
        _ = try load()
        Issue.record("expected the configuration to be rejected")
        return []
    } catch {
        return error.errors
    }
}
