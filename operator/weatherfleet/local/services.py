"""How the local mode starts the ingest service: `weatherfleet ingest` as a subprocess writing SQLite."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from ..services.process import port_open
from .workdir import Workdir


def ingest_command(
    host: str, port: int, mqtt: Path, workdir: Workdir, metrics_port: int, username: str | None = None
) -> tuple[list[str], Callable[[], bool]]:
    """`mqtt`: the mounted client certificate folder (ca.crt, tls.crt, tls.key); `username` with NanoMQ
    logins (the password goes in MQTT_PASSWORD, never on the command line)."""
    argv = [
        sys.executable, "-m", "weatherfleet.cli", "ingest",
        "--broker-host", host,
        "--broker-port", str(port),
        "--ca", str(mqtt / "ca.crt"),
        "--cert", str(mqtt / "tls.crt"),
        "--key", str(mqtt / "tls.key"),
        "--store", "sqlite",
        "--sqlite-path", str(workdir.store_path),
        "--state-dir", str(workdir.root / "ingest-state"),
        "--batch-delay", "0.5",
        "--metrics-port", str(metrics_port),
    ]  # fmt: skip
    if username:
        argv += ["--mqtt-username", username]
    return argv, lambda: port_open(metrics_port)
