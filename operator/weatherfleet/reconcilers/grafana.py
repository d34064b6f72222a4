"""Grafana for a fleet: a dashboard (built with grafana-foundation-sdk) and "no data" alert rules, both as
ConfigMaps for the Grafana Helm chart's sidecar (labels `grafana_dashboard` / `grafana_alert`).

Queries are SQL for an InfluxDB 3 datasource. Measurement `weather` (tags device, location, firmware; one
field per physical quantity); tables `device_status` (device, online, firmware, ...) and `ota_events`
(device, event, version, reason) as written by ingest.

The dashboard does not grow with the fleet: one panel per quantity with one series per location, and a
location variable holding the fleet's locations; it is built once per fleet. Alert rules are one per
sensor, so they are split over several ConfigMaps to stay well under the 1 MiB object limit.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from grafana_foundation_sdk.builders import alerting, dashboard, stat, statetimeline, table, timeseries
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef, GridPos

from ..durations import parse_duration
from ..messages import FIELDS, MEASUREMENT, SENSOR_FIELDS
from ..models.fleet import SensorFleet
from ..models.sensor import WeatherSensor

STATUS_TABLE = "device_status"
OTA_TABLE = "ota_events"
DATASOURCE_TYPE = "influxdb"
RULES_PER_CONFIGMAP = 400  # ~1.2 KiB per rule in YAML: about 480 KiB per ConfigMap
FIELD_TITLES = {
    "temperature": ("Temperature", "celsius"),
    "humidity": ("Humidity", "humidity"),
    "pressure": ("Pressure", "pressurehpa"),
    "co2": ("CO2", "ppm"),
    "pm25": ("PM2.5", "conμgm3"),
    "pm10": ("PM10", "conμgm3"),
}


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


class _ExprQuery(cogvariants.Dataquery):
    def __init__(self, model: dict[str, Any]) -> None:
        self.model = model

    def to_json(self) -> dict[str, Any]:
        return self.model


class ExprModel(cogbuilder.Builder[cogvariants.Dataquery]):
    """A server-side expression model (reduce, threshold) for an alert rule query."""

    def __init__(self, model: dict[str, Any]) -> None:
        self._query = _ExprQuery(model)

    def build(self) -> cogvariants.Dataquery:
        return self._query


def _to_plain(obj: Any) -> Any:
    return json.loads(json.dumps(obj, cls=JSONEncoder, sort_keys=True))


def _sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def fleet_fields(sensors: list[WeatherSensor]) -> list[str]:
    """The measurement fields the fleet's sensors report, in the canonical order of messages.FIELDS."""
    present = {f for s in sensors for spec in s.spec.sensors for f in SENSOR_FIELDS[spec.type]}
    return [f for f in FIELDS if f in present]


def dashboard_uid(fleet: SensorFleet) -> str:
    return (
        "wf-" + hashlib.sha256(f"{fleet.metadata.namespace}/{fleet.metadata.name}".encode()).hexdigest()[:16]
    )


