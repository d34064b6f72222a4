"""Helpers for the OTA end-to-end tests: releases built, signed and pushed by the real pipeline, a real
OtaFlux subprocess, and a fault-injecting HTTP proxy in front of it (a thread of its own: the emulated
devices' blocking sockets run on the test's event loop)."""

from __future__ import annotations

import http.client
import http.server
import shutil
import sys
import threading
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from weatherfleet import oci
from weatherfleet.firmware import build, push, signing
from weatherfleet.oci import signatures
from weatherfleet.services.process import ManagedProcess, free_port

from .conftest import DEVICE_SOURCES

OTA_FEATURES = ("bme280", "sds011", "tls", "mtls", "ota", "influx")
# The OTA tests give their boards more than the default cap (devicesim.vm.DEFAULT_HEAP, the ESP32's heap as
# this 64-bit VM counts it): an update of this bundle needs about that much (bench/board.py), so at the
# default it sometimes runs out of contiguous heap in the check phase, which these tests are not about.
OTA_HEAP = "320k"
# a change that survives compilation (a comment would not: the .mpy would be the same bytes)
RELEASE_1_1 = '\nRELEASE = "1.1.0"\n'


def source_variant(
    tmp: Path,
    name: str,
    edits: dict[str, tuple[str, str]] | None = None,
    appends: dict[str, str] | None = None,
) -> Path:
    """A copy of the device sources with small edits (a release differs from the last in a few files)."""
    target = tmp / f"src-{name}"
    shutil.copytree(DEVICE_SOURCES, target)
    for file, (old, new) in (edits or {}).items():
        text = (target / file).read_text()
        assert old in text, f"{file}: {old!r} not found (device code changed?)"
        (target / file).write_text(text.replace(old, new, 1))
    for file, extra in (appends or {}).items():
        with (target / file).open("a") as out:
            out.write(extra)
    return target


@dataclass
class Keys:
    private: Path
    public: Path

    @property
    def device_text(self) -> str:
        return signing.device_key_text(signing.read_public_key(self.public))

    @classmethod
    def make(cls, folder: Path, name: str) -> Keys:
        folder.mkdir(parents=True, exist_ok=True)
        keys = cls(folder / f"{name}.key", folder / f"{name}.pub")
        signing.generate_key("ed25519", keys.private, keys.public)
        return keys


def release(
    store: oci.OciStore,
    repository: str,
    version: str,
    source: Path,
    keys: Keys,
    out: Path,
    features: tuple[str, ...] = OTA_FEATURES,
) -> str:
    """Build (the .mpy bundle real boards get), sign and push; returns the manifest digest."""
    folder = out / f"{repository.replace('/', '_')}-{version}"
    build.build(list(features), version, folder, source=source)  # .mpy, as real boards get
    document = signing.sign_digest(signing.read_private_key(keys.private), signing.bundle_digest(folder))
    signing.write_signature(folder / signing.SIGNATURE_FILE, document)
    ref = push.Reference("unused", repository, version)
    return push.push_bundle(store, ref, folder).digest


class OtaFlux:
    """The real OtaFlux server (python -m otaflux), serving the latest tag of PREFIX<device>."""

    def __init__(self, directory: Path, registry_url: str, prefix: str, public_keys: list[Path]) -> None:
        self.port = free_port()
        env = {
            "REGISTRY_URL": registry_url,
            "REPOSITORY_PREFIX": prefix,
            "LISTEN_ADDR": f"127.0.0.1:{self.port}",
            "METRICS_LISTEN_ADDR": f"127.0.0.1:{free_port()}",
            "CACHE_DIR": str(directory / "cache"),
            "REFRESH_INTERVAL": "1",
        }
        if public_keys:  # without keys OtaFlux serves unchecked (lets a test play a compromised server)
            env["SIGNATURE_PUBLIC_KEYS"] = ",".join(str(p) for p in public_keys)
        self.process = ManagedProcess(
            "otaflux", [sys.executable, "-m", "otaflux"], directory / "otaflux.log", self._ready, env=env
        )
        self.log = directory / "otaflux.log"

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=0.5) as response:
                return response.status == 200
        except OSError:
            return False

    def start(self) -> OtaFlux:
        self.process.start(timeout=30)
        return self

    def stop(self) -> None:
        self.process.stop()


@dataclass
class Faults:
    corrupt_blob_byte: bool = False  # flip one byte in the next blob download
    close_blob_after: int | None = None  # close the connection after this many body bytes (once)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # (method, path, Range)


class FaultProxy:
    """An HTTP/1.1 pass-through to OtaFlux that can corrupt or cut blob downloads."""

    def __init__(self, upstream_port: int) -> None:
        self.faults = Faults()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args) -> None:
                pass

            def do_GET(self) -> None:
                proxy.faults.requests.append(("GET", self.path, self.headers.get("Range")))
                upstream = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                upstream.request("GET", self.path, headers=headers)
                response = upstream.getresponse()
                body = response.read()
                upstream.close()
                blob = self.path.startswith("/v1/blobs/")
                if blob and proxy.faults.corrupt_blob_byte and body:
                    proxy.faults.corrupt_blob_byte = False
                    body = bytearray(body)
                    body[len(body) // 2] ^= 0x40
                    body = bytes(body)
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("connection", "transfer-encoding", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                cut = proxy.faults.close_blob_after
                if blob and cut is not None and len(body) > cut:
                    proxy.faults.close_blob_after = None
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)
                self.close_connection = True

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def blob_requests(self) -> list[tuple[str, str, str | None]]:
        return [r for r in self.faults.requests if r[1].startswith("/v1/blobs/")]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def raw_public_key(path: Path) -> bytes:
    key = signatures.load_public_key(path.read_bytes())
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
