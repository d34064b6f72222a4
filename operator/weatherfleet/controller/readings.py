"""The last reading of every device, from the time-series store ingest writes (InfluxDB 3 through
influxdb3-python in a cluster, the SQLite store locally): what `kubectl get ws` shows as lastReading.

The operator's MQTT identity may not read measurements (least privilege), so readings come from the store
with one query for the whole fleet per interval, never one per sensor."""

from __future__ import annotations

import logging
import threading
from typing import Any, Protocol

from .settings import OperatorSettings

log = logging.getLogger(__name__)


class ReadingsStore(Protocol):
    def latest_readings(self) -> dict[str, Any]: ...


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


class Readings:
    """Device id -> latest Reading (ingest's model: time, values, location, firmware)."""

    def __init__(self, store: ReadingsStore | None) -> None:
        self.store = store
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
            latest = self.store.latest_readings()
        except Exception as exc:
            log.warning("could not read the latest readings", extra={"error": str(exc)[:300]})
            return set()
        with self._lock:
            changed = {d for d, r in latest.items() if self._latest.get(d) != r}
            self._latest = dict(latest)
        return changed
