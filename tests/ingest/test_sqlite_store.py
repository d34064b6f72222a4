"""The embedded store: idempotent upserts, WAL, and the three queries."""

from __future__ import annotations

import datetime as dt
import sqlite3

import pytest

from weatherfleet.ingest.records import Point
from weatherfleet.ingest.sqlite_store import SQLiteStore
from weatherfleet.ingest.store import StoreUnavailable

T0 = 1_764_000_000_000_000_000
S = 1_000_000_000


def reading(device: str, time_ns: int, **fields) -> Point:
    return Point("weather", {"device": device, "location": "lab", "firmware": "1.0.0"}, fields, time_ns)


def test_wal_mode_and_tables(sqlite_store: SQLiteStore) -> None:
    db = sqlite3.connect(sqlite_store.path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"weather", "device_status", "ota_events"} <= tables


def test_same_point_twice_is_one_row_and_fields_merge(sqlite_store: SQLiteStore) -> None:
    sqlite_store.write([reading("dev-01", T0, temperature=20.0)])
    sqlite_store.write([reading("dev-01", T0, temperature=20.0), reading("dev-01", T0, co2=500.0)])
    assert sqlite_store.count("weather") == 1
    latest = sqlite_store.latest_readings()["dev-01"]
    assert latest.values == {"temperature": 20.0, "co2": 500.0}


def test_status_and_ota_rows(sqlite_store: SQLiteStore) -> None:
    sqlite_store.write(
        [
            Point(
                "device_status", {"device": "dev-02"}, {"online": True, "firmware": "1.2.0", "heap": 9000}, T0
            ),
            Point("ota_events", {"device": "dev-02", "event": "checking"}, {"version": "1.3.0"}, T0),
            Point("ota_events", {"device": "dev-02", "event": "downloading"}, {"percent": 10}, T0),
            Point("ota_events", {"device": "dev-02", "event": "downloading"}, {"percent": 10}, T0),
        ]
    )
    assert sqlite_store.count("device_status") == 1
    assert sqlite_store.count("ota_events") == 2  # same second, different events: both kept
    db = sqlite3.connect(sqlite_store.path)
    assert db.execute("SELECT online, firmware, heap FROM device_status").fetchone() == (1, "1.2.0", 9000)


def test_latest_last_seen_and_series(sqlite_store: SQLiteStore) -> None:
    sqlite_store.write([reading("dev-01", T0 + i * 60 * S, temperature=20.0 + i) for i in range(10)])
    sqlite_store.write([reading("dev-02", T0, pressure=1000.0, flagged="temperature=99.0")])
    sqlite_store.write([Point("device_status", {"device": "dev-02"}, {"online": False}, T0 + 3600 * S)])
    sqlite_store.write([Point("device_status", {"device": "dev-03"}, {"online": True}, T0 + 5 * S)])

    latest = sqlite_store.latest_readings()
    assert set(latest) == {"dev-01", "dev-02"}
    assert latest["dev-01"].values == {"temperature": 29.0}
    assert latest["dev-01"].time == dt.datetime.fromtimestamp(T0 // S + 540, dt.UTC)
    assert latest["dev-02"].flagged == "temperature=99.0"

    seen = sqlite_store.last_seen()
    assert seen == {
        "dev-01": dt.datetime.fromtimestamp(T0 // S + 540, dt.UTC),
        "dev-02": dt.datetime.fromtimestamp(T0 // S + 3600, dt.UTC),  # status is newer than the reading
        "dev-03": dt.datetime.fromtimestamp(T0 // S + 5, dt.UTC),
    }

    start = dt.datetime.fromtimestamp(T0 // S + 120, dt.UTC)
    end = dt.datetime.fromtimestamp(T0 // S + 300, dt.UTC)
    series = sqlite_store.series("dev-01", "temperature", start, end)
    assert [p.value for p in series] == [22.0, 23.0, 24.0]  # end is exclusive
    assert sqlite_store.series("dev-01", "co2", start, end) == []
    with pytest.raises(ValueError, match="unknown field"):
        sqlite_store.series("dev-01", "device", start, end)


def test_locked_database_is_unavailable_not_a_crash(tmp_path) -> None:
    store = SQLiteStore(tmp_path / "w.db")
    store._db.execute("PRAGMA busy_timeout = 50")
    other = sqlite3.connect(tmp_path / "w.db", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreUnavailable, match="locked"):
            store.write([reading("dev-01", T0, temperature=1.0)])
    finally:
        other.execute("ROLLBACK")
    store.write([reading("dev-01", T0, temperature=1.0)])
    assert store.count("weather") == 1
