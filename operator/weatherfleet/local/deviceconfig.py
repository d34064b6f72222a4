"""A device's `config.json` (schema: docs/firmware-device.md) from its WeatherSensor, and the file set a
board needs: config, CA, client certificate and key. Shared by `weatherfleet provision` (a real board)
and the local mode (emulated boards), so both boot from exactly the same files."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from ..models import SensorFleet, WeatherSensor
from ..pki import LocalCA

CA_PATH = "certs/ca.pem"
CERT_PATH = "certs/device.pem"
KEY_PATH = "certs/device.key"


class Endpoints(BaseModel):
    broker_host: str
    broker_port: int
    ota_host: str
    ota_port: int
    ota_tls: bool = False


class Timing(BaseModel):
    """Overrides for a time-compressed run (the demo); None keeps the WeatherSensor's own values."""

    measurement_interval: int | None = None
    check_interval: int | None = None
    jitter: int | None = None
    keepalive: int = 60


def device_config(
    sensor: WeatherSensor,
    fleet: SensorFleet | None,
    endpoints: Endpoints,
    signing_keys: list[str],
    timing: Timing | None = None,
    wifi: dict[str, str] | None = None,
    firmware_version: str | None = None,
) -> dict:
    timing = timing or Timing()
    spec = sensor.spec
    sensors = []
    for s in spec.sensors:
        if s.i2c is not None:
            sensors.append(
                {
                    "type": s.type,
                    "bus": s.i2c.bus,
                    "scl": s.i2c.scl,
                    "sda": s.i2c.sda,
                    "address": s.i2c.address,
                }
            )
        else:
            sensors.append({"type": s.type, "uart": s.uart.id, "tx": s.uart.tx, "rx": s.uart.rx})
    config: dict = {
        "device": spec.device_id,
        "location": spec.location,
        "broker": {
            "host": endpoints.broker_host,
            "port": endpoints.broker_port,
            "tls": spec.features.tls,
            "keepalive": timing.keepalive,
            "username": None,
            "password": None,
        },
        "ota": {
            "host": endpoints.ota_host,
            "port": endpoints.ota_port,
            "tls": endpoints.ota_tls,
            "checkIntervalSeconds": timing.check_interval or spec.firmware.check_interval_seconds,
            "jitterSeconds": spec.firmware.jitter_seconds if timing.jitter is None else timing.jitter,
            "kind": "bundle",
        },
        "measurementIntervalSeconds": timing.measurement_interval or spec.measurement_interval_seconds,
        "features": spec.firmware_features(),
        "sensors": sensors,
        "tls": {"ca": CA_PATH, "cert": CERT_PATH, "key": KEY_PATH},
        "signingKeys": list(signing_keys),
        "topicPrefix": fleet.spec.broker.topic_prefix if fleet else "sensors",
        "otaTopic": "ota",
        "bufferSize": 32,
        "watchdogSeconds": 120,
    }
    if wifi:
        config["wifi"] = wifi
    if firmware_version:
        config["firmwareVersion"] = firmware_version  # what the device reports until its first OTA
    return config


def device_files(ca: LocalCA, config: dict) -> dict[str, bytes]:
    """Board path -> content: config, CA, and the device's client certificate and key (CN = deviceId)."""
    issued = ca.issue(config["device"])
    return {
        # UTF-8, not \\u escapes: MicroPython's json turns an escaped surrogate pair (an emoji in a
        # location) into invalid UTF-8 instead of one character (issue 14)
        "config.json": (json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode(),
        CA_PATH: Path(issued.ca).read_bytes(),
        CERT_PATH: Path(issued.cert).read_bytes(),
        KEY_PATH: Path(issued.key).read_bytes(),
    }
