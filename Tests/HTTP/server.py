#!/usr/bin/env python3
"""A small HTTP(S) server the tests start: it answers by path and counts the connections it
accepts (so a test can see its client reuse them).

    server.py [--cert CERT --key KEY]

prints the port it listens on (127.0.0.1), then serves until killed. Paths:

    /ok                    200 "hello"
    /status/N              status N
    /flaky/KEY/N           500 for the first N requests to KEY, then 200
    /busy/KEY/SECONDS      429 with Retry-After: SECONDS the first time, then 200
    /hang                  never answers
    /redirect              302 to /ok
    /header/NAME           200 with the request's header NAME as body
    /big/N                 200 with N bytes of "x"
    /count/PATH            200 with how many requests PATH has had
    /arrivals/PATH         200 with when each request to PATH arrived (monotonic seconds, a line each)
    /accepts               200 with how many connections were accepted so far
    /stall                 200 with its headers and 10 of 100 bytes, then nothing
    /sleep/SECONDS         200 after SECONDS
    /most                  200 with the most requests /sleep had in flight at once
    /away/PORT/PATH        302 to http://127.0.0.1:PORT/PATH (another server)
"""
import http.server
import socketserver
import ssl
import sys
import threading
import time

lock = threading.Lock()
accepts = 0
counts = {}
arrivals = {}
sleeping = 0
most = 0


def seen(key):
    with lock:
        arrivals.setdefault(key, []).append(time.monotonic())
        counts[key] = counts.get(key, 0) + 1
        return counts[key]


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def get_request(self):
        global accepts
        request = super().get_request()
        with lock:
            accepts += 1
        return request


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out as written (no Nagle wait for the delayed ACK of the headers).
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def answer(self, status, body=b"", headers=()):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        parts = self.path.split("?")[0].strip("/").split("/")
        seen("/" + "/".join(parts))
        kind = parts[0]
        if kind == "ok":
            self.answer(200, b"hello\n", [("X-Test", "yes")])
        elif kind == "status":
            self.answer(int(parts[1]), b"status %s\n" % parts[1].encode())
        elif kind == "flaky":
            if seen("flaky:" + parts[1]) <= int(parts[2]):
                self.answer(500, b"not yet\n")
            else:
                self.answer(200, b"fine now\n")
        elif kind == "busy":
            if seen("busy:" + parts[1]) == 1:
                self.answer(429, b"slow down\n", [("Retry-After", parts[2])])
            else:
                self.answer(200, b"thanks\n")
        elif kind == "hang":
            time.sleep(3600)
        elif kind == "redirect":
            self.answer(302, b"", [("Location", "/ok")])
        elif kind == "header":
            self.answer(200, (self.headers.get(parts[1]) or "").encode())
        elif kind == "big":
            self.answer(200, b"x" * int(parts[1]))
        elif kind == "count":
            with lock:
                count = counts.get("/" + "/".join(parts[1:]), 0)
            self.answer(200, b"%d\n" % count)
        elif kind == "arrivals":
            with lock:
                times = list(arrivals.get("/" + "/".join(parts[1:]), []))
            self.answer(200, "".join(f"{t:.6f}\n" for t in times).encode())
        elif kind == "stall":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b"x" * 10)
            self.wfile.flush()
            time.sleep(3600)
        elif kind == "sleep":
            global sleeping, most
            with lock:
                sleeping += 1
                most = max(most, sleeping)
            time.sleep(float(parts[1]))
            with lock:
                sleeping -= 1
            self.answer(200, b"slept\n")
        elif kind == "most":
            with lock:
                self.answer(200, b"%d\n" % most)
        elif kind == "away":
            self.answer(302, b"", [("Location", "http://127.0.0.1:%s/%s" % (parts[1], "/".join(parts[2:])))])
        elif kind == "accepts":
            with lock:
                self.answer(200, b"%d\n" % accepts)
        else:
            self.answer(404, b"no such path\n")

    do_POST = do_GET
    do_PUT = do_GET
    do_HEAD = do_GET
    do_DELETE = do_GET


def main():
    server = Server(("127.0.0.1", 0), Handler)
    if "--cert" in sys.argv:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(sys.argv[sys.argv.index("--cert") + 1], sys.argv[sys.argv.index("--key") + 1])
        server.socket = context.wrap_socket(server.socket, server_side=True)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
