"""The last reading of every device, from the time-series store ingest writes (InfluxDB 3 through
influxdb3-python in a cluster, the SQLite store locally): what `kubectl get ws` shows as lastReading.

The operator's MQTT identity may not read measurements (least privilege), so readings come from the store
with one query for the whole fleet per interval, never one per sensor. The query looks back only as far as
it must: twice the longest noDataAfter of any sensor (a device silent longer is offline, and its last
reading stays in its status), at least 10 minutes and at most a day. InfluxDB 3 Core refuses a query that
would read more than its file limit (432 Parquet files by default, about three days), so an unbounded
query would start failing a few days after installation; with InfluxDB the reading comes from the last
value cache the init Job creates, and the window bounds it too."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

from pydantic import ValidationError

from ..models import SensorFleet, WeatherSensor
from ..reconcilers.fleet import fleet_for_sensor
from ..reconcilers.sensor import no_data_after
from .settings import OperatorSettings

log = logging.getLogger(__name__)
MIN_WINDOW = dt.timedelta(minutes=10)
MAX_WINDOW = dt.timedelta(days=1)


class ReadingsStore(Protocol):
    def latest_readings(self, within: dt.timedelta | None = None) -> dict[str, Any]: ...


def open_store(settings: OperatorSettings) -> ReadingsStore | None:
    """InfluxDB 3 when configured, else a SQLite store file when given, else None (no lastReading)."""
    if settings.influxdb_host:
        from ..ingest.influx_store import InfluxStore

        if not settings.influxdb_token:
            raise ValueError("WEATHERFLEET_INFLUXDB_HOST needs WEATHERFLEET_INFLUXDB_TOKEN")
        return InfluxStore(settings.influxdb_host, settings.influxdb_database, settings.influxdb_token)
    if settings.readings_sqlite:
        from ..ingest.sqlite_store import SQLiteStore

        return SQLiteStore(settings.readings_sqlite)
    return None


def query_window(sensors: list[WeatherSensor], fleets: list[SensorFleet]) -> dt.timedelta:
    """Twice the longest noDataAfter of these sensors (each its own, else its fleet's, else the default),
    within [MIN_WINDOW, MAX_WINDOW]."""
    longest = max((no_data_after(s, fleet_for_sensor(s, fleets)) for s in sensors), default=0.0)
    return min(max(dt.timedelta(seconds=2 * longest), MIN_WINDOW), MAX_WINDOW)


def cached_window(cache: Any) -> Callable[[], dt.timedelta]:
    """`query_window` over the sensors and fleets of every namespace in the operator's watch cache."""

    def window() -> dt.timedelta:
        def valid(model: Any) -> list[Any]:
            found = []
            for body in cache.list(model.__name__):
                try:
                    found.append(model.model_validate(body))
                except ValidationError:
                    continue
            return found

        return query_window(valid(WeatherSensor), valid(SensorFleet))

    return window


class Readings:
    """Device id -> latest Reading (ingest's model: time, values, location, firmware)."""

    def __init__(self, store: ReadingsStore | None, window: Callable[[], dt.timedelta] | None = None) -> None:
        self.store = store
        self.window = window or (lambda: MAX_WINDOW)
        self._lock = threading.Lock()
        self._latest: dict[str, Any] = {}

    def get(self, device_id: str) -> Any | None:
        with self._lock:
            return self._latest.get(device_id)

    def poll(self) -> set[str]:
        """Refresh from the store; the devices whose latest reading changed. A store that is down keeps
        the last known readings (and is logged), it never fails a reconcile."""
        if self.store is None:
            return set()
        try:
            latest = self.store.latest_readings(within=self.window())
        except Exception as exc:
            log.warning("could not read the latest readings", extra={"error": str(exc)[:300]})
            return set()
        with self._lock:
            changed = {d for d, r in latest.items() if self._latest.get(d) != r}
            self._latest = dict(latest)
        return changed
