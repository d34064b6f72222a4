"""What several benchmarks share, so that none imports test helpers: waiting, a process's CPU and memory
from /proc, and the CRDs the API stand-in needs. Benchmarks import it as a sibling module (Python puts a
script's own folder first on sys.path), which needs no path tricks."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SHARED_SCHEMAS = Path(__file__).resolve().parents[1].parent / "shared" / "schemas"


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll until `predicate()` is truthy; SystemExit naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of a process (this one by default), children not included."""
    if pid is None:
        times = os.times()
        return times.user + times.system
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def memory_bytes(pid: int | None = None, field: str = "VmHWM") -> int:
    """A memory figure from /proc/<pid>/status: VmHWM is the peak resident set, VmRSS the current one."""
    for line in Path(f"/proc/{pid or 'self'}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


MIB = 1024 * 1024

# cert-manager's Certificate kind, kept as it comes when ../shared/schemas (its real CRD) is absent.
SCHEMALESS_CERTIFICATE_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "certificates.cert-manager.io"},
    "spec": {
        "group": "cert-manager.io",
        "names": {"kind": "Certificate", "listKind": "CertificateList", "plural": "certificates"},
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                },
            }
        ],
    },
}


def install_crds(server: Any, namespaces: tuple[str, ...] = ("weatherfleet",)) -> None:
    """Our CRDs (generated from the models, as `weatherfleet crds` writes them) and cert-manager's
    Certificate into a running `weatherfleet.apiserver.ApiServer`, and the given namespaces."""
    import yaml

    from weatherfleet.crds import all_crds

    cert_crd = SHARED_SCHEMAS / "cert-manager.io_certificates.yaml"
    docs = [
        *all_crds(),
        yaml.safe_load(cert_crd.read_text()) if cert_crd.exists() else SCHEMALESS_CERTIFICATE_CRD,
    ]

    def create(store: Any) -> None:
        crd_type = store.type_for("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        for doc in docs:
            store.create(crd_type, None, doc)
        for name in namespaces:
            store.create(store.type_for("", "v1", "namespaces"), None, {"metadata": {"name": name}})

    server.call(create)


# -- device code under the real MicroPython interpreter (bench/firmware.py) ------------------------------
# The WebAssembly port runs on Node from the checkout's node_modules (./dev.sh installs it); the runner
# script and the MicroPython-side fakes are the device tests' fixtures, mounted into the interpreter as
# files (nothing of them is imported into this process).

CHECKOUT = Path(__file__).resolve().parents[1]
MPY_FIXTURES = CHECKOUT / "tests" / "firmware_device"
MPY_PACKAGE = CHECKOUT / "node_modules" / "@micropython" / "micropython-webassembly-pyscript"


class MicroPythonRun:
    def __init__(self, rc: int, out: str, err: str) -> None:
        self.rc, self.out, self.err = rc, out, err

    def check(self) -> MicroPythonRun:
        if self.rc != 0:
            raise SystemExit(f"MicroPython exited {self.rc}\nstdout:\n{self.out}\nstderr:\n{self.err}")
        return self

    def json(self, prefix: str = "RESULT ") -> Any:
        import json

        found = [line[len(prefix) :] for line in self.out.splitlines() if line.startswith(prefix)]
        if not found:
            raise SystemExit(f"no {prefix!r} line in output:\n{self.out}\n{self.err}")
        return json.loads(found[-1])


def run_micropython(script: str, data: object, heap: int = 2 * 1024 * 1024) -> MicroPythonRun:
    """`script` with the device sources as /app (the working directory), the fakes on sys.path (/t) and
    `data` as /data/input.json."""
    import json
    import shutil
    import subprocess
    import tempfile

    from weatherfleet.firmware.build import device_sources

    node = shutil.which("node")
    if node is None or not MPY_PACKAGE.exists():
        raise SystemExit(
            "node and npm's @micropython/micropython-webassembly-pyscript are needed: run ./dev.sh"
        )
    with tempfile.TemporaryDirectory(prefix="mpy-") as tmp:
        folder = Path(tmp)
        (folder / "data").mkdir()
        (folder / "data" / "input.json").write_text(json.dumps(data))
        (folder / "script.py").write_text("import sys\nsys.path.append('/t')\n" + script)
        mounts = [f"{device_sources()}:/app", f"{MPY_FIXTURES / 'mp'}:/t", f"{folder / 'data'}:/data"]
        command = [node, str(MPY_FIXTURES / "run_mpy.mjs"), "--heap", str(heap)]
        for mount in mounts:
            command += ["--mount", mount]
        command += ["--cwd", "/app", str(folder / "script.py")]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=600)
        return MicroPythonRun(proc.returncode, proc.stdout, proc.stderr)


def signed_release(files: dict[str, bytes], version: str, private_key: Any, device: str = "dev-01") -> dict:
    """The /v1/manifest document OtaFlux serves for a bundle release and its blobs (hex), signed as
    `weatherfleet firmware sign` signs: what a device's updater consumes."""
    import hashlib
    import json
    import zlib

    from weatherfleet.oci import contract, signatures

    layers, blobs, entries = [], {}, []
    for path, data in files.items():
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data.hex()
        layers.append(
            {
                "mediaType": contract.FILE_LAYER,
                "digest": digest,
                "size": len(data),
                "annotations": {contract.ANNOTATION_TITLE: path},
            }
        )
        entries.append({"path": path, "digest": digest, "size": len(data), "crc32": zlib.crc32(data)})
    config = json.dumps({"version": version, "board": "esp32-devkit-v1", "features": ["bme280"], "files": []})
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": contract.BUNDLE_ARTIFACT_TYPE,
        "config": {
            "mediaType": contract.BUNDLE_CONFIG,
            "digest": "sha256:" + hashlib.sha256(config.encode()).hexdigest(),
            "size": len(config),
        },
        "layers": layers,
        "annotations": {contract.ANNOTATION_VERSION: version},
    }
    text = json.dumps(manifest, separators=(",", ":"))
    digest = "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    sig = signatures.sign(private_key, digest)
    whole = b"".join(files.values())
    doc = {
        "device": device,
        "version": version,
        "kind": "bundle",
        "manifestDigest": digest,
        "manifest": text,
        "signature": signatures.device_signature(sig),
        "size": len(whole),
        "crc32": zlib.crc32(whole),
        "sha256": hashlib.sha256(whole).hexdigest(),
        "files": entries,
    }
    return {"doc": doc, "blobs": blobs}


def raw_public_key(private_key: Any) -> str:
    """An Ed25519 public key as the device config carries it (base64 of the 32 raw bytes)."""
    import base64

    from cryptography.hazmat.primitives import serialization

    raw = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()
