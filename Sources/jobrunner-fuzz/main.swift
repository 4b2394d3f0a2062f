import CFuzzDriver
import Foundation
import JobRunnerFuzzing

// jobrunner-fuzz TARGET [libFuzzer options and corpus directories]
//
// Built by `make fuzz` with libFuzzer linked in, this is the fuzzer of one target. Built plainly
// (as `make build` does), it replays the files and directories given, for reproducing a crash
// with a debugger or without the sanitizers.

nonisolated(unsafe) var target = FuzzTarget.config

let arguments = CommandLine.arguments
guard arguments.count >= 2, let chosen = FuzzTarget(rawValue: arguments[1]) else {
    let names = FuzzTarget.allCases.map(\.rawValue).joined(separator: ", ")
    FileHandle.standardError.write(Data("usage: jobrunner-fuzz TARGET [libFuzzer options] [corpus…]\ntargets: \(names)\n".utf8))
    exit(64)
}
target = chosen

// libFuzzer sees argv without the target's name.
var argc = CommandLine.argc - 1
var argv = CommandLine.unsafeArgv
argv[1] = argv[0]
var shifted: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = argv.advanced(by: 1)
let driven = jr_fuzz_run_driver(&argc, &shifted) { data, size in
    target.run(UnsafeBufferPointer(start: data, count: size))
    return 0
}
if driven >= 0 { exit(driven) }

// No libFuzzer: replay.
var inputs: [String] = []
for path in arguments.dropFirst(2) where !path.hasPrefix("-") {
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { continue }
    if isDirectory.boolValue {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []
        inputs += names.sorted().map { "\(path)/\($0)" }
    } else {
        inputs.append(path)
    }
}
for input in inputs {
    guard let data = FileManager.default.contents(atPath: input) else { continue }
    target.run(data)
}
print("\(target.rawValue): replayed \(inputs.count) inputs")
