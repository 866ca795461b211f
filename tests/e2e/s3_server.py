"""A tiny S3 stand-in for the remote tests: stores PUT objects under a folder and
serves GET/HEAD, and accepts only requests signed with AWS Signature Version 4 as
AWS publishes it (docs.aws.amazon.com, "Create a signed AWS API request"): the
canonical request, the string to sign, the derived signing key, and the payload
hash in x-amz-content-sha256 checked against the body.

    python3 s3_server.py FOLDER ACCESS_KEY SECRET REGION   (prints the port, then serves)
"""
import datetime
import hashlib
import hmac
import http.server
import os
import sys
import urllib.parse

FOLDER, ACCESS_KEY, SECRET, REGION = sys.argv[1:5]


def hmac_sha256(key, text):
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def signing_key(date):
    k_date = hmac_sha256(("AWS4" + SECRET).encode(), date)
    k_region = hmac_sha256(k_date, REGION)
    k_service = hmac_sha256(k_region, "s3")
    return hmac_sha256(k_service, "aws4_request")


def canonical_query(query):
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    quote = lambda s: urllib.parse.quote(s, safe="-_.~")
    return "&".join(f"{quote(k)}={quote(v)}" for k, v in sorted(pairs))


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        with open(os.path.join(FOLDER, "..", "s3.log"), "a") as log:
            log.write("%s %s\n" % (self.command, fmt % args))

    def answer(self, status, body=b"", length=None):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def refuse(self, why):
        self.answer(403, ("<Error><Code>SignatureDoesNotMatch</Code><Message>%s</Message></Error>" % why).encode())

    def verified(self, body):
        """None when the request carries a valid SigV4 signature, else why not."""
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("AWS4-HMAC-SHA256 "):
            return "no AWS4-HMAC-SHA256 Authorization header"
        fields = dict(part.strip().split("=", 1) for part in auth[len("AWS4-HMAC-SHA256 "):].split(","))
        key_id, date, region, service, terminal = fields["Credential"].split("/")
        if key_id != ACCESS_KEY or region != REGION or service != "s3" or terminal != "aws4_request":
            return "wrong credential scope " + fields["Credential"]
        amz_date = self.headers.get("x-amz-date", "")
        when = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.timezone.utc)
        if abs((datetime.datetime.now(datetime.timezone.utc) - when).total_seconds()) > 900 or amz_date[:8] != date:
            return "x-amz-date too far from now"
        payload_hash = self.headers.get("x-amz-content-sha256")
        if payload_hash is None:
            return "no x-amz-content-sha256 header"
        if payload_hash != "UNSIGNED-PAYLOAD" and payload_hash != hashlib.sha256(body).hexdigest():
            return "the body does not match x-amz-content-sha256"
        signed = fields["SignedHeaders"].split(";")
        for required in ("host", "x-amz-date"):
            if required not in signed:
                return required + " is not signed"
        path, _, query = self.path.partition("?")
        headers = "".join("%s:%s\n" % (name, " ".join(self.headers.get(name, "").split())) for name in signed)
        canonical = "\n".join([self.command, path, canonical_query(query), headers, fields["SignedHeaders"],
                               payload_hash])
        to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, "/".join([date, region, "s3", "aws4_request"]),
                             hashlib.sha256(canonical.encode()).hexdigest()])
        expected = hmac.new(signing_key(date), to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, fields["Signature"]):
            return "signature mismatch"
        return None

    def object_path(self):
        path = urllib.parse.unquote(self.path.partition("?")[0])
        if ".." in path.split("/"):
            return None
        return os.path.join(FOLDER, path.lstrip("/"))

    def do_GET(self):
        why = self.verified(b"")
        if why:
            return self.refuse(why)
        path = self.object_path()
        if not path or not os.path.isfile(path):
            return self.answer(404, b"<Error><Code>NoSuchKey</Code></Error>")
        with open(path, "rb") as f:
            data = f.read()
        if self.command == "HEAD":
            return self.answer(200, length=len(data))
        self.answer(200, data)

    do_HEAD = do_GET

    def do_PUT(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        why = self.verified(body)
        if why:
            return self.refuse(why)
        path = self.object_path()
        if not path:
            return self.answer(400)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        temporary = path + ".uploading"
        with open(temporary, "wb") as f:
            f.write(body)
        os.rename(temporary, path)
        self.answer(200)


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
