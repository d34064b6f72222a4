"""Fixtures for the foundation tests: CR builders as plain dicts (what a user writes), and paths."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "gitops" / "examples"
SHARED_SCHEMAS = REPO.parent / "shared" / "schemas"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def sensor_doc(device: str = "dev-01", fleet: str = "garden", **spec: Any) -> dict[str, Any]:
    doc = {
        "apiVersion": "weatherfleet.io/v1alpha1",
        "kind": "WeatherSensor",
        "metadata": {"name": device, "namespace": "weatherfleet", "labels": {"weatherfleet.io/fleet": fleet}},
        "spec": {"deviceId": device, "location": "garden", "sensors": [{"type": "bme280"}]},
    }
    doc["spec"].update(spec)
    return doc


def fleet_doc(name: str = "garden", **spec: Any) -> dict[str, Any]:
    doc = {
        "apiVersion": "weatherfleet.io/v1alpha1",
        "kind": "SensorFleet",
        "metadata": {"name": name, "namespace": "weatherfleet"},
        "spec": {"selector": {"matchLabels": {"weatherfleet.io/fleet": name}}},
    }
    doc["spec"].update(spec)
    return doc


def release_doc(name: str = "fw-1-1-0", version: str = "1.1.0", **spec: Any) -> dict[str, Any]:
    doc = {
        "apiVersion": "weatherfleet.io/v1alpha1",
        "kind": "FirmwareRelease",
        "metadata": {"name": name, "namespace": "weatherfleet"},
        "spec": {
            "version": version,
            "artifact": {"repository": "registry.example:5000/firmware/{deviceId}", "tag": version},
        },
    }
    doc["spec"].update(spec)
    return doc


def with_path(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of `doc` with the dotted `path` set (list indexes as numbers: spec.sensors.0.type)."""
    out = copy.deepcopy(doc)
    node: Any = out
    parts = path.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return out


@pytest.fixture
def now() -> datetime:
    return NOW


class Builders:
    sensor = staticmethod(sensor_doc)
    fleet = staticmethod(fleet_doc)
    release = staticmethod(release_doc)
    with_path = staticmethod(with_path)
    now = NOW
    repo = REPO
    examples = EXAMPLES
    shared_schemas = SHARED_SCHEMAS


@pytest.fixture
def build() -> type[Builders]:
    """Builders for CR documents (as a user writes them) and the paths the tests use."""
    return Builders
