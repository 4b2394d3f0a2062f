import Foundation
import JobRunnerFuzzing
import Testing

/// Every input the fuzzers ever broke something with, replayed through the same property checks
/// (`make fuzz` finds them; the file goes in `regressions/<target>/` with the fix). A property
/// that fails traps, and takes this test down with the input's name in the log.
@Suite struct FuzzRegressionTests {
    static let regressions = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("regressions")

    static func inputs(_ target: FuzzTarget) -> [URL] {
        let directory = regressions.appendingPathComponent(target.rawValue)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        return names.sorted().map { directory.appendingPathComponent($0) }
    }

    @Test(arguments: FuzzTarget.allCases)
    func regressionsStayFixed(_ target: FuzzTarget) throws {
        for input in Self.inputs(target) {
            target.run(try Data(contentsOf: input))
        }
    }

    @Test func theCorpusIsNotEmpty() {
        // The directory is found from this file, so a move that loses it fails here, not silently.
        #expect(!Self.inputs(.calendar).isEmpty)
    }

    @Test(arguments: FuzzTarget.allCases)
    func edgeInputsKeepTheirProperties(_ target: FuzzTarget) {
        for text in ["", "\0", "@", "\t\t\t", String(repeating: "9", count: 400), "-1", "0", "\u{FEFF}*", "\u{10FFFF}"] {
            target.run(Array(text.utf8))
        }
        target.run([0xff, 0xfe, 0x00, 0x80])
    }
}
