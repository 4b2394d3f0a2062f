import JobRunnerSchedule

/// Reads typed values out of a composed YAML tree and collects every problem with its position,
/// so one pass reports all errors of a file instead of stopping at the first.
///
/// A scalar is read as the type its key expects (``YAMLNode/Scalar/bool``,
/// ``YAMLNode/Scalar/integer``), so `yes` is only a bool where a bool goes; walking the tree
/// ourselves is what gives each error the exact position of its key or value.
/// One entry of a mapping: its key's text, the key's node (for positions) and the value.
typealias MappingPair = (key: String, keyNode: YAMLNode, value: YAMLNode)

struct NodeReader {
    let file: String
    private(set) var errors: [ConfigError] = []
    /// The text of every file read, in order (for the configuration's fingerprint).
    private(set) var sources: [String] = []
    /// Schedules already parsed in this load, by text: files of many jobs repeat a few.
    var parsedSchedules: [String: CronSchedule] = [:]

    mutating func noteSource(_ text: String) {
        sources.append(text)
    }

    init(file: String) {
        self.file = file
    }

    // MARK: - Positions and errors

    func location(_ node: YAMLNode?) -> SourceLocation {
        let mark = node?.mark
        return SourceLocation(file: file, line: mark?.line ?? 1, column: mark?.column ?? 1)
    }

    mutating func fail(_ code: ConfigError.Code, at node: YAMLNode?, _ message: String) {
        errors.append(ConfigError(code: code, location: location(node), message: message))
    }

    mutating func fail(_ code: ConfigError.Code, at location: SourceLocation, _ message: String) {
        errors.append(ConfigError(code: code, location: location, message: message))
    }

    /// The errors so far, leaving none.
    mutating func takeErrors() -> [ConfigError] {
        defer { errors = [] }
        return errors
    }

    /// Takes over the errors of another file's reader.
    mutating func adopt(_ other: [ConfigError]) {
        errors.append(contentsOf: other)
    }

    /// How a node is described in "found …" messages.
    static func describe(_ node: YAMLNode) -> String {
        switch node {
        case .scalar(let scalar):
            if isNull(node) { return "nothing (null)" }
            let text = scalar.string.count > 40 ? String(scalar.string.prefix(40)) + "…" : scalar.string
            return "'\(text)'"
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        }
    }

    static func isNull(_ node: YAMLNode) -> Bool {
        node.isNull
    }

    // MARK: - Structures

    /// The key/value pairs of a mapping whose keys are strings; reports a wrong type.
    mutating func mapping(_ node: YAMLNode, what: @autoclosure () -> String) -> [MappingPair]? {
        guard case .mapping(let mapping) = node else {
            fail(.wrongType, at: node, "\(what()): expected a mapping, found \(Self.describe(node))")
            return nil
        }
        var pairs: [MappingPair] = []
        pairs.reserveCapacity(mapping.pairs.count)
        for (keyNode, value) in mapping {
            guard case .scalar(let scalar) = keyNode else {
                fail(.wrongType, at: keyNode, "\(what()): keys must be plain names, found \(Self.describe(keyNode))")
                continue
            }
            pairs.append((scalar.string, keyNode, value))
        }
        return pairs
    }

    /// Reports every key not in `known`, suggesting the closest known one.
    mutating func checkKeys(_ pairs: [MappingPair], known: [String], context: String) {
        for pair in pairs where !known.contains(pair.key) {
            var message = "unknown key '\(pair.key)' \(context)"
            if let suggestion = Suggestion.closest(to: pair.key, among: known) {
                message += " (did you mean '\(suggestion)'?)"
            } else {
                message += " (known keys: \(known.joined(separator: ", ")))"
            }
            fail(.unknownKey, at: pair.keyNode, message)
        }
    }

    // MARK: - Scalars

    mutating func string(_ node: YAMLNode, what: @autoclosure () -> String) -> String? {
        guard case .scalar(let scalar) = node, !Self.isNull(node) else {
            fail(.wrongType, at: node, "\(what()): expected a string, found \(Self.describe(node))")
            return nil
        }
        // No argument, path or environment variable can carry a NUL to the kernel.
        guard !scalar.string.utf8.contains(0) else {
            fail(.invalidValue, at: node, "\(what()): contains a NUL character (\\0)")
            return nil
        }
        return scalar.string
    }

