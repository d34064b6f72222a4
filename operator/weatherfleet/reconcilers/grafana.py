"""Grafana for a fleet: a dashboard (built with grafana-foundation-sdk) and "no data" alert rules, both as
ConfigMaps for the Grafana Helm chart's sidecar (labels `grafana_dashboard` / `grafana_alert`), and the
fleet's Telegram contact point as a Secret with the `grafana_alert` label (it holds the bot token).

Queries are SQL for an InfluxDB 3 datasource. Measurement `weather` (tags device, location, firmware; one
field per physical quantity); tables `device_status` (device, online, firmware, ...) and `ota_events`
(device, event, version, percent, reason) as written by ingest. Every column a query names exists from the
start: the InfluxDB init Job declares them (InfluxDB 3 refuses a query naming a column never written).

The dashboard does not grow with the fleet: one panel per quantity with one series per location, and a
location variable holding the fleet's locations; it is built once per fleet. Alert rules are one per
sensor, so they are split over several ConfigMaps to stay well under the 1 MiB object limit.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml
from grafana_foundation_sdk.builders import alerting, dashboard, stat, statetimeline, table, timeseries
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef, GridPos

from ..durations import parse_duration
from ..messages import FIELDS, MEASUREMENT, SENSOR_FIELDS
from ..models.fleet import SensorFleet
from ..models.sensor import WeatherSensor
from .common import FLEET_LABEL, Object, metadata

STATUS_TABLE = "device_status"
OTA_TABLE = "ota_events"
# InfluxDB 3 caches the init Job creates (gitops/base/influxdb3/init/influxdb3_init.py, names kept equal
# by a test): the latest device_status row per device, and the (location, device) pairs seen lately.
STATUS_LAST_CACHE = "weatherfleet_status_last"
DEVICES_DISTINCT_CACHE = "weatherfleet_weather_devices"
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
            # From the distinct value cache: no file is read, and a device appears while it reported
            # within the cache's max age.
            dashboard.QueryVariable("device")
            .label("Device")
            .datasource(ds)
            .query(
                f"SELECT device FROM distinct_cache('{MEASUREMENT}', '{DEVICES_DISTINCT_CACHE}') "
                f"WHERE {where_location} ORDER BY device"
            )
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
    # The latest status of every device from the last value cache (memory, no file read), within the
    # dashboard's time range like every other panel.
    latest = (
        f"SELECT device, online, firmware, time FROM last_cache('{STATUS_TABLE}', '{STATUS_LAST_CACHE}') "
        f"WHERE $__timeFilter(time) AND {where_device}"
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
            .with_target(SqlTarget("A", uid, f"{latest} ORDER BY device", "table"))
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
                    f"SELECT time, device, event, version, percent, reason FROM {OTA_TABLE} "
                    f"WHERE $__timeFilter(time) AND {where_device} ORDER BY time DESC LIMIT 500",
                    "table",
                )
            )
        )
    )
    return _to_plain(board.build())


# --- alerting --------------------------------------------------------------------------------------------
#
# How Grafana reads what is written here (Grafana 12.0, pkg/services/provisioning/alerting and .../values):
# - Every alerting file is read on start and on `POST /api/admin/provisioning/alerting/reload`, which the
#   alerts sidecar calls after each change. Per file, rule groups are upserted first, then `deleteRules`
#   are deleted; deleting a uid that does not exist is a no-op. A rule that vanishes from the files is
#   *not* deleted: only `deleteRules` deletes. So the first alert file of a fleet lists under `deleteRules`
#   every rule an earlier version of its files provisioned and the current one no longer has (see
#   `ProvisionedAlerts`), and a deleted fleet leaves a retired file that deletes all of its rules.
# - Contact points are provisioned before rules and deleted (`deleteContactPoints`) after them, so a rule
#   may route to a contact point of the same reload, and a contact point is deleted only once no rule
#   routes to it. Rules route by `notification_settings` (simplified routing), not by the notification
#   policy tree: that tree is one per organisation, and a `policies` block in a fleet's file would replace
#   the whole tree for every alert of the organisation.
# - String fields of the v1 file types (`values.StringValue`, labels, contact point settings) go through
#   environment expansion, where `$$` stands for `$`; rule annotations are taken raw (`Annotations.Raw`),
#   so they are written without escaping.

ALERT_LABEL = "grafana_alert"
DASHBOARD_LABEL = "grafana_dashboard"
# The annotation that names a dashboard's folder. The k8s-sidecar reads the annotation named by its
# FOLDER_ANNOTATION variable (default `k8s-sidecar-target-directory`) and writes the ConfigMap's files into
# that subfolder; Grafana's file provider with `foldersFromFilesStructure` makes the subfolder's name the
# dashboard folder. gitops/base/grafana sets FOLDER_ANNOTATION to this name.
FOLDER_ANNOTATION = "grafana_folder"
ORG_ID = 1
# deleteRules kept in a fleet's first file: Grafana may read a file only at its next reload or start, so a
# deletion stays listed until the rule comes back; beyond this many, the oldest are dropped (about 60 bytes
# each: 5,000 keep the file far below the ConfigMap limit).
MAX_DELETE_RULES = 5000


def contact_point_name(fleet: SensorFleet) -> str:
    return f"weatherfleet-{fleet.metadata.namespace}-{fleet.metadata.name}-telegram"


def _uid(namespace: str, fleet: str, item: str) -> str:
    return "wf-" + hashlib.sha256(f"{namespace}/{fleet}/{item}".encode()).hexdigest()[:24]


def rule_uid(fleet: SensorFleet, device_id: str) -> str:
    return _uid(fleet.metadata.namespace, fleet.metadata.name, device_id)


def contact_point_uid(namespace: str, fleet: str) -> str:
    """The uid of a fleet's Telegram integration; "telegram" is no valid device id, so no rule shares it."""
    return _uid(namespace, fleet, "telegram")


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
    """Text for a field Grafana expands environment variables in (`$NAME`, `${NAME}`): `$$` is a `$`."""
    return text.replace("$", "$$")


