"""A Hugging Face hub stand-in whose branches can move, for the lock tests.

    python3 fake_hub.py ROOT [--no-api]     (prints the port, then serves)

ROOT/ORG/NAME/refs/BRANCH holds a commit id; ROOT/ORG/NAME/commits/COMMIT/ holds
that commit's files. Served as the hub serves them:
  /api/models/ORG/NAME/revision/REV   {"sha", "siblings": [{"rfilename", "size", "lfs"}]}
                                      (404 with --no-api: a static mirror)
  /ORG/NAME/resolve/REV/FILE          the file, with X-Repo-Commit, and for *.safetensors
                                      X-Linked-Etag (its sha256) and X-Linked-Size
Requests are logged to ROOT/../hub.log as "METHOD PATH STATUS".
"""
import hashlib
import http.server
import json
import os
import re
import sys
import urllib.parse

ROOT = sys.argv[1]
NO_API = "--no-api" in sys.argv[2:]


def commit_of(repo, revision):
    ref = os.path.join(ROOT, repo, "refs", revision)
    if os.path.isfile(ref):
        with open(ref) as f:
            return f.read().strip()
    if re.fullmatch(r"[0-9a-f]{40}", revision) and os.path.isdir(os.path.join(ROOT, repo, "commits", revision)):
        return revision
    return None


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def finish_request(self, status, body=b"", headers=()):
        with open(os.path.join(ROOT, "..", "hub.log"), "a") as log:
            log.write("%s %s %d\n" % (self.command, urllib.parse.unquote(self.path), status))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        if not any(name == "Content-Length" for name, _ in headers):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self):
        path = urllib.parse.unquote(self.path.partition("?")[0])
        api = re.fullmatch(r"/api/models/([^/]+/[^/]+)/revision/([^/]+)", path)
        if api:
            commit = None if NO_API else commit_of(api.group(1), api.group(2))
            if not commit:
                return self.finish_request(404, b'{"error": "not found"}')
            top = os.path.join(ROOT, api.group(1), "commits", commit)
            siblings = []
            for folder, _, names in os.walk(top):
                for name in sorted(names):
                    full = os.path.join(folder, name)
                    sibling = {"rfilename": os.path.relpath(full, top), "size": os.path.getsize(full)}
                    if name.endswith(".safetensors"):
                        with open(full, "rb") as f:
                            sibling["lfs"] = {"sha256": hashlib.sha256(f.read()).hexdigest()}
                    siblings.append(sibling)
            body = json.dumps({"sha": commit, "siblings": siblings}).encode()
            return self.finish_request(200, body, [("Content-Type", "application/json")])
        resolve = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        commit = resolve and commit_of(resolve.group(1), resolve.group(2))
        full = commit and os.path.join(ROOT, resolve.group(1), "commits", commit, resolve.group(3))
        if not full or ".." in resolve.group(3).split("/") or not os.path.isfile(full):
            return self.finish_request(404, b"Entry not found", [("X-Error-Code", "EntryNotFound")])
        with open(full, "rb") as f:
            data = f.read()
        headers = [("X-Repo-Commit", commit), ("Accept-Ranges", "bytes")]
        if full.endswith(".safetensors"):
            headers += [("X-Linked-Etag", '"%s"' % hashlib.sha256(data).hexdigest()),
                        ("X-Linked-Size", str(len(data)))]
        headers.append(("ETag", '"%s"' % hashlib.sha1(data).hexdigest()))
        byte_range = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if byte_range:
            start = int(byte_range.group(1))
            end = int(byte_range.group(2)) if byte_range.group(2) else len(data) - 1
            part = data[start:end + 1]
            headers.append(("Content-Range", "bytes %d-%d/%d" % (start, start + len(part) - 1, len(data))))
            return self.finish_request(206, part, headers)
        self.finish_request(200, data, headers)

    do_HEAD = do_GET


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
