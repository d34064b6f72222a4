"""An emulated board from the inside: the real MicroPython VM with the emulated ESP32 modules on its path,
its flash mounted at "/", a heap capped like an ESP32's, and power cuts that are a SIGKILL at a byte."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from devicesim import vm
from devicesim.board import TIMER_SLACK_NS
from devicesim.flash import pem_to_der

PROBE = """
import asyncio, json, machine, os, socket, esp32, network, gc, sys, time
out = {}
out["implementation"] = sys.implementation.name
out["machine_is_emulated"] = hasattr(machine, "WDT") and hasattr(machine, "reset_cause")
out["cause"] = machine.reset_cause()
out["uid"] = len(machine.unique_id())
i2c = machine.I2C(0, scl=machine.Pin(22), sda=machine.Pin(21))
out["scan"] = i2c.scan()
try:
    i2c.readfrom_mem(0x50, 0, 1)
except OSError as e:
    out["enodev"] = e.args[0]
out["bme280_id"] = i2c.readfrom_mem(0x76, 0xD0, 1)[0]
uart = machine.UART(2, baudrate=9600, rxbuf=16)
time.sleep(2.5)  # the SDS011 sends a frame a second (and line noise here): more than the FIFO holds
out["uart_any"] = uart.any()
running = esp32.Partition(esp32.Partition.RUNNING)
out["running"] = running.info()[4]
out["next"] = running.get_next_update().info()[4]
wlan = network.WLAN(network.STA_IF)
wlan.active(True)
wlan.connect("weatherfleet", "wrong")
out["wrong_password"] = wlan.status()
wlan.connect("weatherfleet", "weatherfleet-wifi")
out["connected"] = wlan.isconnected()
os.mkdir("d")
with open("d/x.bin", "wb") as f:
    f.write(b"abc")
out["listdir"] = os.listdir("d")
out["root_has_no_rom"] = not any(n.startswith(".") for n in os.listdir("/"))
out["stat_size"] = os.stat("d/x.bin")[6]
out["isdir"] = os.stat("d")[0] & 0x4000 == 0x4000
try:
    import pathlib
except ImportError:
    out["cpython_only_refused"] = True
gc.collect()
out["heap_total"] = gc.mem_free() + gc.mem_alloc()

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


async def test_the_board_from_inside(devices) -> None:
    async def handle(reader, writer):
        writer.write(await reader.readexactly(11))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    device = devices("dev-17", sds011_noise=1.0)
    device.flash_firmware()
    device.install({"main.py": PROBE.replace("PORT", str(port))})
    device.start()
    line = await device.wait_console("PROBE", timeout=30)
    server.close()
    out = json.loads(line.split("PROBE ", 1)[1])
    heap = out.pop("heap_total")
    assert out == {
        "implementation": "micropython",
        "machine_is_emulated": True,
        "cause": 1,  # PWRON_RESET
        "uid": 6,
        "scan": [0x61, 0x76],
        "enodev": 19,
        "bme280_id": 0x60,
        "uart_any": 16,  # frames queued meanwhile, but the FIFO holds 16 bytes
        "running": "ota_0",
        "next": "ota_1",
        "wrong_password": 202,
        "connected": True,
        "listdir": ["x.bin"],
        "root_has_no_rom": True,
        "stat_size": 3,
        "isdir": True,
        "cpython_only_refused": True,
        "echo": "hello world",
    }
    # the heap the VM was started with: -X heapsize (less the collector's own tables, ~1/32)
    cap = vm.parse_heap(None)  # DEFAULT_HEAP unless $WEATHERFLEET_BOARD_HEAP says otherwise
    assert cap * 0.96 <= heap <= cap
    # one micropython process per board, with its heap cap on the command line
    cmdline = Path(f"/proc/{device.pid}/cmdline").read_bytes().split(b"\0")
    assert os.path.basename(cmdline[1].decode()) == "micropython" or b"micropython" in cmdline[0]
    assert f"heapsize={cap}".encode() in cmdline
    # its timers wake at the ESP32's 10 ms tick granularity (see board.TIMER_SLACK_NS)
    assert Path(f"/proc/{device.pid}/timerslack_ns").read_text().strip() == str(TIMER_SLACK_NS)


