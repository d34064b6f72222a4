"""The storage boundary: writes of points and the three queries the operator and the local report need.

Two implementations: `SQLiteStore` (embedded, local mode and small installations) and `InfluxStore`
(InfluxDB 3). Both are idempotent on (table, tags, time): redelivered messages do not double count."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Protocol

from pydantic import BaseModel

from .records import Point


class StoreUnavailable(RuntimeError):
    """The store cannot take writes right now (down, unreachable, misconfigured); spool and retry."""


class Unstorable(ValueError):
    """The store refused these points for their content: retrying the same batch cannot help. Any
    exception from `write` other than StoreUnavailable is treated so (ingest splits the batch and keeps
    the refused message as a dead letter); this one just names the case."""


@dataclass
class WriteResult:
    """What a write did: rows sent, and the points the store refused for good (partial writes) with why."""

    written: int
    rejected: list[tuple[Point, str]] = field(default_factory=list)


class Reading(BaseModel):
    """The latest weather row of one device."""

    device: str
    time: dt.datetime
    location: str | None = None
    firmware: str | None = None
    values: dict[str, float]
    flagged: str | None = None


class SeriesPoint(BaseModel):
    time: dt.datetime
    value: float


class Store(Protocol):
    def write(self, points: list[Point]) -> WriteResult:
        """Store the points durably; raise StoreUnavailable when that is not possible now, anything else
        (e.g. Unstorable) when some point cannot be stored at all."""

    def latest_readings(self, within: dt.timedelta | None = None) -> dict[str, Reading]:
        """The latest weather reading per device (heard from within `within`, when given)."""

    def last_seen(self) -> dict[str, dt.datetime]:
        """When each device was last heard of (any table: readings, status, OTA events)."""

    def series(self, device: str, field: str, start: dt.datetime, end: dt.datetime) -> list[SeriesPoint]:
        """One field of one device over [start, end), oldest first."""

    def close(self) -> None: ...


def to_ns(moment: dt.datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("use timezone-aware datetimes")
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000


def from_ns(time_ns: int) -> dt.datetime:
    seconds, rest = divmod(time_ns, 1_000_000_000)
    return dt.datetime.fromtimestamp(seconds, dt.UTC) + dt.timedelta(microseconds=rest // 1000)
