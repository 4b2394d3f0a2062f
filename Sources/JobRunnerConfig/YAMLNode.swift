import CYaml

/// A YAML document as the configuration reader sees it: scalars (their text, style, tag and
/// position), mappings and lists. Composed straight from libyaml's events (``compose(_:jobs:)``) —
/// one pass, no event or tag objects, no type resolution: a scalar is only read as a bool or a
/// number where the configuration asks for one (``Scalar/bool``, ``Scalar/integer``), so `yes`
/// is a string wherever a string goes.
enum YAMLNode: Sendable {
    case scalar(Scalar)
    case mapping(Mapping)
    case sequence(Sequence)

    /// A position in the text, from 1.
    struct Mark: Sendable, Hashable {
        private var storedLine: Int32
        private var storedColumn: Int32

        init(line: Int, column: Int) {
            storedLine = Int32(clamping: line)
            storedColumn = Int32(clamping: column)
        }

        var line: Int { Int(storedLine) }
        var column: Int { Int(storedColumn) }
    }

    struct Scalar: Sendable {
        enum Style: Sendable, Hashable {
            case plain, singleQuoted, doubleQuoted, literal, folded
        }

        var string: String
        var style: Style
        /// Tagged `!!str`, or quoted or a block scalar without a tag: never a bool.
        var isTaggedString: Bool
        var mark: Mark
    }

    struct Mapping: Sendable, Swift.Sequence {
        var pairs: [(key: YAMLNode, value: YAMLNode)]
        var mark: Mark

        func makeIterator() -> IndexingIterator<[(key: YAMLNode, value: YAMLNode)]> { pairs.makeIterator() }
    }

    struct Sequence: Sendable, RandomAccessCollection {
        var nodes: [YAMLNode]
        var mark: Mark

        var startIndex: Int { nodes.startIndex }
        var endIndex: Int { nodes.endIndex }
        subscript(position: Int) -> YAMLNode { nodes[position] }
    }

    var mark: Mark {
        switch self {
        case .scalar(let scalar): scalar.mark
        case .mapping(let mapping): mapping.mark
        case .sequence(let sequence): sequence.mark
        }
    }

    /// `~`, `null`, `Null`, `NULL` or nothing, unquoted.
    var isNull: Bool {
        guard case .scalar(let scalar) = self, scalar.style == .plain else { return false }
        switch scalar.string {
        case "", "~", "null", "Null", "NULL": return true
        default: return false
        }
    }

    static let stringTag = "tag:yaml.org,2002:str"
}

extension YAMLNode.Scalar {
    /// `true`/`yes`/`on` or `false`/`no`/`off`, in any case; never a quoted or `!!str` scalar.
    var bool: Bool? {
        guard !isTaggedString else { return nil }
        switch string.lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default: return nil
        }
    }

    /// A whole number, unquoted: decimal with an optional sign and `_` separators, `0x`/`0o`/`0b`
    /// (and a leading `0`: octal), or base 60 (`1:30` is 90) — YAML 1.1's integers.
    var integer: Int? {
        guard style == .plain else { return nil }
        var digits = Substring(string.filter { $0 != "_" })
        if digits == "0" { return 0 }
        var sign = ""
        if digits.first == "-" || digits.first == "+" {
            if digits.first == "-" { sign = "-" }
            digits = digits.dropFirst()
        }
        for (prefix, radix) in [("0x", 16), ("0b", 2), ("0o", 8), ("0", 8)] where digits.hasPrefix(prefix) {
            return Int(sign + digits.dropFirst(prefix.count), radix: radix)
        }
        guard digits.contains(":") else { return Int(sign + digits) }
        var value = 0
        for part in digits.split(separator: ":", omittingEmptySubsequences: false) {
            guard let place = Int(part), place >= 0 else { return nil }
            let (shifted, overflow) = value.multipliedReportingOverflow(by: 60)
            let (sum, overflowSum) = shifted.addingReportingOverflow(place)
            guard !overflow, !overflowSum else { return nil }
            value = sum
        }
        return sign == "-" ? -value : value
    }
}

