"""Provision an emulated board as `weatherfleet provision` provisions a real one: a MicroPython image in
ota_0, the firmware bundle's files, the fleet CA with the device's certificate and key, config.json.

Emulated boards run what real ones run: the `.mpy` bundle `weatherfleet firmware build` makes (boot.py and
main.py as source, every other file compiled), executed by the MicroPython VM."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from .board import Board

DEFAULT_FEATURES = ("bme280", "scd30", "sds011", "tls", "mtls", "ota", "influx")


def build_bundle(
    version: str,
    features: tuple[str, ...] | list[str] = DEFAULT_FEATURES,
    source: Path | None = None,
    emit: str = "mpy",
) -> dict[str, bytes]:
    """Board path -> bytes of a bundle built by the real pipeline (.mpy files, as real boards get)."""
    from weatherfleet.firmware import build

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bundle"
        manifest = build.build(list(features), version, out, source=source or build.DEFAULT_SOURCE, emit=emit)
        files = {f.path: (out / f.path).read_bytes() for f in manifest.files}
        files["manifest.json"] = (out / "manifest.json").read_bytes()
    return files


def device_config(
    device_id: str,
    *,
    broker: tuple[str, int],
    version: str,
    location: str = "lab",
    features: tuple[str, ...] | list[str] = DEFAULT_FEATURES,
    ota: tuple[str, int] | None = None,
    signing_keys: list[str] | None = None,
    interval: int = 5,
    wifi: tuple[str, str] | None = ("weatherfleet", "weatherfleet-wifi"),
    **extra: Any,
) -> dict[str, Any]:
    """A config.json for a board with these build features, made by the same function `weatherfleet
    provision` and the local mode use (from a WeatherSensor), so emulated boards boot from what real ones
    get. `extra` overrides top-level keys (e.g. bufferSize)."""
    from weatherfleet.models import WeatherSensor
    from weatherfleet.provisioning.deviceconfig import Endpoints, Timing
    from weatherfleet.provisioning.deviceconfig import device_config as config_for_sensor

    sensor = WeatherSensor.model_validate(
        {
            "metadata": {"name": device_id},
            "spec": {
                "deviceId": device_id,
                "location": location,
                "sensors": [{"type": t} for t in ("bme280", "scd30", "sds011") if t in features],
                "features": {
                    "payload": "json" if "json" in features else "influx",
                    "tls": "tls" in features,
                    "mtls": "mtls" in features,
                    "ota": "ota" in features,
                },
            },
        }
    )
    ota_host, ota_port = ota or ("127.0.0.1", 8080)
    config = config_for_sensor(
        sensor,
        None,
        Endpoints(broker_host=broker[0], broker_port=broker[1], ota_host=ota_host, ota_port=ota_port),
        list(signing_keys or []),
        Timing(measurement_interval=interval, check_interval=3600, jitter=0, keepalive=30),
        wifi={"ssid": wifi[0], "password": wifi[1]} if wifi else None,
        firmware_version=version,
    )
    config.update(extra)
    return config


def provision(
    device: Board, config: dict[str, Any], bundle: dict[str, bytes], *, ca: Path, cert: Path, key: Path
) -> None:
    import hashlib
    import json

    device.flash_firmware()
    device.install(bundle)
    device.install(
        {
            "certs/ca.pem": Path(ca).read_bytes(),
            "certs/device.pem": Path(cert).read_bytes(),
            "certs/device.key": Path(key).read_bytes(),
        }
    )
    # the file index the device's OTA client keeps per slot (slots.read_index): with it, the first update
    # already fetches only the files whose digest changed
    index = {
        path: "sha256:" + hashlib.sha256(data).hexdigest()
        for path, data in bundle.items()
        if path != "manifest.json"
    }
    device.install({"files.json": json.dumps(index)})
    device.install({"config.json": json.dumps(config, indent=2)})
