"""A board's flash: the filesystem (a directory on the host, `fs/`) and raw partitions, with power cuts.

Every byte the board writes to flash is counted here, in the host process: the board's filesystem
(`rom/_flash.py`, mounted at "/" in the VM) asks before each write, partition writes happen here.
Erases, renames, removes, mkdirs and truncations count as one unit each. `arm_power_cut(n)` makes the
n-th unit from now the last one that reaches flash: the write is torn there and the board process is
killed (SIGKILL). This is harsher than LittleFS (which commits a file only on close), so code that
survives it survives the real board too.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from pathlib import Path

from .errors import PowerCut

PWRON_RESET = 1  # machine.PWRON_RESET on the ESP32 port


class Flash:
    def __init__(self, root: Path, capacity: int = 2 * 1024 * 1024) -> None:
        self.root = Path(root)
        self.fs_root = self.root / "fs"
        self.fs_root.mkdir(parents=True, exist_ok=True)
        self.capacity = capacity
        self.bytes_written = 0
        self._cut_at: int | None = None
        self.on_power_cut: Callable[[], None] = lambda: None
        self.cuts = 0

    # -- power cuts -----------------------------------------------------------------------------------
    def arm_power_cut(self, after_units: int) -> None:
        """Lose power once `after_units` more bytes (or metadata operations) have reached flash."""
        self._cut_at = self.bytes_written + max(0, after_units)

    def disarm(self) -> None:
        self._cut_at = None

    @property
    def armed(self) -> bool:
        return self._cut_at is not None

    def consume(self, units: int) -> int:
        """How many of `units` reach flash before the armed cut (all of them when nothing is armed)."""
        if self._cut_at is None:
            self.bytes_written += units
            return units
        allowed = max(0, min(units, self._cut_at - self.bytes_written))
        self.bytes_written += allowed
        return allowed

    def cut(self) -> PowerCut:
        """Power is gone: tell the device and return the exception to raise into the running code."""
        self._cut_at = None
        self.cuts += 1
        self.on_power_cut()
        return PowerCut(PWRON_RESET, "power cut")

    def write_through(self, units: int, write: Callable[[int], None]) -> None:
        """Run `write(n)` for the n units that reach flash; raise PowerCut when the cut fell inside."""
        allowed = self.consume(units)
        if allowed:
            write(allowed)
        if allowed < units:
            raise self.cut()

    def metadata(self, operation: Callable[[], None]) -> None:
        """A rename/remove/mkdir: atomic on LittleFS, so it happens entirely or not at all."""
        self.write_through(1, lambda _n: operation())

    # -- paths ----------------------------------------------------------------------------------------
    def host_path(self, path: str, cwd: str = "/") -> Path:
        """The host file behind a device path; never outside the device's directory."""
        full = posixpath.normpath(posixpath.join(cwd, str(path)))
        if not full.startswith("/"):
            full = "/" + full
        relative = full.lstrip("/")
        return self.fs_root / relative if relative else self.fs_root

    def used_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.fs_root.rglob("*") if f.is_file())

    # -- host-side helpers (provisioning, tests) -------------------------------------------------------
    def install(self, files: dict[str, bytes | str]) -> None:
        """Copy files onto the device, as `mpremote cp` would (not counted, never cut). Certificates and
        keys in PEM are stored as DER under the same name: the VM's mbedTLS build parses DER only (an
        ESP32's parses both), and the device code passes the file's bytes through unchanged."""
        for path, content in files.items():
            target = self.host_path(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            data = content.encode() if isinstance(content, str) else content
            target.write_bytes(pem_to_der(data))

    def read(self, path: str) -> bytes:
        return self.host_path(path).read_bytes()

    def exists(self, path: str) -> bool:
        return self.host_path(path).exists()


def pem_to_der(data: bytes) -> bytes:
    """A PEM certificate (the first of a chain) or private key as DER; anything else unchanged."""
    if not data.lstrip().startswith(b"-----BEGIN"):
        return data
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    if b"PRIVATE KEY-----" in data:
        key = serialization.load_pem_private_key(data, password=None)
        return key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    if b"CERTIFICATE-----" in data:
        return x509.load_pem_x509_certificate(data).public_bytes(serialization.Encoding.DER)
    return data
