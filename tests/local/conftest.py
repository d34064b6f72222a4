"""Fixtures of the local-mode suite: CR folders written at run time."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

FLEET = {
    "apiVersion": "weatherfleet.io/v1alpha1",
    "kind": "SensorFleet",
    "metadata": {"name": "garden", "namespace": "weatherfleet"},
    "spec": {
        "selector": {"matchLabels": {"weatherfleet.io/fleet": "garden"}},
        "broker": {
            "kind": "mosquitto",
            "host": "mosquitto",
            "aclConfigMap": "mosquitto-acl",
            "deployment": None,
        },
        "rollout": {
            "waves": [
                {"percent": 20, "bakeTime": "10s"},
                {"percent": 50, "bakeTime": "10s"},
                {"percent": 100, "bakeTime": "10s"},
            ],
            "failureThreshold": {"count": 1},
        },
    },
}


def sensor(device: str, location: str, sensors: tuple[str, ...] = ("bme280",)) -> dict:
    return {
        "apiVersion": "weatherfleet.io/v1alpha1",
        "kind": "WeatherSensor",
        "metadata": {
            "name": device,
            "namespace": "weatherfleet",
            "labels": {"weatherfleet.io/fleet": "garden"},
        },
        "spec": {
            "deviceId": device,
            "location": location,
            "sensors": [{"type": t} for t in sensors],
            "measurementIntervalSeconds": 5,
        },
    }


def release(version: str) -> dict:
    return {
        "apiVersion": "weatherfleet.io/v1alpha1",
        "kind": "FirmwareRelease",
        "metadata": {"name": "firmware-" + version.replace(".", "-"), "namespace": "weatherfleet"},
        "spec": {
            "version": version,
            "artifact": {
                "repository": "registry.weatherfleet.svc:5000/firmware/{deviceId}",
                "tag": version,
                "kind": "bundle",
            },
            "features": ["bme280", "influx", "tls", "mtls", "ota"],
            "signature": {
                "required": True,
                "publicKeyRef": {"name": "firmware-signing-key", "key": "ed25519.pub"},
            },
        },
    }


def write_crs(directory: Path, documents: list[dict], name: str = "fleet.yaml") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return path


@pytest.fixture
def cr_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "crs"
    write_crs(
        directory,
        [FLEET, sensor("dev-01", "garden"), sensor("dev-02", "roof", ("bme280", "scd30")), release("1.1.0")],
    )
    return directory
