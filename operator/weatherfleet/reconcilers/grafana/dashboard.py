"""The fleet dashboard (built with grafana-foundation-sdk): one time series panel per quantity with one
series per location, and a location variable holding the fleet's locations, so it does not grow with the
fleet and is built once per fleet; then the devices' online state, firmware versions and OTA events."""

from __future__ import annotations

import hashlib
from typing import Any

from grafana_foundation_sdk.builders import dashboard, stat, statetimeline, table, timeseries
from grafana_foundation_sdk.models.dashboard import DataSourceRef, DynamicConfigValue, GridPos

from ...messages import FIELDS, MEASUREMENT, SENSOR_FIELDS
from ...models.fleet import SensorFleet
from ...models.sensor import WeatherSensor
from .datasource import (
    DATASOURCE_TYPE,
    DEVICES_DISTINCT_CACHE,
    OTA_TABLE,
    STATUS_LAST_CACHE,
    STATUS_TABLE,
    SqlTarget,
    to_plain,
)

# Grafana's unit ids for the units of messages.FIELDS (relative humidity is the only percentage: "%H").
GRAFANA_UNITS = {
    "degC": "celsius",
    "percent": "humidity",
    "hPa": "pressurehpa",
    "ppm": "ppm",
    "ug/m3": "conμgm3",
}
# Panel titles where the capitalised field name is not the quantity's name.
ACRONYMS = {"co2": "CO2", "pm25": "PM2.5", "pm10": "PM10"}
WHERE_LOCATION = "location IN (${location:sqlstring})"
WHERE_DEVICE = "device IN (${device:sqlstring})"


def fleet_fields(sensors: list[WeatherSensor]) -> list[str]:
    """The measurement fields the fleet's sensors report, in the canonical order of messages.FIELDS."""
    present = {f for s in sensors for spec in s.spec.sensors for f in SENSOR_FIELDS[spec.type]}
    return [f for f in FIELDS if f in present]


def dashboard_uid(fleet: SensorFleet) -> str:
    return (
        "wf-" + hashlib.sha256(f"{fleet.metadata.namespace}/{fleet.metadata.name}".encode()).hexdigest()[:16]
    )


def _variables(board: dashboard.Dashboard, ds: DataSourceRef, locations: list[str]) -> dashboard.Dashboard:
    return board.with_variable(
        dashboard.CustomVariable("location")
        .label("Location")
        .values(",".join(loc.replace(",", r"\,") for loc in locations) or "none")
        .multi(True)
        .include_all(True)
    ).with_variable(
        # From the distinct value cache: no file is read, and a device appears while it reported
        # within the cache's max age.
        dashboard.QueryVariable("device")
        .label("Device")
        .datasource(ds)
        .query(
            f"SELECT device FROM distinct_cache('{MEASUREMENT}', '{DEVICES_DISTINCT_CACHE}') "
            f"WHERE {WHERE_LOCATION} ORDER BY device"
        )
        .multi(True)
        .include_all(True)
    )


def _quantity_panel(field: str, panel_id: int, index: int, ds: DataSourceRef) -> timeseries.Panel:
    unit = GRAFANA_UNITS[FIELDS[field][0]]
    title = ACRONYMS.get(field, field.capitalize())
    sql = (
        f"SELECT date_bin(INTERVAL '$__interval_ms milliseconds', time) AS time, location, "
        f'avg("{field}") AS "{field}" FROM {MEASUREMENT} '
        f'WHERE $__timeFilter(time) AND {WHERE_LOCATION} AND "{field}" IS NOT NULL '
        f"GROUP BY 1, location ORDER BY 1"
    )
    return (
        timeseries.Panel()
        .id(panel_id)
        .title(f"{title} per location")
        .datasource(ds)
        .unit(unit)
        .grid_pos(GridPos(h=8, w=12, x=(index % 2) * 12, y=1 + (index // 2) * 8))
        .with_target(SqlTarget("A", ds.uid or "", sql))
    )


def _device_panels(board: dashboard.Dashboard, first_id: int, ds: DataSourceRef) -> dashboard.Dashboard:
    uid = ds.uid or ""
    # The latest status of every device from the last value cache (memory, no file read), within the
    # dashboard's time range like every other panel.
    latest = (
        f"SELECT device, online, firmware, time FROM last_cache('{STATUS_TABLE}', '{STATUS_LAST_CACHE}') "
        f"WHERE $__timeFilter(time) AND {WHERE_DEVICE}"
    )
    online_count = f"SELECT count(*) AS online FROM ({latest}) WHERE online = true"
    online_state = (
        "SELECT time, device, CASE WHEN online THEN 1 ELSE 0 END AS online "
        f"FROM {STATUS_TABLE} WHERE $__timeFilter(time) AND {WHERE_DEVICE} ORDER BY time"
    )
    ota_events = (
        f"SELECT time, device, event, version, percent, reason FROM {OTA_TABLE} "
        f"WHERE $__timeFilter(time) AND {WHERE_DEVICE} ORDER BY time DESC LIMIT 500"
    )
    return (
        board.with_panel(
            stat.Panel()
            .id(first_id)
            .title("Devices online")
            .datasource(ds)
            .with_target(SqlTarget("A", uid, online_count, "table"))
        )
        .with_panel(
            statetimeline.Panel()
            .id(first_id + 1)
            .title("Online state")
            .datasource(ds)
            .with_target(SqlTarget("A", uid, online_state))
        )
        .with_panel(
            table.Panel()
            .id(first_id + 2)
            .title("Firmware versions")
            .datasource(ds)
            .with_target(SqlTarget("A", uid, f"{latest} ORDER BY device", "table"))
        )
        .with_panel(
            table.Panel()
            .id(first_id + 3)
            .title("OTA events")
            .datasource(ds)
            .override_by_name("percent", [DynamicConfigValue(id_val="unit", value="percent")])
            .with_target(SqlTarget("A", uid, ota_events, "table"))
        )
    )


def build_dashboard(fleet: SensorFleet, sensors: list[WeatherSensor]) -> dict[str, Any]:
    """The fleet dashboard as Grafana JSON: one time series per quantity (a series per location), the
    online state and firmware version of every device, and recent OTA events with their download percent."""
    ds = DataSourceRef(type_val=DATASOURCE_TYPE, uid=fleet.spec.grafana.datasource_uid)
    locations = sorted({s.spec.location for s in sensors})
    board = (
        dashboard.Dashboard(fleet.spec.grafana.dashboard_title)
        .uid(dashboard_uid(fleet))
        .tags(["weatherfleet", f"fleet:{fleet.metadata.name}"])
        .time("now-24h", "now")
        .refresh("1m")
        .timezone("browser")
        .readonly()
    )
    board = _variables(board, ds, locations).with_row(dashboard.Row("Measurements per location").id(1))
    panel_id = 1
    for index, field in enumerate(fleet_fields(sensors)):
        panel_id += 1
        board = board.with_panel(_quantity_panel(field, panel_id, index, ds))
    board = board.with_row(dashboard.Row("Devices").id(panel_id + 1))
    return to_plain(_device_panels(board, panel_id + 2, ds).build())
