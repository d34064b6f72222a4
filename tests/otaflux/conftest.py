"""OtaFlux fixtures: the real server as a subprocess, and a counting pass-through in front of the real
registry (to count what OtaFlux asks of it, and to make it unreachable on demand)."""

from __future__ import annotations

import http.client
import sys
import threading
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from weatherfleet import oci
from weatherfleet.services.process import ManagedProcess, free_port

ROOT = Path(__file__).resolve().parents[2]


class CountingProxy:
    """Forwards GET/HEAD to the registry and counts (method, path); `down = True` answers 503."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.requests: Counter[tuple[str, str]] = Counter()
        self.down = False
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args) -> None:
                pass

            def _forward(self) -> None:
                proxy.requests[(self.command, self.path.split("?")[0])] += 1
                if proxy.down:
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                connection = http.client.HTTPConnection(proxy.upstream, timeout=10)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                connection.request(self.command, self.path, headers=headers)
                response = connection.getresponse()
                body = response.read()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("connection", "transfer-encoding", "content-length"):
                        self.send_header(key, value)
                self.send_header(
                    "Content-Length",
                    str(len(body)) if self.command != "HEAD" else response.getheader("Content-Length", "0"),
                )
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)
                connection.close()

            do_GET = do_HEAD = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def count(self, method: str, fragment: str) -> int:
        return sum(n for (m, path), n in self.requests.items() if m == method and fragment in path)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class OtaFlux:
    def __init__(self, directory: Path, env: dict[str, str], port: int | None = None) -> None:
        self.port = port or free_port()
        self.metrics_port = free_port()
        self.env = {
            "LISTEN_ADDR": f"127.0.0.1:{self.port}",
            "METRICS_LISTEN_ADDR": f"127.0.0.1:{self.metrics_port}",
            "CACHE_DIR": str(directory / "cache"),
            "LOG_LEVEL": "info",
            **env,
        }
        self.log = directory / "otaflux.log"
        self.process = ManagedProcess(
            "otaflux", [sys.executable, "-m", "otaflux"], self.log, self._ready, env=self.env
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=0.5) as response:
                return response.status == 200
        except OSError:
            return False

    def get(
        self, path: str, headers: dict[str, str] | None = None, method: str = "GET"
    ) -> tuple[int, dict, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request(method, path, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.msg, response.read()  # headers: case-insensitive
        finally:
            connection.close()

    def post(self, path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request(
                "POST", path, body=body, headers={"Content-Type": "application/json", **(headers or {})}
            )
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def metric(self, name: str, having: str = "") -> float:
        """Sum of every sample of `name` (with any labels, or those containing `having`)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            text = response.read().decode()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and (line[len(name)] in " {") and having in line:
                total += float(line.rsplit(" ", 1)[1])
        return total

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def prefix() -> str:
    """A repository prefix of its own per test: the session registry outlives every test."""
    return f"t{uuid.uuid4().hex[:10]}/"


@pytest.fixture
def store(registry) -> oci.OciStore:
    return oci.connect(registry.url)


@pytest.fixture
def counting_proxy(registry) -> Iterator[CountingProxy]:
    proxy = CountingProxy(registry.address)
    yield proxy
    proxy.close()


@pytest.fixture
def otaflux_factory(tmp_path: Path) -> Iterator[Callable[..., OtaFlux]]:
    started: list[OtaFlux] = []

    def start(env: dict[str, str], port: int | None = None) -> OtaFlux:
        server = OtaFlux(tmp_path / f"otaflux-{len(started)}", env, port)
        started.append(server)
        server.process.start(timeout=30)
        return server

    yield start
    for server in started:
        server.process.stop()


@pytest.fixture
def push_image(store: oci.OciStore, tmp_path: Path) -> Callable[[str, str, bytes], oci.Pushed]:
    """Push bytes as an image artifact with oras-py (through weatherfleet.oci) to the real registry."""

    def push(repository: str, tag: str, data: bytes) -> oci.Pushed:
        path = tmp_path / f"fw-{uuid.uuid4().hex[:6]}.bin"
        path.write_bytes(data)
        return store.push_image(repository, tag, path, version=tag, board="esp32", features=["bme280"])

    return push
