import JobRunnerCore
import Testing

@Suite struct ClusterCommandTests {
    let id = "01kb3n7f4xk0q9v8w6r5t2y1zc"

    @Test func commandsReadBackAsThemselves() throws {
        let run = try #require(RunID(validating: id))
        for command in [ClusterCommand.run(node: "a", job: "backup", run: run), .cancel(node: "node-2", run: run),
                        .pause(job: "x.y", paused: true, from: "b"), .pause(job: "x", paused: false, from: "b")] {
            #expect(ClusterCommand(fields: command.fields) == command)
        }
    }

    @Test func forgedFieldsAreRefused() {
        let refused: [[String]] = [
            ["run", "a", "job", "../../../etc"], ["run", "a", "job", id.uppercased()], ["run", "a", "job", id + "0"],
            ["run", "a", "job/../x", id], ["run", "", "job", id], ["run", "a b", "job", id], ["cancel", "a", "../x"],
            ["pause", "job", "yes", "a"], ["pause", "job", "1", "a/b"], ["run", "a", "job"], ["drop", "a", "job", id], [],
        ]
        for fields in refused {
            #expect(ClusterCommand(fields: fields) == nil, "\(fields)")
        }
    }

    @Test func runIDsAreOnlyTheirAlphabet() {
        #expect(RunID(validating: id)?.rawValue == id)
        #expect(RunID(validating: "0123456789abcdefghjkmnpqrs") != nil)
        for text in ["", "01kb3n7f4xk0q9v8w6r5t2y1z", "01kb3n7f4xk0q9v8w6r5t2y1zi", "01kb3n7f4xk0q9v8w6r5t2y1z/", "..", "01kb3n7f4xk0q9v8w6r5t2y1zé"] {
            #expect(RunID(validating: text) == nil, "\(text)")
        }
    }
}
