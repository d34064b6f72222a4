"""Fixtures of the ingest tests: stores, a store that can be made to fail, the InfluxDB 3 stand-ins."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from influxdb3_standins import TOKEN, FlightStandIn, WriteLpStandIn

from weatherfleet.ingest.records import Point
from weatherfleet.ingest.sqlite_store import SQLiteStore
from weatherfleet.ingest.store import StoreUnavailable, WriteResult


class SwitchableStore:
    """A real SQLiteStore behind a switch: while `down`, every write fails like an unreachable server."""

    def __init__(self, inner: SQLiteStore) -> None:
        self.inner = inner
        self.down = False
        self.failed_writes = 0
        self.writes = 0
        self._lock = threading.Lock()

    def write(self, points: list[Point]) -> WriteResult:
        with self._lock:
            if self.down:
                self.failed_writes += 1
                raise StoreUnavailable("store switched off by the test")
            self.writes += 1
        return self.inner.write(points)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SQLiteStore]:
    store = SQLiteStore(tmp_path / "weather.db")
    yield store
    store.close()


@pytest.fixture
def switchable_store(sqlite_store: SQLiteStore) -> SwitchableStore:
    return SwitchableStore(sqlite_store)


@pytest.fixture
def write_lp() -> Iterator[WriteLpStandIn]:
    standin = WriteLpStandIn(TOKEN, databases=("weather",)).start()
    yield standin
    standin.stop()


@pytest.fixture
def flight_server() -> Iterator[FlightStandIn]:
    standin = FlightStandIn(TOKEN).start()
    yield standin
    standin.stop()
