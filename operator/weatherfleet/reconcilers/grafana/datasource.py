"""What every Grafana query of a fleet reads: the InfluxDB 3 datasource, its tables and caches, and the
SQL query target the dashboard panels and the alert rules share.

Queries are SQL for an InfluxDB 3 datasource. Measurement `weather` (tags device, location, firmware; one
field per physical quantity); tables `device_status` (device, online, firmware, ...) and `ota_events`
(device, event, version, percent, reason) as written by ingest. Every column a query names exists from the
start: the InfluxDB init Job declares them (InfluxDB 3 refuses a query naming a column never written).
"""

from __future__ import annotations

import json
from typing import Any

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder

STATUS_TABLE = "device_status"
OTA_TABLE = "ota_events"
# InfluxDB 3 caches the init Job creates (gitops/base/influxdb3/init/influxdb3_init.py, names kept equal
# by a test): the latest device_status row per device, and the (location, device) pairs seen lately.
STATUS_LAST_CACHE = "weatherfleet_status_last"
DEVICES_DISTINCT_CACHE = "weatherfleet_weather_devices"
DATASOURCE_TYPE = "influxdb"


class _SqlQuery(cogvariants.Dataquery):
    """An InfluxDB 3 SQL query target (the SDK has no InfluxDB query type, so this is its JSON shape)."""

    def __init__(self, ref_id: str, uid: str, sql: str, fmt: str) -> None:
        self.data = {
            "refId": ref_id,
            "datasource": {"type": DATASOURCE_TYPE, "uid": uid},
            "rawQuery": True,
            "rawSql": sql,
            "format": fmt,
        }

    def to_json(self) -> dict[str, Any]:
        return self.data


class SqlTarget(cogbuilder.Builder[cogvariants.Dataquery]):
    def __init__(self, ref_id: str, uid: str, sql: str, fmt: str = "time_series") -> None:
        self._query = _SqlQuery(ref_id, uid, sql, fmt)

    def build(self) -> cogvariants.Dataquery:
        return self._query


def to_plain(obj: Any) -> Any:
    """What the SDK built, as plain JSON data (dicts, lists, strings, numbers)."""
    return json.loads(json.dumps(obj, cls=JSONEncoder, sort_keys=True))


def sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
