"""How the local mode starts the ingest service: `weatherfleet ingest` as a subprocess writing SQLite."""

from __future__ import annotations

import sys
from collections.abc import Callable

from ..mqtt import MqttSettings
from ..services.process import port_open
from .workdir import Workdir


def ingest_command(
    settings: MqttSettings, workdir: Workdir, metrics_port: int
) -> tuple[list[str], Callable[[], bool]]:
    argv = [
        sys.executable, "-m", "weatherfleet.cli", "ingest",
        "--broker-host", settings.host,
        "--broker-port", str(settings.port),
        "--ca", str(settings.ca),
        "--cert", str(settings.cert),
        "--key", str(settings.key),
        "--store", "sqlite",
        "--sqlite-path", str(workdir.store_path),
        "--state-dir", str(workdir.root / "ingest-state"),
        "--batch-delay", "0.5",
        "--metrics-port", str(metrics_port),
    ]  # fmt: skip
    return argv, lambda: port_open(metrics_port)
