import Foundation

/// The tests' HTTP server (`Tests/HTTP/server.py`), plain or TLS with a certificate from a CA
/// made for the test: real sockets, a real TLS handshake, and a count of the connections it
/// accepted.
public final class TestHTTPServer: Sendable {
    public let port: Int
    public let scheme: String
    /// The CA that signed the server's certificate (TLS only).
    public let caFile: String?
    private let process: ChildProcess

    /// - Parameter tls: serve HTTPS with a certificate for 127.0.0.1 signed by a fresh CA, kept in `directory`.
    public init(tls: Bool = false, in directory: TemporaryDirectory) async throws {
        var arguments = [repositoryRoot + "/Tests/HTTP/server.py"]
        if tls {
            let ca = directory.file("ca.pem")
            try await Self.makeCertificates(in: directory)
            caFile = ca
            arguments += ["--cert", directory.file("server.pem"), "--key", directory.file("server.key")]
        } else {
            caFile = nil
        }
        scheme = tls ? "https" : "http"
        process = try ChildProcess("/usr/bin/env", ["python3"] + arguments)
        let first = try await process.lines.first(within: .seconds(20), "the server's port") { Int($0) != nil }
        port = Int(first)!
    }

    /// `http://127.0.0.1:PORT/path`.
    public func url(_ path: String) -> String { "\(scheme)://127.0.0.1:\(port)\(path)" }

    public func stop() {
        process.kill()
    }

    /// A CA and a server certificate for 127.0.0.1 it signed (P-256 keys: quick to make).
    static func makeCertificates(in directory: TemporaryDirectory) async throws {
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        let steps: [[String]] = [
            ["req", "-x509"] + ec + ["-keyout", directory.file("ca.key"), "-out", directory.file("ca.pem"), "-days", "2",
                                     "-subj", "/CN=jobrunner test CA", "-addext", "basicConstraints=critical,CA:TRUE",
                                     "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
            ["req"] + ec + ["-keyout", directory.file("server.key"), "-out", directory.file("server.csr"), "-subj", "/CN=127.0.0.1"],
            ["x509", "-req", "-in", directory.file("server.csr"), "-CA", directory.file("ca.pem"), "-CAkey", directory.file("ca.key"),
             "-CAcreateserial", "-out", directory.file("server.pem"), "-days", "2",
             "-extfile", directory.write("server.ext", "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n")],
        ]
        for step in steps {
            let result = try await ChildProcess.run("/usr/bin/openssl", step, within: .seconds(30))
            guard result.status == 0 else { throw TimeoutError("openssl \(step[0]) failed: \(result.output)") }
        }
    }
}