def build_dashboard(fleet: SensorFleet, sensors: list[WeatherSensor]) -> dict[str, Any]:
    """The fleet dashboard as Grafana JSON: one time series per quantity (a series per location), the
    online state and firmware version of every device, and recent OTA events."""
    uid = fleet.spec.grafana.datasource_uid
    ds = DataSourceRef(type_val=DATASOURCE_TYPE, uid=uid)
    locations = sorted({s.spec.location for s in sensors})
    where_location = "location IN (${location:sqlstring})"
    where_device = "device IN (${device:sqlstring})"

    board = (
        dashboard.Dashboard(fleet.spec.grafana.dashboard_title)
        .uid(dashboard_uid(fleet))
        .tags(["weatherfleet", f"fleet:{fleet.metadata.name}"])
        .time("now-24h", "now")
        .refresh("1m")
        .timezone("browser")
        .readonly()
        .with_variable(
            dashboard.CustomVariable("location")
            .label("Location")
            .values(",".join(loc.replace(",", r"\,") for loc in locations) or "none")
            .multi(True)
            .include_all(True)
        )
        .with_variable(
            dashboard.QueryVariable("device")
            .label("Device")
            .datasource(ds)
            .query(f"SELECT DISTINCT device FROM {MEASUREMENT} WHERE {where_location} ORDER BY device")
            .multi(True)
            .include_all(True)
        )
    )
    board = board.with_row(dashboard.Row("Measurements per location").id(1))
    panel_id = 1
    for i, field in enumerate(fleet_fields(sensors)):
        panel_id += 1
        title, unit = FIELD_TITLES[field]
        sql = (
            f"SELECT date_bin(INTERVAL '$__interval_ms milliseconds', time) AS time, location, "
            f'avg("{field}") AS "{field}" FROM {MEASUREMENT} '
            f'WHERE $__timeFilter(time) AND {where_location} AND "{field}" IS NOT NULL '
            f"GROUP BY 1, location ORDER BY 1"
        )
        board = board.with_panel(
            timeseries.Panel()
            .id(panel_id)
            .title(f"{title} per location")
            .datasource(ds)
            .unit(unit)
            .grid_pos(GridPos(h=8, w=12, x=(i % 2) * 12, y=1 + (i // 2) * 8))
            .with_target(SqlTarget("A", uid, sql))
        )
    board = board.with_row(dashboard.Row("Devices").id(panel_id + 1))
    latest = (
        "SELECT device, online, firmware, time FROM (SELECT device, online, firmware, time, "
        "row_number() OVER (PARTITION BY device ORDER BY time DESC) AS rn "
        f"FROM {STATUS_TABLE} WHERE {where_device}) WHERE rn = 1 ORDER BY device"
    )
    board = (
        board.with_panel(
            stat.Panel()
            .id(panel_id + 2)
            .title("Devices online")
            .datasource(ds)
            .with_target(
                SqlTarget(
                    "A",
                    uid,
                    f"SELECT count(*) AS online FROM ({latest}) WHERE online = true",
                    "table",
                )
            )
        )
        .with_panel(
            statetimeline.Panel()
            .id(panel_id + 3)
            .title("Online state")
            .datasource(ds)
            .with_target(
                SqlTarget(
                    "A",
                    uid,
                    "SELECT time, device, CASE WHEN online THEN 1 ELSE 0 END AS online "
                    f"FROM {STATUS_TABLE} WHERE $__timeFilter(time) AND {where_device} ORDER BY time",
                )
            )
        )
        .with_panel(
            table.Panel()
            .id(panel_id + 4)
            .title("Firmware versions")
            .datasource(ds)
            .with_target(SqlTarget("A", uid, latest, "table"))
        )
        .with_panel(
            table.Panel()
            .id(panel_id + 5)
            .title("OTA events")
            .datasource(ds)
            .with_target(
                SqlTarget(
                    "A",
                    uid,
                    f"SELECT time, device, event, version, reason FROM {OTA_TABLE} "
                    f"WHERE $__timeFilter(time) AND {where_device} ORDER BY time DESC LIMIT 500",
                    "table",
                )
            )
        )
    )
    return _to_plain(board.build())


# --- alerting --------------------------------------------------------------------------------------------


def telegram_token_env(fleet: SensorFleet) -> str:
    """The environment variable Grafana must carry (from the fleet's botTokenSecretRef) for the contact
    point: the token is substituted by Grafana's provisioning at load time, never written into a file."""
    name = f"{fleet.metadata.namespace}_{fleet.metadata.name}"
    return "WEATHERFLEET_TELEGRAM_TOKEN_" + re.sub(r"[^A-Z0-9]", "_", name.upper())


def contact_point_name(fleet: SensorFleet) -> str:
    return f"weatherfleet-{fleet.metadata.namespace}-{fleet.metadata.name}-telegram"


def rule_uid(fleet: SensorFleet, device_id: str) -> str:
    key = f"{fleet.metadata.namespace}/{fleet.metadata.name}/{device_id}"
    return "wf-" + hashlib.sha256(key.encode()).hexdigest()[:24]


def _rule_template(fleet: SensorFleet) -> dict[str, Any]:
    """One rule built with the SDK, with placeholders; cloned per sensor (building 10,000 rules through
    the builders would cost far more than copying a dict)."""
    uid = fleet.spec.grafana.datasource_uid
    reduce = {
        "refId": "B",
        "type": "reduce",
        "expression": "A",
        "reducer": "last",
        "datasource": {"type": "__expr__", "uid": "__expr__"},
    }
    threshold = {
        "refId": "C",
        "type": "threshold",
        "expression": "B",
        "conditions": [{"evaluator": {"type": "lt", "params": [1]}}],
        "datasource": {"type": "__expr__", "uid": "__expr__"},
    }
    rule = (
        alerting.Rule("@title@")
        .uid("@uid@")
        .condition("C")
        .no_data_state("Alerting")
        .exec_err_state("Error")
        .for_val("1m")
        .with_query(
            alerting.Query("A").datasource_uid(uid).model(SqlTarget("A", uid, "@sql@", "time_series"))
        )
        .with_query(alerting.Query("B").datasource_uid("__expr__").model(ExprModel(reduce)))
        .with_query(alerting.Query("C").datasource_uid("__expr__").model(ExprModel(threshold)))
    )
    plain = _to_plain(rule.build())
    # File provisioning takes the rule without the API's placement fields (group and folder are above it).
    for key in ("folderUID", "ruleGroup", "orgID", "orgId"):
        plain.pop(key, None)
    return plain


def _literal(text: str) -> str:
    """Grafana expands `$NAME` in provisioning files; user text keeps its dollars as `$$`."""
    return text.replace("$", "$$")


class EncodedRule(str):
    """One alert rule, already encoded as compact JSON (see `_RuleTemplate`)."""


_MARK = re.compile(r'"\\u0000(\w+)\\u0000"')


class _RuleTemplate:
    """The rule built once with the SDK and encoded once, with markers where per-sensor values go; each
    sensor's rule is then one substitution in a string. Building and encoding 10,000 rules one by one
    took most of the render time of a 10,000-sensor fleet."""

    def __init__(self, fleet: SensorFleet) -> None:
        rule = _rule_template(fleet)
        rule["uid"] = "\x00uid\x00"
        rule["title"] = "\x00title\x00"
        query = dict(rule["data"][0])
        query["relativeTimeRange"] = {"from": "\x00seconds\x00", "to": 0}
        query["model"] = {**query["model"], "rawSql": "\x00sql\x00"}
        rule["data"] = [query, *rule["data"][1:]]
        rule["labels"] = {
            "weatherfleet_fleet": fleet.metadata.name,
            "device": "\x00device\x00",
            "location": "\x00location\x00",
        }
        rule["annotations"] = {"summary": "\x00summary\x00"}
        if fleet.spec.alerting.telegram is not None:
            rule["notification_settings"] = {"receiver": contact_point_name(fleet)}
        self.text = _compact(rule)
        self.fleet = fleet

    def render(self, sensor: WeatherSensor, window: float) -> EncodedRule:
        fleet = self.fleet
        device = sensor.spec.device_id
        seconds = int(window)
        # No `$` anywhere: Grafana expands environment variables in provisioning files.
        sql = (
            f"SELECT date_bin(INTERVAL '1 minute', time) AS time, count(*) AS readings FROM {MEASUREMENT} "
            f"WHERE device = {_sql_literal(device)} AND time >= now() - INTERVAL '{seconds} seconds' GROUP BY 1"
        )
        after = sensor.spec.alerting.no_data_after or fleet.spec.alerting.no_data_after
        location = _literal(sensor.spec.location)
        values = {
            "uid": _compact(rule_uid(fleet, device)),
            "title": _compact(f"no data from {device} for {after}"),
            "seconds": str(seconds),
            "sql": _compact(sql),
            "device": _compact(device),
            "location": _compact(location),
            "summary": _compact(f"No data from {device} ({location}) for {after}"),
        }
        return EncodedRule(_MARK.sub(lambda m: values[m.group(1)], self.text))


def alert_files(fleet: SensorFleet, sensors: list[WeatherSensor]) -> list[dict[str, Any]]:
    """Grafana alerting file-provisioning documents (`apiVersion: 1`; rules as `EncodedRule` JSON text,
    write them with `alert_file_text`), each holding at most
    RULES_PER_CONFIGMAP rules: one "no data from <device> for <noDataAfter>" rule per sensor with
    noDataState Alerting. The first also carries the Telegram contact point (bot token as `$ENV`) and the
    notification policy routing this fleet's alerts to it."""
    template = _RuleTemplate(fleet)
    ordered = sorted(sensors, key=lambda s: s.spec.device_id)
    fleet_window = parse_duration(fleet.spec.alerting.no_data_after)
    chunks = [ordered[i : i + RULES_PER_CONFIGMAP] for i in range(0, len(ordered), RULES_PER_CONFIGMAP)] or [
        []
    ]
    files: list[dict[str, Any]] = []
    for n, chunk in enumerate(chunks):
        rules = [
            template.render(
                s,
                parse_duration(s.spec.alerting.no_data_after)
                if s.spec.alerting.no_data_after
                else fleet_window,
            )
            for s in chunk
        ]
        doc: dict[str, Any] = {"apiVersion": 1}
        if rules:
            name = f"{fleet.metadata.name} no data" + (f" {n + 1}" if len(chunks) > 1 else "")
            doc["groups"] = [
                {
                    "orgId": 1,
                    "name": name,
                    "folder": _literal(fleet.spec.grafana.folder),
                    "interval": "1m",
                    "rules": rules,
                }
            ]
        if n == 0 and fleet.spec.alerting.telegram is not None:
            telegram = fleet.spec.alerting.telegram
            receiver = contact_point_name(fleet)
            doc["contactPoints"] = [
                {
                    "orgId": 1,
                    "name": receiver,
                    "receivers": [
                        {
                            "uid": rule_uid(fleet, "telegram"),
                            "type": "telegram",
                            "settings": {
                                # `$NAME`, not `${NAME}`: Grafana's advice for values that may contain a `$` themselves.
                                "bottoken": "$" + telegram_token_env(fleet),
                                "chatid": telegram.chat_id,
                                "parse_mode": "HTML",
                            },
                            "disableResolveMessage": False,
                        }
                    ],
                }
            ]
            doc["policies"] = [
                {
                    "orgId": 1,
                    "receiver": receiver,
                    "group_by": ["grafana_folder", "alertname"],
                    "routes": [
                        {
                            "receiver": receiver,
                            "object_matchers": [["weatherfleet_fleet", "=", fleet.metadata.name]],
                        }
                    ],
                }
            ]
        files.append(doc)
    return files


def _compact(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def alert_file_text(doc: dict[str, Any]) -> str:
    """An alert provisioning document as JSON (Grafana reads `.json` provisioning files; JSON is also
    YAML) with one rule per line: diffs in git show exactly which sensors' rules changed, and the C JSON
    encoder writes 10,000 rules in milliseconds (indented JSON or block YAML take most of a second)."""
    lines = ["{"]
    keys = sorted(doc)
    for n, key in enumerate(keys):
        comma = "," if n < len(keys) - 1 else ""
        if key != "groups":
            lines.append(f" {_compact(key)}: {_compact(doc[key])}{comma}")
            continue
        lines.append(' "groups": [')
        for g, group in enumerate(doc["groups"]):
            head = {k: v for k, v in group.items() if k != "rules"}
            lines.append("  " + _compact(head)[:-1] + ', "rules": [')
            rules = group.get("rules", [])
            lines.extend(
                "   "
                + (r if isinstance(r, EncodedRule) else _compact(r))
                + ("," if i < len(rules) - 1 else "")
                for i, r in enumerate(rules)
            )
            lines.append("  ]}" + ("," if g < len(doc["groups"]) - 1 else ""))
        lines.append(" ]" + comma)
    lines.append("}")
    return "\n".join(lines) + "\n"
