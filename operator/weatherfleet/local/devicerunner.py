"""The emulated fleet: `python -m weatherfleet.local.devicerunner SPEC.json`.

Reads the device list the local mode wrote (id, flash folder, sensors, location, heap cap), powers each
devicesim Board — one `micropython` process per board, the real MicroPython VM running the .mpy bundle on
its flash with a capped heap, its hardware played by this process on one asyncio loop — and runs until
SIGTERM/SIGINT, when every board is stopped (its flash stays in the workdir, so the next start is a power
cycle, not a new board). Each board's console goes to this process's log, prefixed with its id."""

from __future__ import annotations

import asyncio
import hashlib
import signal
import sys
from pathlib import Path

from pydantic import BaseModel

from devicesim import Board
from devicesim.sensors import Environment


class DeviceSpec(BaseModel):
    device: str
    root: Path
    sensors: list[str]
    location: str
    heap: int | str | None = None  # the VM's heap cap (-X heapsize); None: devicesim's default
    i2c_addresses: dict[str, int] = {}  # sensor type -> the I2C address the WeatherSensor wires it at


class RunnerSpec(BaseModel):
    devices: list[DeviceSpec]
    day_seconds: float = 86400.0  # the demo compresses a day into minutes so the charts have a shape
    echo: bool = True


def location_environment(location: str, day_seconds: float) -> Environment:
    """Devices of one location share its weather (a greenhouse is warmer and damper than a balcony); each
    device's sensors still add their own noise."""
    h = hashlib.sha256(location.encode()).digest()
    return Environment(
        seed=int.from_bytes(h[8:12], "big"),
        temperature=14.0 + h[0] % 16,
        humidity=35.0 + h[1] % 40,
        pressure=1000.0 + h[2] % 25,
        co2=700.0 + 10 * (h[3] % 50),  # never below the 400 ppm the sensor floor clamps to
        pm25=3.0 + h[4] % 20,
        pm10=8.0 + h[5] % 30,
        day_seconds=day_seconds,
    )


async def run(spec: RunnerSpec) -> None:
    devices = []
    for item in spec.devices:
        seed = int(hashlib.sha256(item.device.encode()).hexdigest()[:8], 16)
        device = Board(
            item.device,
            item.root,
            sensors=tuple(item.sensors),
            environment=location_environment(item.location, spec.day_seconds),
            seed=seed,
            echo=spec.echo,
            heap=item.heap,
            i2c_addresses=item.i2c_addresses,
        )
        if not any(device.partitions.application(s) for s in device.partitions.app_slots()):
            device.flash_firmware()  # a new board: MicroPython first, as esptool would write it
        devices.append(device)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    for device in devices:
        device.start()
    print(f"devicerunner: {len(devices)} devices powered on", flush=True)
    await stop.wait()
    await asyncio.gather(*(d.stop() for d in devices), return_exceptions=True)
    print("devicerunner: all devices stopped", flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spec = RunnerSpec.model_validate_json(Path(argv[0]).read_text())
    asyncio.run(run(spec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