    mutating func nonEmptyString(_ node: YAMLNode, what: @autoclosure () -> String) -> String? {
        guard let text = string(node, what: what()) else { return nil }
        guard !text.isEmpty else {
            fail(.invalidValue, at: node, "\(what()): must not be empty")
            return nil
        }
        return text
    }

    mutating func bool(_ node: YAMLNode, what: @autoclosure () -> String) -> Bool? {
        guard case .scalar(let scalar) = node, let value = scalar.bool else {
            fail(.wrongType, at: node, "\(what()): expected true or false, found \(Self.describe(node))")
            return nil
        }
        return value
    }

    mutating func integer(_ node: YAMLNode, what: @autoclosure () -> String, range: ClosedRange<Int>) -> Int? {
        guard case .scalar(let scalar) = node, let value = scalar.integer else {
            if case .scalar(let scalar) = node, Self.isWholeNumberLiteral(scalar.string) {
                // A whole number too large for 64 bits: not a type error, a range error.
                fail(.invalidValue, at: node, "\(what()): \(Self.describe(node)) is out of range \(range.lowerBound)–\(range.upperBound)")
            } else {
                fail(.wrongType, at: node, "\(what()): expected a whole number, found \(Self.describe(node))")
            }
            return nil
        }
        guard range.contains(value) else {
            fail(.invalidValue, at: node, "\(what()): \(value) is out of range \(range.lowerBound)–\(range.upperBound)")
            return nil
        }
        return value
    }

    /// The ids a user or group may have: 4294967295 is (uid_t)-1, which set*id calls read as
    /// "leave unchanged" — a job given it would keep the daemon's identity.
    static let idRange: ClosedRange<UInt32> = 0...4_294_967_294

    /// Reports a user or group written as a number outside ``idRange``; true when it did.
    mutating func rejectsOutOfRangeID(_ text: String, at node: YAMLNode, what: @autoclosure () -> String) -> Bool {
        guard Self.isWholeNumberLiteral(text) else { return false }
        if let value = UInt32(text), Self.idRange.contains(value) { return false }
        fail(.invalidValue, at: node, "\(what()): \(text) is out of range \(Self.idRange.lowerBound)–\(Self.idRange.upperBound)")
        return true
    }

    /// `123`, `-5`, `+7`, `1_000`: digits with an optional sign.
    static func isWholeNumberLiteral(_ text: String) -> Bool {
        var digits = Substring(text)
        if digits.first == "-" || digits.first == "+" { digits = digits.dropFirst() }
        return !digits.isEmpty && digits.allSatisfy { ($0.isASCII && $0.isNumber) || $0 == "_" } && digits.contains { $0 != "_" }
    }

    mutating func stringList(_ node: YAMLNode, what: @autoclosure () -> String) -> [String]? {
        guard case .sequence(let sequence) = node else {
            fail(.wrongType, at: node, "\(what()): expected a list of strings, found \(Self.describe(node))")
            return nil
        }
        var result: [String] = []
        var ok = true
        for (index, element) in sequence.enumerated() {
            if let text = string(element, what: "\(what())[\(index)]") {
                result.append(text)
            } else {
                ok = false
            }
        }
        return ok ? result : nil
    }

    mutating func stringMap(_ node: YAMLNode, what: @autoclosure () -> String) -> [String: String]? {
        guard let pairs = mapping(node, what: what()) else { return nil }
        var result: [String: String] = [:]
        var ok = true
        for pair in pairs {
            if Self.isNull(pair.value) {
                fail(.wrongType, at: pair.value, "\(what()): '\(pair.key)' has no value (write \(pair.key): \"\" for an empty one)")
                ok = false
            } else if let text = string(pair.value, what: "\(what()).\(pair.key)") {
                result[pair.key] = text
            } else {
                ok = false
            }
        }
        return ok ? result : nil
    }
}

/// The pairs of one mapping, found by key. A mapping of a configuration holds a handful of keys
/// (a job's, a step's, a retry's), so a scan is cheaper than hashing every key looked up; keys are
/// unique (the composer refuses a mapping that names one twice).
struct KeyedPairs {
    let pairs: [MappingPair]
    /// The keys alone: scanning them copies no node.
    private let keys: [String]

    init(_ pairs: [MappingPair]) {
        self.pairs = pairs
        keys = pairs.map(\.key)
    }

    subscript(key: String) -> MappingPair? {
        keys.firstIndex(of: key).map { pairs[$0] }
    }
}
