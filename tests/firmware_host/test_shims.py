"""MicroPython module shims, checked from inside an emulated board (as firmware sees them)."""

from __future__ import annotations

import asyncio
import json

import pytest

from devicesim.clock import TICKS_MAX, ticks_add, ticks_diff
from devicesim.errors import PowerCut
from devicesim.flash import Flash


def test_ticks_wrap_like_micropython() -> None:
    assert ticks_diff(5, TICKS_MAX - 4) == 10
    assert ticks_diff(TICKS_MAX - 4, 5) == -10
    assert ticks_add(TICKS_MAX, 1) == 0


def test_torn_write_and_atomic_rename_under_a_power_cut(tmp_path) -> None:
    from devicesim.flash import open_on_flash

    flash = Flash(tmp_path)
    cuts = []
    flash.on_power_cut = lambda: cuts.append(True)
    with open_on_flash(flash, "state.json", "w", "/", lambda: None) as f:
        f.write('{"v": 1}')
    flash.arm_power_cut(4)
    with pytest.raises(PowerCut), open_on_flash(flash, "state.json.tmp", "w", "/", lambda: None) as f:
        f.write('{"v": 2}')
    assert flash.read("state.json.tmp") == b'{"v"', "the write is torn at the armed byte"
    assert flash.read("state.json") == b'{"v": 1}'
    flash.arm_power_cut(0)
    with pytest.raises(PowerCut):
        flash.metadata(lambda: (tmp_path / "fs" / "state.json.tmp").replace(tmp_path / "fs" / "state.json"))
    assert flash.read("state.json") == b'{"v": 1}', "a rename cut before it happened did not happen"
    assert len(cuts) == 2


PROBE = """
import asyncio, json, machine, os, socket, esp32, gc, sys, time
out = {}
i2c = machine.I2C(0)
try:
    i2c.readfrom_mem(0x50, 0, 1)
except OSError as e:
    out["enodev"] = e.args[0]
uart = machine.UART(2, baudrate=9600, rxbuf=16)
out["uart_any"] = uart.any()
nvs = esp32.NVS("ota")
nvs.set_i32("tries", 3)
nvs.commit()
out["nvs"] = esp32.NVS("ota").get_i32("tries")
os.mkdir("d")
with open("d/x.bin", "wb") as f:
    f.write(b"abc")
out["listdir"] = os.listdir("d")
out["stat_size"] = os.stat("d/x.bin")[6]
out["isdir"] = os.stat("d")[0] == 0x4000
try:
    import pathlib
except ImportError:
    out["cpython_only_refused"] = True
out["heap"] = gc.mem_free() > 0
out["platform"] = sys.platform

async def echo():
    reader, writer = await asyncio.open_connection("127.0.0.1", PORT)
    writer.write(b"hello world")
    await writer.drain()
    buf = bytearray(5)
    n = await reader.readinto(buf)
    rest = await reader.readexactly(6)
    writer.close()
    await writer.wait_closed()
    return bytes(buf[:n]) + rest

out["echo"] = asyncio.run(echo()).decode()
print("PROBE " + json.dumps(out))
"""


async def test_shims_from_inside_a_board(devices) -> None:
    async def handle(reader, writer):
        writer.write(await reader.readexactly(11))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    device = devices("dev-17", sds011_noise=1.0)
    device.install({"main.py": PROBE.replace("PORT", str(port))})
    device.clock.advance(120)  # two minutes of SDS011 output wait for a 16-byte FIFO
    device.start()
    line = await device.wait_console("PROBE", timeout=30)
    server.close()
    out = json.loads(line.split("PROBE ", 1)[1])
    assert out == {
        "enodev": 19,
        "uart_any": 16,  # frames queued meanwhile, but the FIFO holds 16 bytes
        "nvs": 3,
        "listdir": ["x.bin"],
        "stat_size": 3,
        "isdir": True,
        "cpython_only_refused": True,
        "heap": True,
        "platform": "esp32",
        "echo": "hello world",
    }
