import Foundation

/// Reads or changes a SQLite file from outside the daemon, with Python's sqlite3 (the tests
/// check what is on disk, not what the daemon says about it).
public enum SQLiteShell {
    /// Runs `sql` and returns the rows, each column as text (NULL as the empty string).
    public static func query(_ database: String, _ sql: String) async throws -> [[String]] {
        let script = """
            import sqlite3, sys, json
            connection = sqlite3.connect(sys.argv[1], timeout=10)
            rows = connection.execute(sys.argv[2]).fetchall()
            connection.commit()
            print(json.dumps([["" if v is None else str(v) for v in row] for row in rows]))
            """
        let result = try await ChildProcess.run("/usr/bin/python3", ["-c", script, database, sql])
        guard result.status == 0 else { throw TimeoutError("sqlite query failed: \(sql): \(result.output)") }
        let data = Data(result.output.utf8)
        guard let rows = try JSONSerialization.jsonObject(with: data) as? [[String]] else {
            throw TimeoutError("sqlite query gave no rows of text: \(sql): \(result.output.prefix(200))")
        }
        return rows
    }
}
