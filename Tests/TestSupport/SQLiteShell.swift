import Foundation

/// Reads or changes a SQLite file from outside the daemon, with Python's sqlite3 (the tests
/// check what is on disk, not what the daemon says about it).
public enum SQLiteShell {
    /// Runs `sql` and returns the rows, each column as text.
    public static func query(_ database: String, _ sql: String) throws -> [[String]] {
        let script = """
            import sqlite3, sys, json
            connection = sqlite3.connect(sys.argv[1], timeout=10)
            rows = connection.execute(sys.argv[2]).fetchall()
            connection.commit()
            print(json.dumps([[None if v is None else str(v) for v in row] for row in rows]))
            """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", script, database, sql]
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw TimeoutError("sqlite query failed: \(sql)") }
        let rows = try JSONSerialization.jsonObject(with: data) as? [[String?]] ?? []
        return rows.map { $0.map { $0 ?? "" } }
    }
}
