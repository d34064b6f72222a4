"""The CR files the local mode is driven by: read them, and notice when they change.

The local mode plays the part of the Kubernetes API: the folder is the desired state, re-read whenever a
file in it changes; a bad edit is reported and the last good state stays in force (as an API server would
reject the object and keep the old one)."""

from __future__ import annotations

from pathlib import Path

from ..crfiles import InvalidResources, resource_files
from ..crfiles import load_resources as load_cr_files
from ..reconcilers.hydrate import Resources

__all__ = ["ResourceError", "Resources", "fingerprint", "load_resources", "with_sensor_count"]


class ResourceError(ValueError):
    """A CR folder could not be used; the message names the file, the document and the field."""


def load_resources(directory: Path) -> Resources:
    """Every weatherfleet CR in the folder, read and validated as `weatherfleet render` does; the local
    mode needs at least one SensorFleet."""
    try:
        resources, _skipped = load_cr_files(Path(directory))
    except InvalidResources as error:
        raise ResourceError("; ".join(str(p) for p in error.problems)) from None
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
    for path in resource_files(Path(directory)):
        stat = path.stat()
        entries.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(entries)
