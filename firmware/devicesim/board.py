"""An emulated ESP32 board: one `micropython` process (the real MicroPython VM, heap capped like an
ESP32's) running the board's flash — boot.py, main.py and the .mpy bundle — with its hardware played by
this (host) process over two pipes: the byte-level sensors on I2C and UART, the flash's power-cut
accounting, the partition table and bootloader, the access point, the watchdog and resets.

A reset ends the process and starts a new one (RAM is lost, the flash directory stays): `machine.reset()`
and `deepsleep` ask the host, a starving watchdog, `power_cycle()` and a power cut are a SIGKILL at that
point. Every boot goes through the emulated bootloader (`partition.py`), then the VM runs boot.py and
main.py from the flash. Many boards share this process and its asyncio loop; each board is its own
process, so a board's blocking code stalls only that board, as on the real thing."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import enum
import errno
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import esp_image, vm
from .errors import PowerCut
from .flash import Flash
from .partition import PartitionTable
from .sensors import BME280, SCD30, SDS011, Environment

PWRON_RESET, HARD_RESET, WDT_RESET, DEEPSLEEP_RESET, SOFT_RESET = 1, 2, 3, 4, 5
CAUSE_NAMES = {1: "power_on", 2: "hard", 3: "watchdog", 4: "deepsleep", 5: "soft"}

STAT_IDLE, STAT_CONNECTING, STAT_GOT_IP = 1000, 1001, 1010
STAT_NO_AP_FOUND, STAT_WRONG_PASSWORD = 201, 202
NO_REGISTER = 0xFFFF
# The ESP32 port's FreeRTOS ticks at 100 Hz: its timers and its poll loop wake at 10 ms granularity. The
# unix VM polls a TLS socket (not a plain fd to select) every 1 ms, ~1,300 wake-ups a second per idle
# board; with the kernel's timer slack at one ESP32 tick a board wakes as often as the real one does and
# costs the host a third of the CPU. Every timer of the board may fire up to this late.
TIMER_SLACK_NS = 10_000_000
_SYS_PIDFD_GETFD = 438


class DeviceConfigError(ValueError):
    pass


class DeviceState(enum.StrEnum):
    OFF = "off"
    BOOTING = "booting"
    RUNNING = "running"  # the VM runs boot.py / main.py
    IDLE = "idle"  # main.py ended or raised: the board sits at the REPL
    STOPPED = "stopped"


@dataclass
class WifiNetwork:
    ssid: str = "weatherfleet"
    password: str = "weatherfleet-wifi"
    up: bool = True
    rssi: int = -58


@dataclass
class BootRecord:
    number: int
    cause: int
    slot: str | None
    reason: str = ""
    error: str | None = None
    pid: int | None = None


@dataclass
class _Uart:
    rxbuf: int = 256
    on: bool = True
    rx: bytearray = field(default_factory=bytearray)


class Boot:
    """One run of the VM: the process, its pipes, and what lives in the board's RAM from the host's view
    (watchdog, UART FIFOs, Wi-Fi association)."""

    def __init__(self, number: int, cause: int) -> None:
        self.number, self.cause = number, cause
        self.process: subprocess.Popen | None = None
        self.pidfd = -1
        self.fds: list[int] = []
        self.answer_fd = -1
        self.requests = bytearray()
        self.output = bytearray()
        self.end: tuple[int, str] | None = None  # (next boot's cause, reason) once the host ended it
        self.exited = asyncio.Event()
        self.wdt_ms: int | None = None
        self.wdt_fed = 0.0
        self.uarts: dict[int, _Uart] = {}
        self.joined: str | None = None  # the SSID the station was told to join (it keeps trying)
        self.key: str | None = None

    @property
    def alive(self) -> bool:
        return self.end is None and not self.exited.is_set()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None


class Board:
    def __init__(
        self,
        device_id: str,
        root: Path,
        *,
        sensors: tuple[str, ...] = ("bme280", "scd30", "sds011"),
        environment: Environment | None = None,
        seed: int | None = None,
        wifi: WifiNetwork | None = None,
        sds011_noise: float = 0.0,
        sds011_corruption: float = 0.0,
        echo: bool = False,
        reboot_delay: float = 0.05,
        heap: int | str | None = None,
        timer_slack_ns: int | None = TIMER_SLACK_NS,
        i2c_addresses: dict[str, int] | None = None,
    ) -> None:
        self.device_id = device_id
        self.seed = seed if seed is not None else int(hashlib.sha256(device_id.encode()).hexdigest()[:8], 16)
        self.root = Path(root)
        self.heap = vm.parse_heap(heap)
        self.timer_slack_ns = timer_slack_ns
        self.flash = Flash(self.root)
        self.flash.on_power_cut = lambda: self._end(self.boot, PWRON_RESET, "power cut")
        self.partitions = PartitionTable(self.flash)
        self.environment = environment or Environment(seed=self.seed)
        self.wifi = wifi or WifiNetwork()
        self.echo = echo
        self.reboot_delay = reboot_delay
        self.i2c: dict[int, Any] = {}
        self.uart: dict[int, Any] = {}
        world, now = self.environment.at, time.monotonic
        # a sensor answers where the board wires it (a BME280's SDO pin picks 0x76 or 0x77)
        address = {"bme280": 0x76, "scd30": 0x61, **(i2c_addresses or {})}
        if "bme280" in sensors:
            self.bme280 = self.i2c[address["bme280"]] = BME280(now, world, address["bme280"], seed=self.seed)
        if "scd30" in sensors:
            self.scd30 = self.i2c[address["scd30"]] = SCD30(now, world, address["scd30"])
        if "sds011" in sensors:
            self.sds011 = self.uart[2] = SDS011(now, world, self.seed, sds011_noise, sds011_corruption)
        self.console: collections.deque[str] = collections.deque(maxlen=4000)
        self.console_times: collections.deque[float] = collections.deque(maxlen=4000)  # monotonic, per line
        self.boots: list[BootRecord] = []
        self.boot: Boot | None = None
        self.state = DeviceState.OFF
        self.loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._wake: asyncio.Event | None = None
        self._stopping = False
        self._breaker: asyncio.Task | None = None
        self._cut_pending = False
        self.unique_id = hashlib.sha256(f"esp32:{device_id}".encode()).digest()[:6]

    # -- provisioning ---------------------------------------------------------------------------------
    def install(self, files: dict[str, bytes | str]) -> None:
        self.flash.install(files)

    def flash_firmware(self, frozen: dict[str, bytes | str] | None = None, slot: str = "ota_0") -> None:
        """esptool: write a MicroPython image (optionally with frozen modules) to a slot."""
        self.partitions.flash_image(slot, esp_image.build_image(esp_image.application_zip(frozen or {})))

    # -- console --------------------------------------------------------------------------------------
    def log(self, text: str) -> None:
        now = time.monotonic()
        for line in text.splitlines() or [""]:
            self.console.append(line)
            self.console_times.append(now)
            if self.echo:
                print(f"[{self.device_id}] {line}", flush=True)

    def console_text(self) -> str:
        return "\n".join(self.console)

    async def wait_console(self, needle: str, timeout: float = 30.0, after: int = 0) -> str:
        """Wait (without blocking the loop) until a console line contains `needle`."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for line in list(self.console)[after:]:
                if needle in line:
                    return line
            if asyncio.get_running_loop().time() > deadline:
                tail = "\n".join(list(self.console)[-25:])
                raise TimeoutError(
                    f"{self.device_id}: no console line with {needle!r} in {timeout}s:\n{tail}"
                )
            await asyncio.sleep(0.05)

    async def wait_for(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not condition():
            if asyncio.get_running_loop().time() > deadline:
                tail = "\n".join(list(self.console)[-25:])
                raise TimeoutError(
                    f"{self.device_id}: timed out after {timeout}s waiting for {what}:\n{tail}"
                )
            await asyncio.sleep(0.05)

    # -- life cycle -----------------------------------------------------------------------------------
    def start(self) -> asyncio.Task:
        """Power on, on the running loop. The task runs boots until `stop()`."""
        self.loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._stopping = False
        self._task = self.loop.create_task(self._run(), name=f"board-{self.device_id}")
        return self._task

    async def stop(self) -> None:
        """Power off (the flash stays)."""
        self._stopping = True
        self._end(self.boot, PWRON_RESET, "stopped")
        if self._wake:
            self._wake.set()
        if self._task:
            await asyncio.gather(self._task, return_exceptions=True)
        if self._breaker:
            self._breaker.cancel()
        self.state = DeviceState.STOPPED

    def power_cycle(self) -> None:
        self._end(self.boot, PWRON_RESET, "power cycle")

    def power_cut(self) -> None:
        """Pull the plug now, wherever the board is (counted like an armed cut). Between two boots (the
        reset in progress) it falls on the next boot as soon as its process exists."""
        if self.boot and self.boot.alive:
            self.flash.cut()
        else:
            self._cut_pending = True

    @property
    def pid(self) -> int | None:
        return self.boot.pid if self.boot and self.boot.alive else None

    def set_wifi(self, up: bool) -> None:
        """The access point comes or goes. While it is away every socket the board has is broken (the
        board's lwIP would report the dead link on the next read or write) and new ones are broken too."""
        self.wifi.up = up
        if not up and self.loop and (self._breaker is None or self._breaker.done()):
            self._breaker = self.loop.create_task(self._break_sockets())

    async def _break_sockets(self) -> None:
        while not self.wifi.up and not self._stopping:
            boot = self.boot
            if boot and boot.alive and boot.pidfd >= 0:
                break_sockets(boot.pidfd, boot.pid)
            await asyncio.sleep(0.1)

    # -- the boot loop --------------------------------------------------------------------------------
    def _end(self, boot: Boot | None, cause: int, reason: str) -> None:
        """End `boot` now: SIGKILL (the first request wins)."""
        if boot is None or boot.end is not None:
            return
        boot.end = (cause, reason)
        if boot.process and boot.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                boot.process.send_signal(signal.SIGKILL)
        if self._wake:
            self._wake.set()

    async def _run(self) -> None:
        cause = PWRON_RESET
        while not self._stopping:
            self.state = DeviceState.BOOTING
            try:
                slot = self.partitions.boot() if self._has_firmware() else None
            except PowerCut:
                cause = PWRON_RESET
                continue
            except RuntimeError as error:
                self.log(f"bootloader: {error}")
                self.state = DeviceState.IDLE
                return
            for line in self.partitions.boot_log:
                self.log(f"bootloader: {line}")
            boot = Boot(len(self.boots) + 1, cause)
            record = BootRecord(boot.number, cause, slot)
            self.boots.append(record)
            self.boot = boot
            self.log(f"devicesim: boot {boot.number} ({CAUSE_NAMES[cause]}) slot={slot}")
            self._spawn(boot, self._frozen_dir(slot))
            record.pid = boot.pid
            if self._cut_pending:
                self._cut_pending = False
                self.flash.cut()
            self.state = DeviceState.RUNNING
            while not boot.exited.is_set():
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 0.2)
                self._check_watchdog(boot)
            self._teardown(boot)
            if boot.end is None:  # the VM exited by itself (it should sit at the REPL instead)
                self.log(f"devicesim: the VM exited with {boot.process.returncode}")
                boot.end = (PWRON_RESET, "VM exited")
                record.error = record.error or f"VM exited with {boot.process.returncode}"
                self.state = DeviceState.IDLE
                await self._idle()
                if self._stopping:
                    break
            cause, record.reason = boot.end
            self.log(f"devicesim: reset ({record.reason})")
            if not self._stopping:
                await asyncio.sleep(self.reboot_delay)

    async def _idle(self) -> None:
        """A board at the REPL: nothing happens until a power cycle or stop."""
        while not self._stopping and self.boot and self.boot.end == (PWRON_RESET, "VM exited"):
            self._wake.clear()
            await self._wake.wait()

    def _has_firmware(self) -> bool:
        return any(self.partitions.application(s) is not None for s in self.partitions.app_slots())

    def _frozen_dir(self, slot: str | None) -> Path | None:
        """The booted image's frozen modules, unpacked where the VM finds them as '.frozen'."""
        application = self.partitions.application(slot) if slot else None
        modules = esp_image.frozen_modules(application) if application else {}
        target = self.root / "frozen"
        shutil.rmtree(target, ignore_errors=True)
        if not modules:
            return None
        target.mkdir(parents=True)
        for name, data in modules.items():
            (target / name).write_bytes(data if isinstance(data, bytes) else data.encode())
        return target

    def _spawn(self, boot: Boot, frozen: Path | None) -> None:
        to_board_r, to_board_w = os.pipe()
        to_host_r, to_host_w = os.pipe()
        out_r, out_w = os.pipe()
        argv = vm.command(
            self.heap, self.flash.fs_root, frozen, boot.cause, self.unique_id, to_board_r, to_host_w
        )
        try:
            boot.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out_w,
                stderr=out_w,
                pass_fds=(to_board_r, to_host_w),
                env=vm.environment(),
                cwd=self.flash.fs_root,
            )
        finally:
            for fd in (to_board_r, to_host_w, out_w):
                os.close(fd)
        boot.answer_fd = to_board_w
        boot.fds = [to_board_w, to_host_r, out_r]
        os.set_blocking(to_host_r, False)
        os.set_blocking(out_r, False)
        boot.pidfd = os.pidfd_open(boot.process.pid)
        if self.timer_slack_ns is not None:
            with contextlib.suppress(OSError):  # needs CAP_SYS_NICE over the child; best effort
                Path(f"/proc/{boot.process.pid}/timerslack_ns").write_text(str(self.timer_slack_ns))
        loop = self.loop
        loop.add_reader(to_host_r, self._on_requests, boot, to_host_r)
        loop.add_reader(out_r, self._on_output, boot, out_r)
        loop.add_reader(boot.pidfd, self._on_exit, boot)
        boot.wdt_fed = time.monotonic()

    def _on_exit(self, boot: Boot) -> None:
        self.loop.remove_reader(boot.pidfd)
        boot.process.wait()
        # what the VM printed last is still in the pipe
        self._on_output(boot, boot.fds[2], final=True)
        boot.exited.set()
        if self._wake:
            self._wake.set()

    def _teardown(self, boot: Boot) -> None:
        for fd in boot.fds[1:]:
            with contextlib.suppress(ValueError, OSError):
                self.loop.remove_reader(fd)
        for fd in [*boot.fds, boot.pidfd]:
            with contextlib.suppress(OSError):
                os.close(fd)
        boot.fds = []
        boot.pidfd = -1

    def _check_watchdog(self, boot: Boot) -> None:
        if boot.wdt_ms is not None and boot.alive and (time.monotonic() - boot.wdt_fed) * 1000 > boot.wdt_ms:
            self.log("devicesim: watchdog timeout")
            self._end(boot, WDT_RESET, "watchdog")

    # -- console --------------------------------------------------------------------------------------
    def _on_output(self, boot: Boot, fd: int, final: bool = False) -> None:
        try:
            while True:
                chunk = os.read(fd, 65536)
                if not chunk:
                    with contextlib.suppress(ValueError, OSError):
                        self.loop.remove_reader(fd)
                    break
                boot.output += chunk
                if not final:
                    break
        except BlockingIOError:
            pass
        except OSError:
            return
        *lines, rest = boot.output.split(b"\n")
        boot.output = bytearray(rest)
        if final and rest:
            lines.append(rest)
        for line in lines:
            self.log(line.decode(errors="replace").rstrip("\r"))

    # -- hardware requests ----------------------------------------------------------------------------
    def _on_requests(self, boot: Boot, fd: int) -> None:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            with contextlib.suppress(ValueError, OSError):
                self.loop.remove_reader(fd)
            return
        buf = boot.requests
        buf += chunk
        while len(buf) >= 8:
            size = buf[1] | buf[2] << 8
            if len(buf) < 8 + size:
                break
            op, args, data = buf[0], bytes(buf[3:8]), bytes(buf[8 : 8 + size])
            del buf[: 8 + size]
            if boot.end is not None:
                return  # the board is being reset: nothing it asks for happens any more
            try:
                answer = self._handle(boot, op, args, data)
            except PowerCut:
                return
            except OSError as error:
                code = error.errno if isinstance(error.errno, int) else errno.EIO
                answer = (code, b"") if 0 < code < 255 else (255, str(code).encode())
            if answer is not None:
                status, payload = answer
                self._answer(boot, status, payload)

    def _answer(self, boot: Boot, status: int, payload: bytes = b"") -> None:
        frame = bytes((len(payload) & 0xFF, len(payload) >> 8, status)) + payload
        try:
            view = memoryview(frame)
            while view:
                n = os.write(boot.answer_fd, view)
                view = view[n:]
        except OSError:
            pass  # the board is gone

    def _handle(self, boot: Boot, op: int, args: bytes, data: bytes) -> tuple[int, bytes] | None:
        if op == 0x46:  # F: power-cut accounting of n units about to reach flash
            n = int.from_bytes(args[:4], "little")
            return 0, self.flash.consume(n).to_bytes(4, "little")
        if op == 0x58:  # X: the armed cut is here
            self.flash.cut()
            return None
        if op in (0x52, 0x57):  # R/W: I2C read/write (with an optional register address first)
            chip = self.i2c.get(args[0])
            if chip is None or chip.failed:
                return errno.ENODEV, b""
            reg = args[1] | args[2] << 8
            prefix = b"" if reg == NO_REGISTER else bytes((reg,))
            if op == 0x57:
                chip.i2c_write(prefix + data)
                return 0, b""
            if prefix:
                chip.i2c_write(prefix)
            return 0, chip.i2c_read(args[3] | args[4] << 8)
        if op == 0x53:  # S: I2C scan
            return 0, bytes(sorted(a for a, chip in self.i2c.items() if not chip.failed))
        if op == 0x55:
            return self._uart(boot, args, data)
        if op == 0x54:  # T: watchdog start (timeout ms) or feed (0)
            timeout = int.from_bytes(args[:4], "little")
            if timeout:
                boot.wdt_ms = timeout
            boot.wdt_fed = time.monotonic()
            return None
        if op == 0x5A:  # Z: machine.reset / deepsleep
            cause = args[0]
            self._end(
                boot, cause, {SOFT_RESET: "machine.reset()", DEEPSLEEP_RESET: "deepsleep"}.get(cause, "reset")
            )
            return None
        if op == 0x4E:
            return self._network(boot, chr(args[0]), data)
        if op == 0x50:
            return self._partition(boot, chr(args[0]), args[1], data)
        if op == 0x45:  # E: what boot.py / main.py raised
            self.boots[-1].error = data.decode(errors="replace")
            return None
        if op == 0x51:  # Q: main.py ended; the REPL waits
            self.state = DeviceState.IDLE
            return None
        return errno.EINVAL, b""

    def _uart(self, boot: Boot, args: bytes, data: bytes) -> tuple[int, bytes]:
        sub, uid = chr(args[0]), args[1]
        port = boot.uarts.setdefault(uid, _Uart())
        if sub == "i":
            port.rxbuf, port.on = args[2] | args[3] << 8, bool(args[4])
            return 0, b""
        peer = self.uart.get(uid) or (next(iter(self.uart.values())) if len(self.uart) == 1 else None)
        if peer is not None and port.on:
            incoming = peer.uart_poll()
            port.rx += incoming[: max(0, port.rxbuf - len(port.rx))]  # the RX FIFO drops what does not fit
        if sub == "a":
            return 0, len(port.rx).to_bytes(2, "little")
        if sub == "r":
            count = min(args[3] | args[4] << 8, len(port.rx))
            out = bytes(port.rx[:count])
            del port.rx[:count]
            return 0, out
        if sub == "l":
            end = port.rx.find(b"\n")
            count = end + 1 if end >= 0 else len(port.rx)
            out = bytes(port.rx[:count])
            del port.rx[:count]
            return 0, out
        if sub == "w":
            if peer is not None and port.on:
                reply = peer.uart_receive(data)
                port.rx += reply[: max(0, port.rxbuf - len(port.rx))]
            return 0, b""
        return errno.EINVAL, b""

    def _network(self, boot: Boot, sub: str, data: bytes) -> tuple[int, bytes]:
        """The station, as the ESP32's driver behaves: after connect() it keeps trying until disconnect(),
        so it associates on its own whenever the access point (with that SSID and password) is up."""
        net = self.wifi
        if sub == "c":
            ssid, _, key = data.decode().partition("\n")
            boot.joined, boot.key = ssid, key
            return 0, b""
        if sub == "d":
            boot.joined = boot.key = None
            return 0, b""
        wanted = boot.joined is not None and boot.joined == net.ssid
        associated = wanted and boot.key == net.password and net.up
        if sub == "i":
            return 0, b"1" if associated else b"0"
        if sub == "s":
            if boot.joined is None:
                status = STAT_IDLE
            elif associated:
                status = STAT_GOT_IP
            elif not wanted:
                status = STAT_NO_AP_FOUND
            elif not net.up:
                status = STAT_CONNECTING
            else:
                status = STAT_WRONG_PASSWORD
            return 0, str(status).encode()
        if sub == "r":
            return 0, str(net.rssi).encode()
        if sub == "e":
            return 0, (boot.joined or "").encode() if associated else b""
        if sub == "S":
            return 0, f"{net.ssid}\n{net.rssi}".encode() if net.up else b""
        return errno.EINVAL, b""

    def _partition(self, boot: Boot, sub: str, text_len: int, data: bytes) -> tuple[int, bytes]:
        table = self.partitions
        if sub == "w":
            text, block = data[:text_len].decode(), data[text_len:]
        else:
            text, block = data.decode(), b""
        parts = text.split(",")
        if sub == "g":  # BOOT (0) or RUNNING (1) -> label
            if parts[0] == "1":
                return 0, (table.running or "").encode()
            active = table._active()
            return 0, (table.slot_of(active) if active else table.running or "").encode()
        if sub == "i":
            try:
                p = table.info(parts[0])
            except KeyError:
                return errno.ENOENT, b""
            return 0, f"{p.type},{p.subtype},{p.offset},{p.size}".encode()
        if sub == "f":
            kind, subtype, label = int(parts[0]), int(parts[1]), parts[2]
            found = [
                p.label
                for p in table.layout
                if p.type == kind
                and (subtype == 0xFF or p.subtype == subtype)
                and (not label or p.label == label)
            ]
            return 0, ",".join(found).encode()
        if sub == "v":
            table.mark_valid()
            return 0, b""
        if sub == "r":
            return 0, table.read(parts[0], int(parts[1]), int(parts[2]))
        if sub == "w":
            label, offset, erase = parts[0], int(parts[1]), parts[2] == "1"
            if erase:
                table.erase_range(label, offset, len(block))
            table.write(label, offset, block)
            return 0, b""
        if sub == "e":
            table.erase(parts[0], int(parts[1]), int(parts[2]))
            return 0, b""
        if sub == "b":
            table.set_boot(parts[0])
            return 0, b""
        if sub == "n":
            slots = table.app_slots()
            current = table.running if table.running in slots else slots[-1]
            return 0, slots[(slots.index(current) + 1) % len(slots)].encode()
        return errno.EINVAL, b""


def break_sockets(pidfd: int, pid: int | None) -> int:
    """Shut down every socket of process `pid` (through pidfd_getfd): the peer and the board both see
    the connection die. Returns how many."""
    if pid is None:
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    count = 0
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return 0
    for name in fds:
        try:
            if not os.readlink(f"/proc/{pid}/fd/{name}").startswith("socket:"):
                continue
        except OSError:
            continue
        fd = libc.syscall(_SYS_PIDFD_GETFD, pidfd, int(name), 0)
        if fd < 0:
            continue
        try:
            sock = socket.socket(fileno=fd)
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
            count += 1
        except OSError:
            os.close(fd)
    return count
