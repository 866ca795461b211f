"""A web server that misbehaves on purpose, for tests/e2e/test_hostile.sh.

  python3 endless_server.py PORT_FILE
Listens on a free port of 127.0.0.1 (written to PORT_FILE) and answers every
GET with a chunked body that does not end within 100 MiB (and HEAD without a
length), counting
the bytes it sent in PORT_FILE.sent when a connection closes.
"""
import http.server
import socketserver
import sys

CHUNK = b"x" * 65536


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def headers_only(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def do_HEAD(self):
        self.headers_only()

    def do_GET(self):
        self.headers_only()
        sent = 0
        try:
            while sent < 100 << 20:  # enough to tell; bounded so a failing test fills no disk
                self.wfile.write(b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK))
                sent += len(CHUNK)
        except OSError:
            pass
        with open(sys.argv[1] + ".sent", "a") as f:
            f.write("%d\n" % sent)
        self.close_connection = True


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


server = Server(("127.0.0.1", 0), Handler)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
import os  # noqa: E402
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
server.serve_forever()
