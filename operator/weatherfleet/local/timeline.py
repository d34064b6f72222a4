"""The rollout timeline of a local run: wave openings, halts, completions, pushes and device OTA outcomes,
appended as JSON lines to the workdir (so a restarted `up` keeps its history) and read by the report."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

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