class EncodedRule(str):
    """One alert rule, already encoded as compact JSON (see `_RuleTemplate`)."""


# A marker is a whole JSON string (the value goes in as JSON) or part of one (its escaped text goes in).
_MARK = re.compile(r'"\\u0000(\w+)\\u0000"|\\u0000(\w+)\\u0000')


class _RuleTemplate:
    """The rule built once with the SDK and encoded once, with markers where per-sensor values go; each
    sensor's rule is then one substitution in a string. Building and encoding 10,000 rules one by one
    took most of the render time of a 10,000-sensor fleet."""

    def __init__(self, fleet: SensorFleet, routed: bool) -> None:
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
        # Annotations are Go templates, evaluated per alert: the summary takes device and location from the
        # rule's labels, so user text never enters a template (a `{{` in a location would break it) and
        # nothing in it needs escaping.
        rule["annotations"] = {
            "summary": "No data from {{ $labels.device }} ({{ $labels.location }}) for \x00after\x00"
        }
        if routed:
            rule["notification_settings"] = {"receiver": contact_point_name(fleet)}
        self.text = _compact(rule)
        self.fleet = fleet

    def render(self, sensor: WeatherSensor, window: float) -> EncodedRule:
        fleet = self.fleet
        device = sensor.spec.device_id
        seconds = int(window)
        # No `$` anywhere: Grafana expands environment variables in the query model.
        sql = (
            f"SELECT date_bin(INTERVAL '1 minute', time) AS time, count(*) AS readings FROM {MEASUREMENT} "
            f"WHERE device = {_sql_literal(device)} AND time >= now() - INTERVAL '{seconds} seconds' GROUP BY 1"
        )
        after = sensor.spec.alerting.no_data_after or fleet.spec.alerting.no_data_after
        location = sensor.spec.location
        values = {
            "uid": _compact(rule_uid(fleet, device)),
            "after": _compact(after)[1:-1],
            "title": _compact(f"no data from {device} for {after}"),
            "seconds": str(seconds),
            "sql": _compact(sql),
            "device": _compact(device),
            "location": _compact(_literal(location)),  # labels are expanded: `$$` is a `$`
        }
        return EncodedRule(_MARK.sub(lambda m: values[m.group(1) or m.group(2)], self.text))


