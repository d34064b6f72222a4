"""Small stand-ins for HTTP APIs that cannot run here, answering the calls the init Jobs make as the
real endpoints do (status codes and bodies), refusals included."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from weatherfleet.services.process import free_port

SA_TOKEN = "service-account-token-for-tests"


class KubeStandIn:
    """The Secrets part of the Kubernetes API: bearer authentication, get, create (409 when present)."""

    def __init__(self) -> None:
        self.secrets: dict[tuple[str, str], dict] = {}

    def handle(self, method: str, path: str, headers, body: bytes) -> tuple[int, dict]:
        if headers.get("Authorization") != f"Bearer {SA_TOKEN}":
            return 401, {"kind": "Status", "reason": "Unauthorized"}
        parts = path.strip("/").split("/")
        if parts[:3] != ["api", "v1", "namespaces"] or len(parts) < 5 or parts[4] != "secrets":
            return 404, {"kind": "Status", "reason": "NotFound"}
        namespace = parts[3]
        if method == "GET" and len(parts) == 6:
            secret = self.secrets.get((namespace, parts[5]))
            return (200, secret) if secret else (404, {"kind": "Status", "reason": "NotFound"})
        if method == "POST" and len(parts) == 5:
            secret = json.loads(body)
            secret_key = (namespace, secret["metadata"]["name"])
            if secret_key in self.secrets:
                return 409, {"kind": "Status", "reason": "AlreadyExists"}
            self.secrets[secret_key] = secret
            return 201, secret
        return 405, {"kind": "Status", "reason": "MethodNotAllowed"}

    def token(self, namespace: str, name: str) -> str | None:
        secret = self.secrets.get((namespace, name))
        return base64.b64decode(secret["data"]["token"]).decode() if secret else None


def serve(app) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, payload = app.handle(self.command, self.path, self.headers, body)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = _answer

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
