"""An emulated ESP32 board: flash, partitions, sensors, Wi-Fi, watchdog, and the boot loop that runs the
real boot.py and main.py from its flash.

Every boot gets fresh shims and a fresh module table (a reset loses RAM; flash survives). boot.py and
main.py run in one `__main__` namespace in a thread of their own, as the REPL would run them; when
main.py calls `asyncio.run(...)` the coroutine runs on the ONE shared asyncio loop and that thread only
waits, so hundreds of devices share a loop without blocking each other. A reset (machine.reset, watchdog,
power cut, `Device.power_cycle`) cancels the boot's tasks, closes its sockets and boots again."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import hashlib
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import esp_image
from .clock import DeviceClock
from .errors import DeviceReset, PowerCut
from .flash import Flash
from .importer import DeviceImporter
from .partition import PartitionTable
from .sensors import BME280, SCD30, SDS011, Environment
from .shims import SHIMS

PWRON_RESET, HARD_RESET, WDT_RESET, DEEPSLEEP_RESET, SOFT_RESET = 1, 2, 3, 4, 5
CAUSE_NAMES = {1: "power_on", 2: "hard", 3: "watchdog", 4: "deepsleep", 5: "soft"}


class DeviceConfigError(ValueError):
    pass


class DeviceState(enum.StrEnum):
    OFF = "off"
    BOOTING = "booting"
    RUNNING = "running"  # main.py handed its coroutine to the loop
    IDLE = "idle"  # main.py ended or raised: the REPL would be waiting
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


class Boot:
    """What lives in RAM for one boot: the shims, the module table, tasks and sockets."""

    def __init__(self, device: Device, number: int, cause: int, frozen: dict[str, bytes]) -> None:
        self.device, self.number, self.cause = device, number, cause
        self.alive = True
        self.end_reason: tuple[int, str] | None = None
        self.ended = threading.Event()
        self.tasks: set[asyncio.Task] = set()
        self.closers: set[Callable[[], None]] = set()
        self.wakers: list[threading.Event] = []
        self.cwd = "/"
        self.wifi_joined: bool | None = None  # None: the code never used WLAN (lenient for host-side tests)
        self.wdt_timeout_ms: int | None = None
        self.wdt_fed_at = 0.0
        self.importer = DeviceImporter(self, SHIMS, frozen)
        self.importer.load("sys")
        self.namespace: dict[str, Any] = {"__name__": "__main__"}

    def check(self) -> None:
        """Raise into code that still runs after its boot ended (it cannot touch hardware any more)."""
        if not self.alive:
            cause, reason = self.end_reason or (HARD_RESET, "reset")
            raise DeviceReset(cause, reason)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self.device.loop


class Device:
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
    ) -> None:
        self.device_id = device_id
        self.seed = seed if seed is not None else int(hashlib.sha256(device_id.encode()).hexdigest()[:8], 16)
        self.root = Path(root)
        self.clock = DeviceClock()
        self.flash = Flash(self.root)
        self.flash.on_power_cut = lambda: self.request_reset(self.boot, PWRON_RESET, "power cut")
        self.partitions = PartitionTable(self.flash)
        self.environment = environment or Environment(seed=self.seed)
        self.wifi = wifi or WifiNetwork()
        self.echo = echo
        self.reboot_delay = reboot_delay
        self.i2c: dict[int, Any] = {}
        self.uart: dict[int, Any] = {}
        world, now = self.environment.at, self.clock.monotonic
        if "bme280" in sensors:
            self.bme280 = self.i2c[0x76] = BME280(now, world, 0x76, seed=self.seed)
        if "scd30" in sensors:
            self.scd30 = self.i2c[0x61] = SCD30(now, world)
        if "sds011" in sensors:
            self.sds011 = self.uart[2] = SDS011(now, world, self.seed, sds011_noise, sds011_corruption)
        self.console: collections.deque[str] = collections.deque(maxlen=4000)
        self._console_changed = threading.Condition()
        self.boots: list[BootRecord] = []
        self.boot: Boot | None = None
        self.state = DeviceState.OFF
        self.loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._wake: asyncio.Event | None = None
        self._stopping = False
        self.unique_id = hashlib.sha256(f"esp32:{device_id}".encode()).digest()[:6]

    # -- provisioning ---------------------------------------------------------------------------------
    def install(self, files: dict[str, bytes | str]) -> None:
        self.flash.install(files)

    def flash_firmware(self, frozen: dict[str, bytes | str] | None = None, slot: str = "ota_0") -> None:
        """esptool: write a MicroPython image (optionally with frozen modules) to a slot."""
        self.partitions.flash_image(slot, esp_image.build_image(esp_image.application_zip(frozen or {})))

    # -- console --------------------------------------------------------------------------------------
    def log(self, text: str) -> None:
        with self._console_changed:
            for line in text.splitlines() or [""]:
                self.console.append(line)
                if self.echo:
                    print(f"[{self.device_id}] {line}", flush=True)
            self._console_changed.notify_all()

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
        self._task = self.loop.create_task(self._run(), name=f"device-{self.device_id}")
        return self._task

    async def stop(self) -> None:
        self._stopping = True
        if self.boot:
            self.request_reset(self.boot, PWRON_RESET, "stopped")
        if self._task:
            await asyncio.gather(self._task, return_exceptions=True)
        self.state = DeviceState.STOPPED

    def set_wifi(self, up: bool) -> None:
        """The access point comes or goes. Going away also breaks the board's open connections (lwIP
        reports the dead link on the next read or write), as a real station losing its AP would see."""
        self.wifi.up = up
        if not up and self.boot and self.loop:
            boot = self.boot

            def abort_all() -> None:
                for close in list(boot.closers):
                    with contextlib.suppress(Exception):
                        close()

            self.loop.call_soon_threadsafe(abort_all)

    def power_cycle(self) -> None:
        if self.boot:
            self.request_reset(self.boot, PWRON_RESET, "power cycle")

    def request_reset(self, boot: Boot | None, cause: int, reason: str) -> None:
        """End `boot` (thread-safe; the first request wins)."""
        if boot is None or not boot.alive:
            return
        boot.alive = False
        boot.end_reason = (cause, reason)
        boot.ended.set()
        for wake in list(boot.wakers):
            wake.set()
        if self.loop and self._wake:
            # a closed loop raises RuntimeError: then nothing is left to wake
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self._wake.set)

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
            application = self.partitions.application(slot) if slot else None
            frozen = esp_image.frozen_modules(application) if application else {}
            boot = Boot(self, len(self.boots) + 1, cause, {k: v for k, v in frozen.items()})
            record = BootRecord(boot.number, cause, slot)
            self.boots.append(record)
            self.boot = boot
            self._wake.clear()
            self.log(f"devicesim: boot {boot.number} ({CAUSE_NAMES[cause]}) slot={slot}")
            threading.Thread(
                target=self._interpret,
                args=(boot, record),
                daemon=True,
                name=f"{self.device_id}-boot{boot.number}",
            ).start()
            while not boot.ended.is_set():
                try:
                    await asyncio.wait_for(self._wake.wait(), 0.2)
                except TimeoutError:
                    self._check_watchdog(boot)
                self._wake.clear()
            cause, reason = boot.end_reason or (HARD_RESET, "reset")
            record.reason = reason
            await self._teardown(boot)
            self.log(f"devicesim: reset ({reason})")
            if not self._stopping:
                await asyncio.sleep(self.reboot_delay)

    def _has_firmware(self) -> bool:
        return any(self.partitions.application(s) is not None for s in self.partitions.app_slots())

    def _check_watchdog(self, boot: Boot) -> None:
        if boot.wdt_timeout_ms is None:
            return
        if (self.clock.monotonic() - boot.wdt_fed_at) * 1000 > boot.wdt_timeout_ms:
            self.log("devicesim: watchdog timeout")
            self.request_reset(boot, WDT_RESET, "watchdog")

    async def _teardown(self, boot: Boot) -> None:
        for close in list(boot.closers):
            with contextlib.suppress(Exception):
                close()
        tasks = [t for t in boot.tasks if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)

    def _interpret(self, boot: Boot, record: BootRecord) -> None:
        """boot.py, then main.py, in `__main__`, like MicroPython's pyexec."""
        for script in ("boot.py", "main.py"):
            try:
                if not boot.importer.run_file(script, boot.namespace):
                    continue
            except DeviceReset:
                return
            except SystemExit:
                break
            except BaseException as error:
                if not boot.alive:
                    return
                record.error = f"{type(error).__name__}: {error}"
                self.log("".join(traceback.format_exception(error)).rstrip())
        if boot.alive:
            self.state = DeviceState.IDLE
            self.log("MicroPython REPL (main.py ended)")
