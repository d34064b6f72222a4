"""Provision an emulated board as `weatherfleet provision` provisions a real one: a MicroPython image in
ota_0, the firmware bundle's files, the fleet CA with the device's certificate and key, config.json.

Emulated boards get bundles built with `--emit py` (CPython cannot execute .mpy bytecode)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from .device import Device

DEFAULT_FEATURES = ("bme280", "scd30", "sds011", "tls", "mtls", "ota", "influx")


def build_bundle(
    version: str, features: tuple[str, ...] | list[str] = DEFAULT_FEATURES, source: Path | None = None
) -> dict[str, bytes]:
    """Board path -> bytes of a bundle built by the real pipeline (sources, for CPython)."""
    from weatherfleet.firmware import build

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bundle"
        manifest = build.build(list(features), version, out, source=source or build.DEFAULT_SOURCE, emit="py")
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
    """A config.json in the device code's schema (docs/firmware-device.md)."""
    sensors = []
    if "bme280" in features:
        sensors.append({"type": "bme280", "bus": 0, "scl": 22, "sda": 21, "address": 0x76})
    if "scd30" in features:
        sensors.append({"type": "scd30", "bus": 0, "scl": 22, "sda": 21, "address": 0x61})
    if "sds011" in features:
        sensors.append({"type": "sds011", "uart": 2, "tx": 17, "rx": 16})
    config: dict[str, Any] = {
        "device": device_id,
        "location": location,
        "firmwareVersion": version,  # what the device reports until an OTA update records its own
        "broker": {"host": broker[0], "port": broker[1], "tls": "tls" in features, "keepalive": 30},
        "measurementIntervalSeconds": interval,
        "features": list(features),
        "sensors": sensors,
        "tls": {"ca": "certs/ca.pem", "cert": "certs/device.pem", "key": "certs/device.key"},
    }
    if wifi:
        config["wifi"] = {"ssid": wifi[0], "password": wifi[1]}
    if ota:
        config["ota"] = {
            "host": ota[0],
            "port": ota[1],
            "checkIntervalSeconds": 3600,
            "jitterSeconds": 0,
            "kind": "bundle",
        }
        config["signingKeys"] = list(signing_keys or [])
    config.update(extra)
    return config


def provision(
    device: Device, config: dict[str, Any], bundle: dict[str, bytes], *, ca: Path, cert: Path, key: Path
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
