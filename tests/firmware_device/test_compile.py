"""Every device file compiles with mpy-cross, and the compiled .mpy files (not the sources) import and run
under the MicroPython interpreter: what a bundle puts on the board really loads."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from mpy_harness import DEVICE, mpy_cross, run_micropython

SOURCES = sorted(p.name for p in DEVICE.glob("*.py"))


def test_every_device_file_is_listed() -> None:
    assert {"boot.py", "main.py", "app.py", "ota.py", "mqtt.py", "bme280.py", "scd30.py", "sds011.py"} <= set(
        SOURCES
    )


@pytest.mark.parametrize("name", SOURCES)
def test_compiles_with_mpy_cross(name: str, tmp_path: Path) -> None:
    result = mpy_cross(DEVICE / name, tmp_path / (name[:-3] + ".mpy"))
    assert result.returncode == 0, result.stderr
    data = (tmp_path / (name[:-3] + ".mpy")).read_bytes()
    assert data[:1] == b"M" and data[1] == 6  # .mpy header, format version 6


def test_compiled_modules_import_and_run(tmp_path: Path) -> None:
    built = tmp_path / "mpy"
    built.mkdir()
    for name in SOURCES:
        if name in ("boot.py", "main.py"):
            shutil.copy(DEVICE / name, built / name)  # the loader stays source on the board
            continue
        assert mpy_cross(DEVICE / name, built / (name[:-3] + ".mpy")).returncode == 0
    script = """
import os
assert not [n for n in os.listdir() if n.endswith('.py') and n not in ('boot.py', 'main.py')]
import crc32, scd30, payload, edverify, mqtt, ota, app
print('CRC', crc32.crc32(b'123456789'))
print('SCD', scd30.crc8(b'\\xbe\\xef'))
print('FILE', ota.__file__ if hasattr(ota, '__file__') else 'ota.mpy')
"""
    r = run_micropython(script, device_dir=built).check()
    assert r.lines("CRC ") == [str(0xCBF43926)]
    assert r.lines("SCD ") == [str(0x92)]
