"""A webhook receiver for the end-to-end tests: verifies every delivery with the independent
`standardwebhooks` library from PyPI and records what it got. Tests steer it over HTTP:

  POST /_control  {"secrets": [...], "status": 200, "statuses": [500, 500], "delay_ms": 0,
                   "headers": {"retry-after": "2"}}
                  (`statuses` are answered first, one per delivery, then `status`; `headers`
                  go with every answer that is not a 2xx)
  GET  /_received the deliveries so far, in arrival order

Usage: receiver.py PORT [SECRET...]   (prints "listening PORT" once it accepts connections)
"""

import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from jsonschema import Draft202012Validator
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

# The published schema of each event type: docs/schemas/<type>.json.
SCHEMAS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs", "schemas")


def schema_errors(payload):
    """None when the body matches its type's published schema, else what is wrong."""
    kind = payload.get("type") if isinstance(payload, dict) else None
    path = os.path.join(SCHEMAS, f"{kind}.json")
    if not kind or not os.path.exists(path):
        return f"no published schema for {kind!r}"
    with open(path) as f:
        validator = Draft202012Validator(json.load(f))
    errors = [e.message for e in validator.iter_errors(payload)]
    return "; ".join(errors) or None

lock = threading.Lock()
config = {"secrets": [], "status": 200, "statuses": [], "delay_ms": 0, "headers": {}}
received = []


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _answer(self, status, body=b"", headers=None):
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self):
        return self.rfile.read(int(self.headers.get("content-length", "0")))

    def do_GET(self):
        if self.path == "/_received":
            with lock:
                body = json.dumps(received).encode()
            self._answer(200, body)
        else:
            self._answer(404)

    def do_POST(self):
        body = self._body()
        if self.path == "/_control":
            with lock:
                config.update(json.loads(body))
            self._answer(200, b"{}")
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        with lock:
            secrets = list(config["secrets"])
            status = config["statuses"].pop(0) if config["statuses"] else config["status"]
            delay = config["delay_ms"]
            extra = dict(config["headers"]) if not 200 <= status < 300 else {}
        verified = []
        for index, secret in enumerate(secrets):
            try:
                Webhook(secret).verify(body, headers)
                verified.append(index)
            except WebhookVerificationError:
                pass
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        if delay:
            time.sleep(delay / 1000)
        with lock:
            received.append(
                {
                    "path": self.path,
                    "webhook_id": headers.get("webhook-id"),
                    "timestamp": headers.get("webhook-timestamp"),
                    "signature": headers.get("webhook-signature"),
                    "verified_with": verified,
                    "status": status,
                    "raw": body.decode("utf-8", "replace"),
                    "payload": payload,
                    "schema_errors": schema_errors(payload),
                }
            )
        self._answer(status, json.dumps({"status": status}).encode(), extra)


class Server(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        # A sender killed mid-request (the crash tests do that) is not the receiver's error.
        pass


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    config["secrets"] = sys.argv[2:]
    server = Server(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print(f"listening {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
