/// A place in a configuration file: `path:line:column`, 1-based.
public struct SourceLocation: Sendable, Hashable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var column: Int

    public init(file: String, line: Int, column: Int) {
        self.file = file
        self.line = line
        self.column = column
    }

    public var description: String { "\(file):\(line):\(column)" }
}

/// One problem in a configuration file, with its place and a message for a person.
///
/// `description` is the line an operator sees: `jobrunner.yaml:12:5: unknown key 'timout' in
/// job 'backup' (did you mean 'timeout'?)`.
public struct ConfigError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What kind of problem this is (stable, for tests and tooling).
    public enum Code: String, Sendable, Hashable {
        case unreadable
        case tooLarge
        case syntax
        case duplicateKey
        case wrongType
        case unknownKey
        case missingKey
        case conflictingKeys
        case invalidValue
        case invalidSchedule
        case invalidDuration
        case invalidName
        case duplicateJob
        case duplicateStep
        case unknownJob
        case cycle
        case unknownTimeZone
    }

    public var code: Code
    public var location: SourceLocation
    public var message: String

    public init(code: Code, location: SourceLocation, message: String) {
        self.code = code
        self.location = location
        self.message = message
    }

    public var description: String { "\(location): \(message)" }
}

/// Every problem found in a configuration, in file order. Thrown by ``ConfigLoader``.
public struct ConfigErrors: Error, Sendable, CustomStringConvertible {
    public var errors: [ConfigError]

    public init(_ errors: [ConfigError]) {
        self.errors = errors
    }

    /// One error per line, in file order.
    public var description: String {
        errors.map(\.description).joined(separator: "\n")
    }

    /// The first error alone, for a one-line status.
    public var summary: String {
        guard let first = errors.first else { return "invalid configuration" }
        return errors.count == 1 ? first.description : "\(first.description) (and \(errors.count - 1) more)"
    }
}
