"""What ingest stores: points (one row of one table) and dead letters, and their line protocol form.

Points are plain slotted dataclasses, not pydantic models: tens of thousands are made per second on the
hot path, and they are only ever built by the validating parser in `parsing.py`."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

# Table (InfluxDB 3 measurement) names; the dashboards query these.
WEATHER = "weather"
DEVICE_STATUS = "device_status"
OTA_EVENTS = "ota_events"
TABLES = (WEATHER, DEVICE_STATUS, OTA_EVENTS)

FieldValue = float | int | bool | str


@dataclass(slots=True)
class Point:
    """One row: a table, its tags (identity besides time), its fields and a timestamp in nanoseconds.

    Idempotence: (table, tags, time_ns) names the row; writing the same point twice keeps one row."""

    table: str
    tags: dict[str, str]
    fields: dict[str, FieldValue]
    time_ns: int

    def to_json(self) -> str:
        return json.dumps([self.table, self.tags, self.fields, self.time_ns], separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Point:
        table, tags, fields, time_ns = json.loads(text)
        return cls(table, tags, fields, time_ns)


@dataclass(slots=True)
class DeadLetter:
    """A message (or, for store rejections, one line) that could not be stored, and why."""

    topic: str
    payload: bytes
    reason: str
    received_ns: int
    source: str = "parse"  # parse | store
    extra: dict[str, str] = field(default_factory=dict)


def _escape_key(text: str) -> str:
    # measurement names, tag keys/values and field keys escape commas, equals signs and spaces
    return text.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def _field_value(value: FieldValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"line protocol cannot carry a non-finite float ({value})")
        return repr(value)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_line_protocol(point: Point) -> str:
    """InfluxDB line protocol with a nanosecond timestamp; tags sorted (InfluxDB's preferred order)."""
    head = _escape_key(point.table)
    for key in sorted(point.tags):
        value = point.tags[key]
        if value != "":  # line protocol has no empty tag values
            head += f",{_escape_key(key)}={_escape_key(value)}"
    body = ",".join(f"{_escape_key(k)}={_field_value(v)}" for k, v in point.fields.items())
    return f"{head} {body} {point.time_ns}"
