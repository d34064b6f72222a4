"""The emulated devices of the local mode: their flash folders in the workdir, the files provisioning puts
there, the factory firmware, and the device runner subprocess that powers them."""

from __future__ import annotations

import sys
from pathlib import Path

from ..models import WeatherSensor
from .devicerunner import DeviceSpec, RunnerSpec
from .supervisor import Supervisor
from .workdir import Workdir, write_atomically

RUNNER = "devices"
# one asyncio loop keeps up with a few hundred boards publishing every few seconds (bench/fleet.py)
DEVICES_PER_RUNNER = 250


class DeviceFleet:
    def __init__(
        self, supervisor: Supervisor, workdir: Workdir, day_seconds: float = 86400.0, name: str = RUNNER
    ) -> None:
        self.supervisor = supervisor
        self.workdir = workdir
        self.day_seconds = day_seconds
        self.name = name  # one runner process per DeviceFleet: a big fleet spreads over several
        self.echo = True  # device consoles into the runner's log
        self.per_runner = DEVICES_PER_RUNNER
        self.running: list[str] = []

    def root(self, device_id: str) -> Path:
        return self.workdir.device_dir(device_id)

    def provisioned(self, device_id: str) -> bool:
        return (self.root(device_id) / "fs" / "config.json").exists()

    def install(
        self, sensor: WeatherSensor, files: dict[str, bytes], factory: dict[str, bytes] | None
    ) -> None:
        """Provision one emulated board: config and certificates every time (endpoints may have moved),
        the factory firmware only on a new board (an updated board keeps what it installed)."""
        from devicesim import Flash

        flash = Flash(self.root(sensor.spec.device_id))
        new_board = not (flash.fs_root / "config.json").exists()
        flash.install(files)
        if new_board and factory:
            flash.install(factory)

    def start(self, sensors: list[WeatherSensor]) -> None:
        """(Re)start the runners with this device list; a restart is a power cycle for every board. A big
        fleet is spread over several runner processes (one asyncio loop each), so it uses every core."""
        chunks = [sensors[i : i + self.per_runner] for i in range(0, len(sensors), self.per_runner)] or [[]]
        names = [self.name] if len(chunks) == 1 else [f"{self.name}-{i + 1}" for i in range(len(chunks))]
        for old in self.running:
            self.supervisor.stop(old)
        self.running = []
        for name, chunk in zip(names, chunks, strict=True):
            self._start_runner(name, chunk)
            self.running.append(name)

    def _start_runner(self, name: str, sensors: list[WeatherSensor]) -> None:
        spec = RunnerSpec(
            devices=[
                DeviceSpec(
                    device=s.spec.device_id,
                    root=self.root(s.spec.device_id),
                    sensors=[x.type for x in s.spec.sensors],
                    i2c_addresses={x.type: x.i2c.address for x in s.spec.sensors if x.i2c and x.i2c.address},
                    location=s.spec.location,
                )
                for s in sensors
            ],
            day_seconds=self.day_seconds,
            echo=self.echo,
        )
        spec_path = self.workdir.root / f"{name}.json"
        write_atomically(spec_path, spec.model_dump_json(indent=2))
        log = self.workdir.logs / f"{name}.log"
        offset = log.stat().st_size if log.exists() else 0
        self.supervisor.start(
            name,
            [sys.executable, "-m", "weatherfleet.local.devicerunner", str(spec_path)],
            lambda: b"devices powered on" in _tail(log, offset),
            timeout=300,
        )


def _tail(path: Path, offset: int) -> bytes:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return f.read()
    except OSError:
        return b""
