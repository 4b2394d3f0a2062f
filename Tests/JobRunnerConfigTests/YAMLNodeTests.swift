@testable import JobRunnerConfig
import Testing

/// The composer the configuration is read with: libyaml's events into nodes, with positions,
/// aliases, the duplicate-key check, and scalars read as bools and numbers only on request.
@Suite struct YAMLNodeTests {
    func compose(_ text: String) throws(YAMLError) -> YAMLNode? {
        try YAMLNode.compose(text)
    }

    struct NotAScalar: Error {
        let text: String
    }

    func scalar(_ text: String) throws -> YAMLNode.Scalar {
        guard case .scalar(let scalar) = try compose(text) else { throw NotAScalar(text: text) }
        return scalar
    }

    func failure(_ text: String) -> YAMLError? {
        do {
            _ = try compose(text)
            Issue.record("'\(text)' was accepted")
            return nil
        } catch {
            return error
        }
    }

    @Test func mappingsAndListsKeepTheirOrderAndEveryNodeItsPosition() throws {
        let root = try #require(try compose("jobs:\n  b: [x, 'y']\n  a: {k: v}\n"))
        guard case .mapping(let top) = root, case .mapping(let jobs) = top.pairs[0].value else {
            Issue.record("not mappings: \(root)")
            return
        }
        #expect(top.mark == .init(line: 1, column: 1))
        let names = jobs.pairs.map { pair -> String in
            if case .scalar(let key) = pair.key { key.string } else { "?" }
        }
        #expect(names == ["b", "a"])
        #expect(jobs.pairs[0].key.mark == .init(line: 2, column: 3))
        guard case .sequence(let list) = jobs.pairs[0].value else {
            Issue.record("not a list")
            return
        }
        #expect(list.mark == .init(line: 2, column: 6))
        #expect(list.count == 2)
        #expect(list[1].mark == .init(line: 2, column: 10))
        if case .scalar(let quoted) = list[1] {
            #expect(quoted.string == "y")
            #expect(quoted.style == .singleQuoted)
        }
        #expect(jobs.pairs[1].value.mark == .init(line: 3, column: 6))
    }

    @Test func anEmptyTextIsNoDocumentAndNullIsOnlyUnquoted() throws {
        #expect(try compose("") == nil)
        #expect(try compose("# only a comment\n") == nil)
        for null in ["~", "null", "Null", "NULL", "key:"] {
            let node = try #require(try compose(null))
            if case .mapping(let mapping) = node {
                #expect(mapping.pairs[0].value.isNull)
            } else {
                #expect(node.isNull, "\(null)")
            }
        }
        #expect(try compose("'null'")?.isNull == false)
        #expect(try compose("\"\"")?.isNull == false)
        #expect(try compose("nil")?.isNull == false)
    }

    @Test func boolsAreReadOnlyFromUntaggedUnquotedWords() throws {
        for word in ["true", "True", "TRUE", "yes", "on", "On", "!!bool true"] {
            #expect(try scalar(word).bool == true, "\(word)")
        }
        for word in ["false", "no", "OFF"] {
            #expect(try scalar(word).bool == false, "\(word)")
        }
        for text in ["'true'", "\"yes\"", "!!str true", "|\n  true\n", "1", "y", "truth"] {
            #expect(try scalar(text).bool == nil, "\(text)")
        }
    }

    @Test func wholeNumbersAreYAML11Integers() throws {
        let cases: [(String, Int?)] = [
            ("0", 0), ("42", 42), ("-7", -7), ("+5", 5), ("1_000", 1000), ("0x1F", 31), ("-0x10", -16), ("0b101", 5),
            ("0o17", 15), ("010", 8), ("1:30", 90), ("-1:00:00", -3600),
            ("'5'", nil), ("\"5\"", nil), ("5.0", nil), ("0x", nil), ("09", nil), ("+", nil), ("1:-5", nil),
            ("99999999999999999999", nil), ("five", nil),
        ]
        for (text, value) in cases {
            #expect(try scalar(text).integer == value, "\(text)")
        }
    }

    @Test func anAliasIsTheNodeItsAnchorNamedAndAnUndefinedOneIsAnError() throws {
        let root = try #require(try compose("a: &x [1, 2]\nb: *x\n"))
        guard case .mapping(let mapping) = root, case .sequence(let copy) = mapping.pairs[1].value else {
            Issue.record("the alias was not resolved: \(root)")
            return
        }
        #expect(copy.count == 2)
        guard case .composer(let problem, _, let mark) = failure("a: 1\nb: *nowhere\n") else {
            Issue.record("an undefined alias was accepted")
            return
        }
        #expect(problem == "found undefined alias")
        #expect(mark == .init(line: 2, column: 4))
    }

    @Test func aKeyGivenTwiceNamesEveryDuplicateAtTheFirstPlaceTheFirstAppears() {
        guard case .duplicateKeys(let keys, let mark) = failure("jobs:\n  z: 1\n  b: 2\n  z: 3\n  b: 4\n") else {
            Issue.record("duplicate keys were accepted")
            return
        }
        #expect(keys == ["b", "z"])
        #expect(mark == .init(line: 3, column: 3))
        // A mapping too big to compare pairwise (hashed instead).
        let big = (0..<40).map { "k\($0): 1" }.joined(separator: "\n") + "\nk7: 2\n"
        guard case .duplicateKeys(let bigKeys, let bigMark) = failure(big) else {
            Issue.record("a duplicate in a big mapping was accepted")
            return
        }
        #expect(bigKeys == ["k7"])
        #expect(bigMark == .init(line: 8, column: 1))
    }

    @Test func syntaxErrorsAndASecondDocumentArePositioned() {
        guard case .scanner(let problem, _, let mark) = failure("jobs:\n\ta: 1\n") else {
            Issue.record("a tab was accepted as indentation")
            return
        }
        #expect(problem.contains("cannot start any token"))
        #expect(mark.line == 2)
        guard case .parser(_, _, let parserMark) = failure("a: [1, 2\nb: 3\n") else {
            Issue.record("an unclosed list was accepted")
            return
        }
        #expect(parserMark.line >= 2)
        guard case .composer(let second, let context, let documentMark) = failure("a: 1\n---\nb: 2\n") else {
            Issue.record("two documents were accepted")
            return
        }
        #expect(second == "but found another document")
        #expect(context == "expected a single document in the stream")
        #expect(documentMark.line == 2)
        guard case .reader(let control, let offset) = failure("a: \u{01}\n") else {
            Issue.record("a control character was accepted")
            return
        }
        #expect(control.contains("control characters are not allowed"))
        #expect(offset == 3)
    }

    @Test func scalarsKeepNULsAndNonASCIIText() throws {
        #expect(try scalar("\"a\\0b\"").string == "a\u{0}b")
        #expect(try scalar("'Grüße, 東京'").string == "Grüße, 東京")
    }
}