async def test_heap_cap_is_per_board(devices) -> None:
    small = devices("dev-small", heap="64k")
    small.install({"main.py": "import gc\ngc.collect()\nprint('HEAP', gc.mem_free() + gc.mem_alloc())\n"})
    small.start()
    line = await small.wait_console("HEAP", timeout=30)
    assert 64 * 1024 * 0.96 <= int(line.split()[1]) <= 64 * 1024


TORN = """
import os
def exists(p):
    try:
        os.stat(p)
        return True
    except OSError:
        return False
if exists("state.json.tmp"):
    print("AFTER", open("state.json").read(), open("state.json.tmp").read())
else:
    with open("state.json", "w") as f:
        f.write('{"v": 1}')
    with open("state.json.tmp", "w") as f:
        f.write('{"v": 2}')
    os.rename("state.json.tmp", "state.json")
    print("NOT CUT")
"""


async def test_a_power_cut_tears_a_write_at_the_armed_byte_and_a_rename_is_atomic(devices) -> None:
    device = devices("dev-18")
    device.install({"main.py": TORN})
    device.flash.arm_power_cut(8 + 4)  # the whole first file, 4 bytes of the second
    device.start()
    line = await device.wait_console("AFTER", timeout=30)
    assert line == 'AFTER {"v": 1} {"v"', "torn at the armed byte; the old state intact"
    assert device.flash.cuts == 1
    assert [b.cause for b in device.boots] == [1, 1]
    assert device.boots[0].reason == "power cut"
    # a cut that falls on the rename: it did not happen, both files are whole
    device = devices("dev-19")
    device.install({"main.py": TORN.replace('print("AFTER",', 'print("RENAMED", exists("state.json.tmp"),')})
    device.flash.arm_power_cut(8 + 8)
    device.start()
    line = await device.wait_console("RENAMED", timeout=30)
    assert line == 'RENAMED True {"v": 1} {"v": 2}'


async def test_reset_and_watchdog_restart_the_process_with_their_cause(devices) -> None:
    device = devices("dev-20")
    device.install(
        {
            "main.py": "import machine, time\nprint('CAUSE', machine.reset_cause())\n"
            "if machine.reset_cause() == machine.PWRON_RESET:\n    machine.reset()\n"
            "if machine.reset_cause() == machine.SOFT_RESET:\n    machine.WDT(timeout=300)\n    time.sleep(5)\n"
        }
    )
    device.start()
    await device.wait_console("CAUSE 3", timeout=30)
    assert [b.cause for b in device.boots[:3]] == [1, 5, 3]
    assert device.boots[1].reason == "watchdog"
    assert len({b.pid for b in device.boots}) == len(device.boots), "a new process every boot"


async def test_the_emulated_built_ins_stay_within_their_heap_budget(devices) -> None:
    """What the ROM and machine/network/esp32 take from the board's heap (nothing on an ESP32, where the
    built-ins live in flash) is what DEFAULT_HEAP adds to twice the ESP32's heap."""
    device = devices("dev-22")
    device.install(
        {"boot.py": "import gc\ngc.collect()\na = gc.mem_alloc()\nimport machine, network, esp32\n"
         "gc.collect()\nprint('ROM', gc.mem_alloc())\n"}
    )  # fmt: skip
    device.start()
    line = await device.wait_console("ROM", timeout=30)
    assert int(line.split()[1]) < vm.ROM_BUDGET
    assert 2 * vm.ESP32_HEAP + int(line.split()[1]) <= vm.DEFAULT_HEAP


def test_vm_is_the_pypi_unix_port() -> None:
    import subprocess

    out = subprocess.run(
        [
            vm.micropython_command(),
            "-c",
            "import sys, ssl; print(sys.implementation.name, ssl.MBEDTLS_VERSION)",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.startswith("micropython Mbed TLS 3.")


def test_certificates_go_to_the_flash_as_der(local_ca) -> None:
    issued = local_ca.issue("dev-21")
    for path in (issued.ca, issued.cert, issued.key):
        der = pem_to_der(path.read_bytes())
        assert der[0] == 0x30, "an ASN.1 SEQUENCE"
    assert pem_to_der(b"not a pem") == b"not a pem"
