"""Collect the HTML report's data from a local run: the store's series (through the ingest query
interface), the devices' state and the rollout timeline."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta

from ..local.system import LocalSystem
from ..messages import FIELDS, SENSOR_FIELDS
from .report import Check, DeviceSummary, ReportData


def location_series(
    system: LocalSystem, start: datetime, end: datetime, points: int = 90, min_bucket: float = 10.0
) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """field -> location -> [(t, mean over the location's devices)], bucketed so a long run stays light;
    a bucket spans at least `min_bucket` seconds (two measurement intervals, so that every device of the
    location is in every bucket and the mean does not jump with who happened to report)."""
    store = system.store()
    if store is None:
        return {}
    bucket = max(min_bucket, (end - start).total_seconds() / points)
    sums: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    for sensor in system.resources.sensors:
        fields = [f for s in sensor.spec.sensors for f in SENSOR_FIELDS[s.type]]
        for field in fields:
            for point in store.series(sensor.spec.device_id, field, start, end):
                slot = int((point.time - start).total_seconds() // bucket)
                sums[(field, sensor.spec.location, slot)].append(point.value)
    result: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for (field, location, slot), values in sorted(sums.items()):
        t = start.timestamp() + (slot + 0.5) * bucket
        result.setdefault(field, {}).setdefault(location, []).append((t, sum(values) / len(values)))
    return {f: result[f] for f in FIELDS if f in result}


def collect(
    system: LocalSystem,
    title: str,
    checks: list[Check] | None = None,
    start: datetime | None = None,
    min_bucket: float = 10.0,
) -> ReportData:
    end = datetime.now(UTC) + timedelta(seconds=1)
    events = system.timeline.events()
    start = start or (min((e.time for e in events), default=end - timedelta(minutes=10)))
    store = system.store()
    devices = []
    for row in system.device_rows():
        readings = len(store.series(row.device, "temperature", start, end)) if store else 0
        devices.append(
            DeviceSummary(
                device=row.device,
                location=row.location,
                online=bool(row.online),
                firmware=row.reported,
                desired=row.desired,
                ota_state=row.ota_state,
                last_seen=row.last_seen,
                readings=readings,
            )
        )
    return ReportData(
        title=title,
        measurements=location_series(system, start, end, min_bucket=min_bucket),
        timeline=[e for e in events if e.time >= start],
        devices=devices,
        checks=checks or [],
    )
