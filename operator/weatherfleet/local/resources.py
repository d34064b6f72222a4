"""The CR files the local mode is driven by: read them, and notice when they change.

The local mode plays the part of the Kubernetes API: the folder is the desired state, re-read whenever a
file in it changes; a bad edit is reported and the last good state stays in force (as an API server would
reject the object and keep the old one)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import ValidationError

from ..models import KINDS, FirmwareRelease, SensorFleet, WeatherSensor

CR_SUFFIXES = (".yaml", ".yml")


class ResourceError(ValueError):
    """A CR file could not be used; the message names the file, the document and the field."""


@dataclass
class Resources:
    sensors: list[WeatherSensor] = field(default_factory=list)
    fleets: list[SensorFleet] = field(default_factory=list)
    releases: list[FirmwareRelease] = field(default_factory=list)

    def members(self, fleet: SensorFleet) -> list[WeatherSensor]:
        """The sensors a fleet's selector picks, in its namespace, sorted by device id."""
        return sorted(
            (
                s
                for s in self.sensors
                if s.metadata.namespace == fleet.metadata.namespace
                and fleet.spec.selector.matches(s.metadata.labels)
            ),
            key=lambda s: s.spec.device_id,
        )

    def release(self, namespace: str, name: str | None) -> FirmwareRelease | None:
        return next(
            (r for r in self.releases if r.metadata.namespace == namespace and r.metadata.name == name),
            None,
        )

    def sensor(self, device_id: str) -> WeatherSensor | None:
        return next((s for s in self.sensors if s.spec.device_id == device_id), None)


def _error_path(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(document)"
    return f"{where}: {first['msg']}"


def load_resources(directory: Path) -> Resources:
    """Every weatherfleet CR in the folder's YAML files (multi-document). Other kinds are skipped, since a
    GitOps folder holds more than our resources."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ResourceError(f"{directory}: not a folder of CR files")
    resources = Resources()
    seen: dict[tuple[str, str, str], str] = {}
    device_ids: dict[str, str] = {}
    for path in sorted(p for p in directory.rglob("*") if p.suffix in CR_SUFFIXES and p.is_file()):
        try:
            documents = list(yaml.safe_load_all(path.read_text()))
        except yaml.YAMLError as error:
            raise ResourceError(f"{path}: not valid YAML: {error}") from None
        for index, document in enumerate(documents, start=1):
            if not isinstance(document, dict) or document.get("kind") not in KINDS:
                continue
            if not str(document.get("apiVersion", "")).startswith("weatherfleet.io/"):
                continue
            where = f"{path}, document {index} ({document['kind']})"
            try:
                resource = KINDS[document["kind"]].model_validate(document)
            except ValidationError as error:
                raise ResourceError(f"{where}: {_error_path(error)}") from None
            key = (resource.kind, resource.metadata.namespace, resource.metadata.name)
            if key in seen:
                raise ResourceError(f"{where}: {resource.kind} {resource.metadata.name} also in {seen[key]}")
            seen[key] = where
            if isinstance(resource, WeatherSensor):
                if resource.spec.device_id in device_ids:
                    raise ResourceError(
                        f"{where}: deviceId {resource.spec.device_id} is already used in "
                        f"{device_ids[resource.spec.device_id]}"
                    )
                device_ids[resource.spec.device_id] = where
                resources.sensors.append(resource)
            elif isinstance(resource, SensorFleet):
                resources.fleets.append(resource)
            else:
                resources.releases.append(resource)
    if not resources.fleets:
        raise ResourceError(f"{directory}: no SensorFleet found; the local mode needs one")
    return resources


def with_sensor_count(resources: Resources, count: int | None) -> Resources:
    """`--sensors N`: the folder's sensors first, then clones of them (same labels and location, so the
    fleet selectors pick them too) named `<deviceId>-sN`, until there are N."""
    if count is None or count == len(resources.sensors):
        return resources
    if not resources.sensors:
        raise ResourceError("--sensors needs at least one WeatherSensor in the folder to copy")
    templates = resources.sensors
    sensors = list(templates[:count])
    for i in range(len(templates), count):
        template = templates[i % len(templates)]
        device_id = f"{template.spec.device_id[:56]}-s{i + 1}"
        clone = template.model_copy(deep=True)
        clone.metadata.name = device_id
        clone.spec = clone.spec.model_copy(update={"device_id": device_id})
        sensors.append(clone)
    return Resources(sensors=sensors, fleets=resources.fleets, releases=resources.releases)


def fingerprint(directory: Path) -> tuple[tuple[str, int, int], ...]:
    """Changes when a CR file is added, removed or written (polled; no inotify dependency)."""
    entries = []
    for path in sorted(Path(directory).rglob("*")):
        if path.suffix in CR_SUFFIXES and path.is_file():
            stat = path.stat()
            entries.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(entries)
