"""How the local mode starts the ingest service: `weatherfleet ingest` as a subprocess writing SQLite."""

from __future__ import annotations

import sys
from collections.abc import Callable

from ..mqtt import MqttSettings
from .workdir import Workdir


def ingest_command(settings: MqttSettings, workdir: Workdir) -> tuple[list[str], Callable[[], bool]]:
    argv = [
        sys.executable,
        "-m",
        "weatherfleet.cli",
        "ingest",
        "--mqtt-url",
        f"mqtts://{settings.host}:{settings.port}",
        "--mqtt-ca",
        str(settings.ca),
        "--mqtt-cert",
        str(settings.cert),
        "--mqtt-key",
        str(settings.key),
        "--sqlite",
        str(workdir.store_path),
        "--spool",
        str(workdir.root / "ingest-spool"),
    ]
    log = workdir.logs / "ingest.log"
    return argv, lambda: workdir.store_path.exists() and log.exists()
