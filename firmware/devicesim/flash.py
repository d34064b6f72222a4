"""A device's flash: the filesystem (a directory on the host) and raw partitions, with power-cut injection.

Every byte the device writes to flash is counted (file writes, partition writes, NVS commits; erases,
renames, removes and mkdirs count as one unit each). `arm_power_cut(n)` makes the n-th unit from now the
last one that reaches flash: the write is torn there, and the device loses power. This is harsher than
LittleFS (which commits a file only on close), so code that survives it survives the real board too.
"""

from __future__ import annotations

import io
import json
import os
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
        """Copy files onto the device, as `mpremote cp` would (not counted, never cut)."""
        for path, content in files.items():
            target = self.host_path(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content.encode() if isinstance(content, str) else content)

    def read(self, path: str) -> bytes:
        return self.host_path(path).read_bytes()

    def exists(self, path: str) -> bool:
        return self.host_path(path).exists()


class FlashFile(io.RawIOBase):
    """A file opened for writing on the device: every write goes straight to the host file, counted."""

    def __init__(self, flash: Flash, host: Path, mode: str, guard: Callable[[], None]) -> None:
        super().__init__()
        self._flash, self._guard = flash, guard
        self._text = "b" not in mode
        binary_mode = mode.replace("t", "").replace("b", "") + "b"
        self._file = open(host, binary_mode, buffering=0)  # noqa: SIM115 - closed by close()

    def readable(self) -> bool:
        return self._file.readable()

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._guard()
        raw = data.encode() if isinstance(data, str) else bytes(data)
        self._flash.write_through(len(raw), lambda n: self._file.write(raw[:n]))
        return len(data)

    def read(self, size: int = -1):
        data = self._file.read(size)
        return data.decode() if self._text else data

    def readinto(self, buffer) -> int:
        return self._file.readinto(buffer)

    def readline(self, size: int = -1):
        line = self._file.readline(size)
        return line.decode() if self._text else line

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def flush(self) -> None:
        pass  # unbuffered: the data is already on "flash"

    def close(self) -> None:
        if not self.closed:
            self._file.close()
        super().close()


def open_on_flash(flash: Flash, path: str, mode: str, cwd: str, guard: Callable[[], None]):
    """The device's builtin `open`."""
    host = flash.host_path(path, cwd)
    if host.is_dir():
        raise OSError(21, "EISDIR")
    if any(c in mode for c in "wax+"):
        guard()
        if not host.parent.is_dir():
            raise OSError(2, "ENOENT")
        if "w" in mode and host.exists():
            # truncation is a write to flash too (it may be the unit the cut lands on)
            flash.write_through(1, lambda _n: None)
        return FlashFile(flash, host, mode, guard)
    if not host.exists():
        raise OSError(2, "ENOENT")
    return open(host, mode if "b" in mode else mode.replace("t", ""))


class NvsStore:
    """esp32.NVS backing: one JSON file per device, replaced atomically on commit (as NVS pages are)."""

    def __init__(self, flash: Flash) -> None:
        self.flash = flash
        self.path = flash.root / "nvs.json"

    def load(self) -> dict[str, dict[str, list]]:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def commit(self, namespace: str, values: dict[str, list]) -> None:
        data = self.load()
        data[namespace] = values
        text = json.dumps(data)

        def replace(_n: int) -> None:
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(text)
            os.replace(tmp, self.path)

        # a commit torn anywhere leaves the previous state (NVS writes entries atomically)
        allowed = self.flash.consume(len(text))
        if allowed < len(text):
            raise self.flash.cut()
        replace(allowed)
