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


class DeviceFleet:
    def __init__(self, supervisor: Supervisor, workdir: Workdir, day_seconds: float = 86400.0) -> None:
        self.supervisor = supervisor
        self.workdir = workdir
        self.day_seconds = day_seconds
        self.spec_path = workdir.root / "devices.json"

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
        """(Re)start the runner with this device list; a restart is a power cycle for every board."""
        spec = RunnerSpec(
            devices=[
                DeviceSpec(
                    device=s.spec.device_id,
                    root=self.root(s.spec.device_id),
                    sensors=[x.type for x in s.spec.sensors],
                    location=s.spec.location,
                )
                for s in sensors
            ],
            day_seconds=self.day_seconds,
        )
        write_atomically(self.spec_path, spec.model_dump_json(indent=2))
        self.supervisor.stop(RUNNER)
        log = self.workdir.logs / f"{RUNNER}.log"
        offset = log.stat().st_size if log.exists() else 0
        self.supervisor.start(
            RUNNER,
            [sys.executable, "-m", "weatherfleet.local.devicerunner", str(self.spec_path)],
            lambda: b"devices powered on" in _tail(log, offset),
        )


def _tail(path: Path, offset: int) -> bytes:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return f.read()
    except OSError:
        return b""
