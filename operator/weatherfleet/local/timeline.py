"""The rollout timeline of a local run: wave openings, halts, completions, pushes and device OTA outcomes,
appended as JSON lines to the workdir (so a restarted `up` keeps its history) and read by the report.
It records what the operator decided (fleet statuses read from the API) and what devices reported (the
local mode's MQTT view); it decides nothing."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from ..models.fleet import RolloutStatus
from ..rollout import DeviceObservation

EventKind = Literal["release", "wave", "halted", "paused", "complete", "push", "ota", "note"]


class TimelineEvent(BaseModel):
    time: datetime = Field(default_factory=lambda: datetime.now(UTC))
    kind: EventKind
    message: str
    fleet: str | None = None
    release: str | None = None
    version: str | None = None
    wave: int | None = Field(default=None, description="0-based wave index")
    percent: float | None = None
    device: str | None = None
    state: str | None = Field(default=None, description="the OTA event name for kind=ota")


class Timeline:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def append(self, event: TimelineEvent) -> TimelineEvent:
        with self._lock, self.path.open("a") as out:
            out.write(event.model_dump_json(exclude_none=True) + "\n")
        return event

    def events(self) -> list[TimelineEvent]:
        if not self.path.exists():
            return []
        events = []
        for line in self.path.read_text().splitlines():
            try:
                events.append(TimelineEvent.model_validate_json(line))
            except ValueError:
                continue  # a line torn by a crash mid-write costs that line only
        return events


def status_events(
    key: str, before: RolloutStatus, after: RolloutStatus, now: datetime
) -> list[TimelineEvent]:
    """What a person would want on the timeline when a fleet's rollout status moves."""
    common = {"time": now, "fleet": key, "release": after.release, "version": after.version}
    new_release = (before.release, before.version) != (after.release, after.version)
    events = []
    if after.phase in ("Progressing", "Halted", "Paused", "Complete") and (
        new_release or after.wave != before.wave
    ):
        events.append(
            TimelineEvent(
                kind="wave",
                wave=after.wave,
                percent=after.percent if after.phase == "Progressing" else None,
                message=f"{after.release} {after.version}: {after.reason}",
                **common,
            )
        )
    if after.phase != before.phase or new_release:
        kind = {"Halted": "halted", "Complete": "complete", "Paused": "paused"}.get(after.phase)
        if kind:
            events.append(
                TimelineEvent(
                    kind=kind,
                    wave=after.wave,
                    percent=after.percent,
                    message=f"{after.release} {after.version}: {after.reason}",
                    **common,
                )
            )
    return events


def device_events(
    before: dict[str, DeviceObservation], after: dict[str, DeviceObservation], now: datetime
) -> list[TimelineEvent]:
    """Firmware changes per device ('running' a version) and failed or rolled-back updates."""
    events = []
    for device, obs in sorted(after.items()):
        old = before.get(device)
        if obs.reported_version and (old is None or old.reported_version != obs.reported_version):
            events.append(
                TimelineEvent(
                    time=now,
                    kind="ota",
                    state="running",
                    device=device,
                    version=obs.reported_version,
                    message=f"{device} runs {obs.reported_version}",
                )
            )
        failed = obs.ota_state in ("rolled_back", "failed")
        if failed and (old is None or (old.ota_state, old.ota_version) != (obs.ota_state, obs.ota_version)):
            events.append(
                TimelineEvent(
                    time=now,
                    kind="ota",
                    state=obs.ota_state,
                    device=device,
                    version=obs.ota_version,
                    message=f"{device} {obs.ota_state.replace('_', ' ')} {obs.ota_version or ''}: "
                    f"{obs.ota_reason or ''}".rstrip(": "),
                )
            )
    return events
