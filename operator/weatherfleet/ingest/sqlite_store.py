"""The embedded store: SQLite in WAL mode, one table per measurement, the same names as in InfluxDB 3.

Rows are keyed like InfluxDB series + timestamp: weather and device_status by (device, time), ota_events
by (device, event, time). A second write of the same key merges fields (as InfluxDB does), so a
redelivered message leaves one row. `time` is integer nanoseconds since the Unix epoch (UTC)."""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from collections import defaultdict
from pathlib import Path

from .. import messages
from .records import DEVICE_STATUS, OTA_EVENTS, WEATHER, Point
from .store import Reading, SeriesPoint, StoreUnavailable, WriteResult, from_ns, to_ns

WEATHER_FIELDS = tuple(messages.FIELDS)
STATUS_FIELDS = ("online", "firmware", "uptime", "heap", "rssi", "boot", "slot", "sensors")
OTA_FIELDS = ("version", "percent", "reason")

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {WEATHER} (
    time INTEGER NOT NULL, device TEXT NOT NULL, location TEXT, firmware TEXT,
    {", ".join(f"{f} REAL" for f in WEATHER_FIELDS)}, flagged TEXT,
    PRIMARY KEY (device, time)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS {DEVICE_STATUS} (
    time INTEGER NOT NULL, device TEXT NOT NULL, online INTEGER, firmware TEXT, uptime INTEGER,
    heap INTEGER, rssi INTEGER, boot TEXT, slot TEXT, sensors TEXT,
    PRIMARY KEY (device, time)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS {OTA_EVENTS} (
    time INTEGER NOT NULL, device TEXT NOT NULL, event TEXT NOT NULL, version TEXT, percent INTEGER,
    reason TEXT,
    PRIMARY KEY (device, event, time)
) WITHOUT ROWID;
"""


def _upsert(table: str, keys: tuple[str, ...], columns: tuple[str, ...]) -> str:
    names = (*keys, *columns)
    merge = ", ".join(f"{c} = COALESCE(excluded.{c}, {c})" for c in columns)
    return (
        f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))}) "
        f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {merge}"
    )


INSERT_WEATHER = _upsert(WEATHER, ("time", "device"), ("location", "firmware", *WEATHER_FIELDS, "flagged"))
INSERT_STATUS = _upsert(DEVICE_STATUS, ("time", "device"), STATUS_FIELDS)
INSERT_OTA = _upsert(OTA_EVENTS, ("time", "device", "event"), OTA_FIELDS)


class SQLiteStore:
    def __init__(self, path: Path | str, synchronous: str = "FULL") -> None:
        """`synchronous=FULL` makes each committed batch survive power loss, which is what lets ingest
        acknowledge MQTT messages right after the commit."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._db.executescript(SCHEMA)

    def write(self, points: list[Point]) -> WriteResult:
        weather, status, ota = [], [], []
        for p in points:
            f = p.fields
            if p.table == WEATHER:
                t = p.tags
                weather.append(
                    (
                        p.time_ns,
                        t["device"],
                        t.get("location"),
                        t.get("firmware"),
                        *map(f.get, WEATHER_FIELDS),
                        f.get("flagged"),
                    )
                )
            elif p.table == DEVICE_STATUS:
                status.append((p.time_ns, p.tags["device"], *(f.get(name) for name in STATUS_FIELDS)))
            elif p.table == OTA_EVENTS:
                ota.append((p.time_ns, p.tags["device"], p.tags["event"], *(f.get(n) for n in OTA_FIELDS)))
            else:
                raise ValueError(f"unknown table {p.table!r}")
        try:
            with self._lock:
                self._db.execute("BEGIN")
                try:
                    if weather:
                        self._db.executemany(INSERT_WEATHER, weather)
                    if status:
                        self._db.executemany(INSERT_STATUS, status)
                    if ota:
                        self._db.executemany(INSERT_OTA, ota)
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
        except sqlite3.OperationalError as error:  # locked, disk full, I/O error: try again later
            raise StoreUnavailable(f"SQLite {self.path}: {error}") from error
        except sqlite3.DatabaseError as error:
            if type(error) in (sqlite3.DatabaseError, sqlite3.InternalError):  # a damaged file: not the data
                raise StoreUnavailable(f"SQLite {self.path}: {error}") from error
            raise  # IntegrityError, DataError, ...: this batch's content (ingest isolates the message)
        # UnicodeEncodeError, OverflowError: also the content, raised as they are
        return WriteResult(written=len(points))

    # -- queries ------------------------------------------------------------------------------------

    def _query(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def latest_readings(self, within: dt.timedelta | None = None) -> dict[str, Reading]:
        columns = ("time", "device", "location", "firmware", *WEATHER_FIELDS, "flagged")
        since = to_ns(dt.datetime.now(dt.UTC) - within) if within is not None else 0
        rows = self._query(
            f"SELECT {', '.join(columns)} FROM (SELECT *, ROW_NUMBER() OVER "
            f"(PARTITION BY device ORDER BY time DESC) AS rn FROM {WEATHER} WHERE time >= ?) WHERE rn = 1",
            (since,),
        )
        readings = {}
        for row in rows:
            record = dict(zip(columns, row, strict=True))
            values = {f: record[f] for f in WEATHER_FIELDS if record[f] is not None}
            readings[record["device"]] = Reading(
                device=record["device"],
                time=from_ns(record["time"]),
                location=record["location"],
                firmware=record["firmware"],
                values=values,
                flagged=record["flagged"],
            )
        return readings

    def last_seen(self) -> dict[str, dt.datetime]:
        rows = self._query(
            " UNION ALL ".join(
                f"SELECT device, MAX(time) FROM {t} GROUP BY device"
                for t in (WEATHER, DEVICE_STATUS, OTA_EVENTS)
            )
        )
        seen: dict[str, int] = defaultdict(int)
        for device, time_ns in rows:
            seen[device] = max(seen[device], time_ns)
        return {device: from_ns(time_ns) for device, time_ns in seen.items()}

    def series(self, device: str, field: str, start: dt.datetime, end: dt.datetime) -> list[SeriesPoint]:
        if field not in WEATHER_FIELDS:
            raise ValueError(f"unknown field {field!r}: expected one of {', '.join(WEATHER_FIELDS)}")
        rows = self._query(
            f"SELECT time, {field} FROM {WEATHER} WHERE device = ? AND time >= ? AND time < ? "
            f"AND {field} IS NOT NULL ORDER BY time",
            (device, to_ns(start), to_ns(end)),
        )
        return [SeriesPoint(time=from_ns(t), value=v) for t, v in rows]

    def count(self, table: str) -> int:
        if table not in (WEATHER, DEVICE_STATUS, OTA_EVENTS):
            raise ValueError(table)
        return self._query(f"SELECT COUNT(*) FROM {table}")[0][0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