@dataclass(frozen=True)
class ProvisionedAlerts:
    """What the earlier alert files of one fleet held: read back from the fleet's alert ConfigMaps as they
    are in the cluster (the operator) or in the previous rendered output (`weatherfleet render
    --previous`). It is how the next files know which rules and contact points to delete."""

    rules: frozenset[str] = frozenset()
    deleted_rules: tuple[str, ...] = ()
    receivers: frozenset[str] = frozenset()
    deleted_contact_points: tuple[str, ...] = ()

    @classmethod
    def from_configmaps(cls, configmaps: Iterable[Object]) -> ProvisionedAlerts:
        rules: set[str] = set()
        deleted: list[str] = []
        receivers: set[str] = set()
        deleted_cps: list[str] = []
        for cm in sorted(configmaps, key=lambda c: c["metadata"]["name"]):
            for text in (cm.get("data") or {}).values():
                try:
                    doc = json.loads(text)
                except ValueError:
                    doc = yaml.safe_load(text)
                if not isinstance(doc, dict):
                    continue
                for group in doc.get("groups") or []:
                    for rule in group.get("rules") or []:
                        rules.add(rule["uid"])
                        receiver = (rule.get("notification_settings") or {}).get("receiver")
                        if receiver:
                            receivers.add(receiver)
                deleted += [d["uid"] for d in doc.get("deleteRules") or []]
                deleted_cps += [d["uid"] for d in doc.get("deleteContactPoints") or []]
        return cls(
            frozenset(rules),
            tuple(dict.fromkeys(deleted)),
            frozenset(receivers),
            tuple(dict.fromkeys(deleted_cps)),
        )

    def with_deletions(self, current: set[str]) -> list[str]:
        """deleteRules for a fleet whose files now provision `current`: what was deleted before (still
        listed: Grafana may not have read it yet) and what was provisioned before, minus what is back."""
        carried = [u for u in self.deleted_rules if u not in current]
        fresh = sorted(self.rules - current - set(carried))
        return (carried + fresh)[-MAX_DELETE_RULES:]


def fleet_alert_configmaps(objects: Iterable[Object], namespace: str, fleet: str) -> list[Object]:
    """A fleet's alert ConfigMaps among `objects` (live or rendered), its retired file included."""
    return [
        o
        for o in objects
        if o.get("kind") == "ConfigMap"
        and o["metadata"].get("namespace") == namespace
        and (o["metadata"].get("labels") or {}).get(ALERT_LABEL) == "1"
        and (o["metadata"].get("labels") or {}).get(FLEET_LABEL) == fleet
    ]


def alert_files(
    fleet: SensorFleet,
    sensors: list[WeatherSensor],
    previous: ProvisionedAlerts | None = None,
    routed: bool | None = None,
) -> list[dict[str, Any]]:
    """Grafana alerting file-provisioning documents (`apiVersion: 1`; rules as `EncodedRule` JSON text,
    write them with `alert_file_text`), each holding at most RULES_PER_CONFIGMAP rules: one "no data from
    <device> for <noDataAfter>" rule per sensor with noDataState Alerting, routed to the fleet's Telegram
    contact point when `routed` (default: the fleet has alerting.telegram; the contact point itself is
    `contact_point_file`). The first document also lists under `deleteRules` the rules `previous` files
    provisioned that are gone now, and under `deleteContactPoints` the fleet's contact point once no rule
    routes to it."""
    if routed is None:
        routed = fleet.spec.alerting.telegram is not None
    previous = previous or ProvisionedAlerts()
    template = _RuleTemplate(fleet, routed)
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
                    "orgId": ORG_ID,
                    "name": _literal(name),
                    "folder": _literal(fleet.spec.grafana.folder),
                    "interval": "1m",
                    "rules": rules,
                }
            ]
        files.append(doc)
    current = {rule_uid(fleet, s.spec.device_id) for s in ordered}
    deletions = previous.with_deletions(current)
    if deletions:
        files[0]["deleteRules"] = [{"orgId": ORG_ID, "uid": u} for u in deletions]
    cp_uid = contact_point_uid(fleet.metadata.namespace, fleet.metadata.name)
    if not routed and (
        contact_point_name(fleet) in previous.receivers or cp_uid in previous.deleted_contact_points
    ):
        files[0]["deleteContactPoints"] = [{"orgId": ORG_ID, "uid": cp_uid}]
    return files


def contact_point_file(fleet: SensorFleet, bot_token: str) -> dict[str, Any]:
    """The fleet's Telegram contact point as a provisioning document. It holds the bot token, so it goes
    into a Secret (`grafana_children`); Grafana expands variables in contact point settings, hence `$$`."""
    telegram = fleet.spec.alerting.telegram
    if telegram is None:
        raise ValueError(f"SensorFleet {fleet.metadata.name} has no alerting.telegram")
    return {
        "apiVersion": 1,
        "contactPoints": [
            {
                "orgId": ORG_ID,
                "name": contact_point_name(fleet),
                "receivers": [
                    {
                        "uid": contact_point_uid(fleet.metadata.namespace, fleet.metadata.name),
                        "type": "telegram",
                        "settings": {
                            "bottoken": _literal(bot_token),
                            "chatid": telegram.chat_id,
                            "parse_mode": "HTML",
                        },
                        "disableResolveMessage": False,
                    }
                ],
            }
        ],
    }


