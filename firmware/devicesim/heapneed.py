"""How much free heap a piece of device work needs on the MicroPython VM, measured the hard way: a fresh VM
process per trial runs a setup (what the board holds before the work: modules, buffers), collects, fills
the heap with ballast until only X bytes are free, then does the work, which must complete. The need is
the smallest X from which every trial above completes, scanning down from `top` (coarse steps, then fine
ones below the first failure). Fragmentation and garbage count as on a board; the same inputs give the
same figure (the VM is deterministic), but the ballast leaves the free bytes in holes, so a figure moves
by a few hundred bytes when unrelated code changes.

The OTA check phase is measured here (`ota_check_need`): `ota.Updater.check()` reading a real signed
/v1/manifest answer for a real bundle (OtaFlux's document, built by the release pipeline) from a stream
in memory. bench/board.py prints the figures; tests/firmware_host/test_ota_heap.py keeps them in bounds.
"""

from __future__ import annotations

import subprocess
import zlib
from pathlib import Path

from devicesim import vm

KIB = 1024

_PRELUDE = r"""
import gc, sys
sys.path.insert(0, sys.argv[1])
X = int(sys.argv[2])
"""

_TRIAL = r"""
gc.collect()
_ballast = [None] * 2048  # room for every piece: growing the list would leave holes of its own
_k = 0
for _size in (4096, 1024, 256, 64, 16):
    while _k < 2048 and gc.mem_free() > X + 2 * _size:
        try:
            _ballast[_k] = bytearray(_size)
        except MemoryError:
            break
        _k += 1
try:
    _ok = work()
except MemoryError:
    _ok = False
print('TRIAL', 1 if _ok else 0)
"""