/// Why a text is not one YAML document.
enum YAMLError: Error, Sendable {
    /// The text could not be tokenized (`scanner`) or does not follow YAML's grammar (`parser`).
    case scanner(problem: String, context: String?, mark: YAMLNode.Mark)
    case parser(problem: String, context: String?, mark: YAMLNode.Mark)
    /// The events do not make one document: an undefined alias, a second document.
    case composer(problem: String, context: String?, mark: YAMLNode.Mark)
    /// The bytes are not text (at this UTF-8 offset).
    case reader(problem: String, offset: Int)
    /// A mapping names a key twice: the keys, and the first place the first of them appears.
    case duplicateKeys([String], mark: YAMLNode.Mark)
    case memory
}

extension YAMLNode {
    /// The single document of `text` (nil when the text holds none). Aliases are resolved to the
    /// node their anchor names; a key given twice in a mapping is an error.
    ///
    /// With `jobs`, the entries of the root mapping's `jobs:` mapping are handed over as they are
    /// composed, in file order, so they can be read while the rest of the file is still parsed.
    static func compose(_ text: String, jobs: JobsWatcher? = nil) throws(YAMLError) -> YAMLNode? {
        var text = text
        let result = text.withUTF8 { bytes -> Result<YAMLNode?, YAMLError> in
            do throws(YAMLError) {
                let composer = try Composer(bytes)
                composer.jobs = jobs
                return .success(try composer.document())
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }
}

/// What the composer tells about the root mapping's `jobs:` mapping while it composes it (all on
/// the composing thread): `begin` with the root's pairs before it, then `entry` for each of its
/// pairs once composed. Nothing is called when `jobs:` is not a mapping written in place.
struct JobsWatcher {
    var begin: (_ rootPairsBefore: [(key: YAMLNode, value: YAMLNode)]) -> Void
    var entry: (_ pair: (key: YAMLNode, value: YAMLNode)) -> Void
}

/// One pass over libyaml's events; lives only while its input does.
private final class Composer {
    private var parser = yaml_parser_t()
    private var anchors: [String: YAMLNode] = [:]
    var jobs: JobsWatcher?

    /// Which mapping's pairs are watched: the root (for its `jobs:` key), then `jobs:` itself.
    private enum Watch { case none, root, jobs }

    init(_ bytes: UnsafeBufferPointer<UInt8>) throws(YAMLError) {
        guard yaml_parser_initialize(&parser) == 1 else { throw .memory }
        yaml_parser_set_encoding(&parser, YAML_UTF8_ENCODING)
        yaml_parser_set_input_string(&parser, bytes.baseAddress, bytes.count)
    }

    deinit {
        yaml_parser_delete(&parser)
    }

    func document() throws(YAMLError) -> YAMLNode? {
        try skip() // STREAM-START
        var event = try next()
        guard event.type != YAML_STREAM_END_EVENT else {
            yaml_event_delete(&event)
            return nil
        }
        yaml_event_delete(&event) // DOCUMENT-START
        var rootEvent = try next()
        let root = try compose(&rootEvent, watch: jobs == nil ? .none : .root)
        try skip() // DOCUMENT-END
        var end = try next()
        defer { yaml_event_delete(&end) }
        guard end.type == YAML_STREAM_END_EVENT else {
            throw .composer(problem: "but found another document", context: "expected a single document in the stream",
                            mark: Self.mark(end.start_mark))
        }
        return root
    }

    private func next() throws(YAMLError) -> yaml_event_t {
        var event = yaml_event_t()
        guard yaml_parser_parse(&parser, &event) == 1 else { throw failure() }
        return event
    }

    private func skip() throws(YAMLError) {
        var event = try next()
        yaml_event_delete(&event)
    }

    /// The node `event` starts (the event is consumed).
    private func compose(_ event: inout yaml_event_t, watch: Watch = .none) throws(YAMLError) -> YAMLNode {
        defer { yaml_event_delete(&event) }
        let mark = Self.mark(event.start_mark)
        let node: YAMLNode
        let anchor: UnsafeMutablePointer<yaml_char_t>?
        switch event.type {
        case YAML_ALIAS_EVENT:
            guard let found = anchors[String(cString: event.data.alias.anchor)] else {
                throw .composer(problem: "found undefined alias", context: nil, mark: mark)
            }
            return found
        case YAML_SCALAR_EVENT:
            let scalar = event.data.scalar
            let text = String(decoding: UnsafeBufferPointer(start: scalar.value, count: scalar.length), as: UTF8.self)
            let taggedString = scalar.quoted_implicit == 1 || scalar.tag.map { String(cString: $0) == YAMLNode.stringTag } == true
            node = .scalar(.init(string: text, style: Self.style(scalar.style), isTaggedString: taggedString, mark: mark))
            anchor = scalar.anchor
        case YAML_SEQUENCE_START_EVENT:
            anchor = event.data.sequence_start.anchor
            var nodes: [YAMLNode] = []
            while true {
                var child = try next()
                if child.type == YAML_SEQUENCE_END_EVENT {
                    yaml_event_delete(&child)
                    break
                }
                nodes.append(try compose(&child))
            }
            node = .sequence(.init(nodes: nodes, mark: mark))
        case YAML_MAPPING_START_EVENT:
            anchor = event.data.mapping_start.anchor
            var pairs: [(key: YAMLNode, value: YAMLNode)] = []
            while true {
                var keyEvent = try next()
                if keyEvent.type == YAML_MAPPING_END_EVENT {
                    yaml_event_delete(&keyEvent)
                    break
                }
                let key = try compose(&keyEvent)
                var valueEvent = try next()
                var watchValue = Watch.none
                if watch == .root, valueEvent.type == YAML_MAPPING_START_EVENT, case .scalar(let scalar) = key, scalar.string == "jobs" {
                    jobs?.begin(pairs)
                    watchValue = .jobs
                }
                pairs.append((key, try compose(&valueEvent, watch: watchValue)))
                if watch == .jobs { jobs?.entry(pairs[pairs.count - 1]) }
            }
            try Self.checkDuplicates(pairs)
            node = .mapping(.init(pairs: pairs, mark: mark))
        default:
            throw .composer(problem: "unexpected event \(event.type.rawValue)", context: nil, mark: mark)
        }
        if let anchor {
            anchors[String(cString: anchor)] = node
        }
        return node
    }

    /// Refuses a mapping that names a key twice, naming the keys and the first place the first
    /// of them (by name) appears. Most mappings hold a few keys: compared pairwise, not hashed.
    private static func checkDuplicates(_ pairs: [(key: YAMLNode, value: YAMLNode)]) throws(YAMLError) {
        func scalarKey(_ index: Int) -> YAMLNode.Scalar? {
            if case .scalar(let scalar) = pairs[index].key { scalar } else { nil }
        }
        var duplicates: Set<String> = []
        if pairs.count <= 16 {
            // Pairwise, with no array or set built for the mapping of every job and step.
            for index in pairs.indices {
                guard let key = scalarKey(index) else { continue }
                if (0..<index).contains(where: { scalarKey($0)?.string == key.string }) { duplicates.insert(key.string) }
            }
        } else {
            var seen = Set<String>(minimumCapacity: pairs.count)
            for index in pairs.indices {
                if let key = scalarKey(index), !seen.insert(key.string).inserted { duplicates.insert(key.string) }
            }
        }
        guard let first = duplicates.min() else { return }
        let mark = pairs.indices.lazy.compactMap(scalarKey).first { $0.string == first }!.mark
        throw .duplicateKeys(duplicates.sorted(), mark: mark)
    }

    private func failure() -> YAMLError {
        let problem = parser.problem.map { String(cString: $0) } ?? "unknown problem"
        let context = parser.context.map { String(cString: $0) }
        let mark = Self.mark(parser.problem_mark)
        switch parser.error {
        case YAML_MEMORY_ERROR: return .memory
        case YAML_READER_ERROR: return .reader(problem: problem, offset: Int(parser.problem_offset))
        case YAML_SCANNER_ERROR: return .scanner(problem: problem, context: context, mark: mark)
        default: return .parser(problem: problem, context: context, mark: mark)
        }
    }

    private static func mark(_ mark: yaml_mark_t) -> YAMLNode.Mark {
        YAMLNode.Mark(line: Int(mark.line) + 1, column: Int(mark.column) + 1)
    }

    private static func style(_ style: yaml_scalar_style_t) -> YAMLNode.Scalar.Style {
        switch style {
        case YAML_SINGLE_QUOTED_SCALAR_STYLE: .singleQuoted
        case YAML_DOUBLE_QUOTED_SCALAR_STYLE: .doubleQuoted
        case YAML_LITERAL_SCALAR_STYLE: .literal
        case YAML_FOLDED_SCALAR_STYLE: .folded
        default: .plain
        }
    }
}