def retired_alert_file(namespace: str, fleet: str, previous: ProvisionedAlerts) -> dict[str, Any] | None:
    """What stays of a deleted fleet's alerting: deleteRules for every rule its files provisioned (and
    deleteContactPoints for its contact point), or None when it provisioned nothing."""
    rules = previous.with_deletions(set())
    cp_uid = contact_point_uid(namespace, fleet)
    had_contact_point = bool(previous.receivers) or cp_uid in previous.deleted_contact_points
    if not rules and not had_contact_point:
        return None
    doc: dict[str, Any] = {"apiVersion": 1}
    if rules:
        doc["deleteRules"] = [{"orgId": ORG_ID, "uid": u} for u in rules]
    if had_contact_point:
        doc["deleteContactPoints"] = [{"orgId": ORG_ID, "uid": cp_uid}]
    return doc


def retired_name(fleet: str) -> str:
    return f"{fleet}-alerts-retired"


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
        if key not in ("groups", "deleteRules"):
            lines.append(f" {_compact(key)}: {_compact(doc[key])}{comma}")
            continue
        if key == "deleteRules":
            items = doc[key]
            lines.append(' "deleteRules": [')
            lines.extend(
                "  " + _compact(d) + ("," if i < len(items) - 1 else "") for i, d in enumerate(items)
            )
            lines.append(" ]" + comma)
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


# --- the ConfigMaps and the Secret the sidecars read ------------------------------------------------------


def grafana_children(
    fleet: SensorFleet,
    members: list[WeatherSensor],
    lbl: dict[str, str],
    owners: list[Object],
    *,
    previous: ProvisionedAlerts | None = None,
    bot_token: str | None = None,
    routed: bool | None = None,
) -> list[Object]:
    """The dashboard ConfigMap `<fleet>-dashboard` (label grafana_dashboard, annotation grafana_folder), the
    alert ConfigMaps `<fleet>-alerts[-N]` (label grafana_alert) and, with a bot token, the Secret
    `<fleet>-alerts-contact-point` (label grafana_alert) holding the Telegram contact point: the alerts
    sidecar watches ConfigMaps and Secrets with that label and writes each key as a file into Grafana's
    alerting provisioning folder. `routed` (default: a token is given) says whether rules route to it."""
    ns, name = fleet.metadata.namespace, fleet.metadata.name
    if routed is None:
        routed = fleet.spec.alerting.telegram is not None and bot_token is not None
    routed = routed and fleet.spec.alerting.telegram is not None
    board = build_dashboard(fleet, members)
    children: list[Object] = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": metadata(
                f"{name}-dashboard",
                ns,
                {**lbl, DASHBOARD_LABEL: "1"},
                owners,
                {FOLDER_ANNOTATION: fleet.spec.grafana.folder},
            ),
            "data": {f"{ns}-{name}.json": json.dumps(board, indent=2, sort_keys=True) + "\n"},
        }
    ]
    for n, doc in enumerate(alert_files(fleet, members, previous, routed)):
        suffix = "" if n == 0 else f"-{n + 1}"
        children.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": metadata(f"{name}-alerts{suffix}", ns, {**lbl, ALERT_LABEL: "1"}, owners),
                "data": {f"{ns}-{name}-alerts{suffix}.json": alert_file_text(doc)},
            }
        )
    if routed and bot_token is not None:
        children.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": metadata(f"{name}-alerts-contact-point", ns, {**lbl, ALERT_LABEL: "1"}, owners),
                "type": "Opaque",
                "stringData": {
                    f"{ns}-{name}-contact-point.json": json.dumps(
                        contact_point_file(fleet, bot_token), indent=1, sort_keys=True
                    )
                    + "\n"
                },
            }
        )
    return children


def retired_children(
    namespace: str, fleet: str, previous: ProvisionedAlerts, lbl: dict[str, str]
) -> list[Object]:
    """For a fleet that no longer exists: the ConfigMap `<fleet>-alerts-retired` (label grafana_alert, no
    owner, so it outlives the fleet) that makes Grafana delete what the fleet's files provisioned."""
    doc = retired_alert_file(namespace, fleet, previous)
    if doc is None:
        return []
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": metadata(retired_name(fleet), namespace, {**lbl, ALERT_LABEL: "1"}, []),
            "data": {f"{namespace}-{fleet}-alerts-retired.json": alert_file_text(doc)},
        }
    ]