def _completes(script: Path, modules: Path, free: int, heap: str) -> bool:
    out = subprocess.run(
        [vm.micropython_command(), "-X", f"heapsize={heap}", str(script), str(modules), str(free)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=script.parent,
    )
    if "TRIAL" not in out.stdout:
        raise RuntimeError(f"the measuring script failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return "TRIAL 1" in out.stdout


def need(
    modules: Path, setup: str, *, top: int = 96 * KIB, step: int = 2 * KIB, fine: int = 256, heap: str = "1m"
) -> int:
    """Free bytes `work()` (defined by `setup`, MicroPython source run with `modules` first on sys.path)
    needs: every trial from the result up to `top` completes (steps of `step`, then `fine` below)."""
    script = modules / "_heapneed_trial.py"
    script.write_text(_PRELUDE + setup + _TRIAL)
    if not _completes(script, modules, top, heap):
        raise RuntimeError(f"the work does not complete with {top} B free")
    x = top
    while x - step > 0 and _completes(script, modules, x - step, heap):
        x -= step
    while x - fine > 0 and _completes(script, modules, x - fine, heap):
        x -= fine
    return x


PARTS = (
    "check",
    "check without the signature",
    "Ed25519 verify",
    "Ed25519 import + verify",
    "boot: import ota + Updater",
)


def manifest_answer(
    files: dict[str, bytes], version: str = "1.1.0", device: str = "dev-01"
) -> tuple[bytes, str]:
    """The body OtaFlux answers to GET /v1/manifest for a bundle of `files` (rendered by OtaFlux's own
    code), signed as `weatherfleet firmware sign` signs, with a fixed Ed25519 key (the same bytes every
    run); and that key's public half in hex, as the device's signingKeys holds it."""
    import hashlib

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from otaflux.cache import Firmware
    from weatherfleet import oci
    from weatherfleet.oci import contract, signatures
    from weatherfleet.oci.payload import ResolvedFile

    key = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    digests = {path: hashlib.sha256(data).hexdigest() for path, data in files.items()}
    bundle = contract.BundleManifest(
        version=version,
        board="esp32-devkit-v1",
        features=[],
        files=[contract.BundleFile(path=p, sha256=digests[p], size=len(d)) for p, d in files.items()],
    )
    raw = oci.bundle_manifest_bytes(bundle)
    manifest = oci.Manifest(raw, oci.sha256_digest(raw))
    whole = b"".join(files.values())
    firmware = Firmware(
        device, "weatherfleet/" + device, version, "bundle", manifest,
        signatures.sign(key, manifest.digest), Path("."), Path("."), len(whole), zlib.crc32(whole),
        hashlib.sha256(whole).hexdigest(),
        [ResolvedFile(p, "sha256:" + digests[p], len(d), zlib.crc32(d)) for p, d in files.items()],
    )  # fmt: skip
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return firmware.manifest_body(), public.hex()


# The board before a check: what the app holds from boot on (the OTA modules, the updater with its buffers
# and the signature verifier). `work()` is one check, which must find the release.
_CHECK_SETUP = r"""
import binascii
ANSWER = open('answer.http', 'rb').read()
KEY = binascii.unhexlify(open('key.hex').read())

class Stream:
    # a socket that has the answer queued: readinto copies into the caller's buffer
    def __init__(self):
        self.i = 0
        self.mv = memoryview(ANSWER)
    def write(self, b):
        pass
    def close(self):
        pass
    def readinto(self, buf, n=-1):
        n = len(buf) if n < 0 else n
        k = min(n, len(ANSWER) - self.i)
        buf[:k] = self.mv[self.i:self.i + k]
        self.i += k
        return k

import ota, slots
u = ota.Updater('dev-01', 'otaflux', 8080, lambda host, port: Stream(), [KEY], slots.default_state('1.0.0'),
                '1.0.0', report=lambda *a, **k: None)
if %(skip_signature)r:
    ota.Updater._verify_signature = lambda self, sig, digest: None

def work():
    plan = u.check()
    return plan is not None and len(plan.files) == %(files)d
"""


# What the app builds at boot: the OTA modules, the updater and its buffers, the verifier.
_BOOT_SETUP = r"""
import binascii
KEY = binascii.unhexlify(open('key.hex').read())
import slots
STATE = slots.default_state('1.0.0')

def work():
    import ota
    return ota.Updater('dev-01', 'otaflux', 8080, None, [KEY], STATE, '1.0.0') is not None
"""

# The Ed25519 verification alone; with `resident` False, edverify is imported as part of the work (what
# loading it on demand in the middle of a check would cost).
_VERIFY_SETUP = r"""
import binascii, json
ANSWER = open('answer.http', 'rb').read()
KEY = binascii.unhexlify(open('key.hex').read())
_sig = json.loads(ANSWER[ANSWER.index(b'\r\n\r\n') + 4:])['signature']
SIG = binascii.a2b_base64(_sig['signature'])
PAYLOAD = binascii.a2b_base64(_sig['payload'])
del _sig, ANSWER
if %(resident)r:
    import edverify

def work():
    import edverify
    return edverify.verify(KEY, PAYLOAD, SIG)
"""


def ota_check_needs(
    modules: Path, body: bytes, key_hex: str, files: int, parts: tuple[str, ...] = PARTS, **scan
) -> dict[str, int]:
    """The OTA check phase's need for the /v1/manifest answer `body` (a release of `files` files signed by
    the Ed25519 key `key_hex`, the device's signingKeys entry), with the updater built beforehand as the
    app does at boot; and in parts (PARTS): without the signature math, the Ed25519 verification alone
    (with the module loaded, and with its import), and what the app builds at boot."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    (modules / "answer.http").write_bytes(head + body)
    (modules / "key.hex").write_text(key_hex)
    setups = {
        "check": _CHECK_SETUP % {"skip_signature": False, "files": files},
        "check without the signature": _CHECK_SETUP % {"skip_signature": True, "files": files},
        "Ed25519 verify": _VERIFY_SETUP % {"resident": True},
        "Ed25519 import + verify": _VERIFY_SETUP % {"resident": False},
        "boot: import ota + Updater": _BOOT_SETUP,
    }
    return {part: need(modules, setups[part], **scan) for part in parts}
