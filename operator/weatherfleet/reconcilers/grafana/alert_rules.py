"""The fleet's "no data" alert rules as Grafana alerting file-provisioning documents: one rule per sensor,
split over several ConfigMaps to stay well under the 1 MiB object limit, and the deletions that keep
Grafana in step with the fleet (see `provisioning` for how Grafana reads them)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml
from grafana_foundation_sdk.builders import alerting
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants

from ...durations import parse_duration
from ...messages import MEASUREMENT
from ...models.fleet import SensorFleet
from ...models.sensor import WeatherSensor
from ..common import FLEET_LABEL, Object
from .datasource import SqlTarget, sql_literal, to_plain
from .provisioning import (
    ALERT_LABEL,
    ORG_ID,
    compact,
    contact_point_name,
    contact_point_uid,
    expanded_literal,
    provisioned_uid,
)

RULES_PER_CONFIGMAP = 400  # ~1.2 KiB per rule in YAML: about 480 KiB per ConfigMap
# deleteRules kept in a fleet's first file: Grafana may read a file only at its next reload or start, so a
# deletion stays listed until the rule comes back; beyond this many, the oldest are dropped (about 60 bytes
# each: 5,000 keep the file far below the ConfigMap limit).
MAX_DELETE_RULES = 5000


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


def rule_uid(fleet: SensorFleet, device_id: str) -> str:
    return provisioned_uid(fleet.metadata.namespace, fleet.metadata.name, device_id)


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
    plain = to_plain(rule.build())
    # File provisioning takes the rule without the API's placement fields (group and folder are above it).
    for key in ("folderUID", "ruleGroup", "orgID", "orgId"):
        plain.pop(key, None)
    return plain


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
        self.text = compact(rule)
        self.fleet = fleet

    def render(self, sensor: WeatherSensor, window: float) -> EncodedRule:
        fleet = self.fleet
        device = sensor.spec.device_id
        seconds = int(window)
        # No `$` anywhere: Grafana expands environment variables in the query model.
        sql = (
            f"SELECT date_bin(INTERVAL '1 minute', time) AS time, count(*) AS readings FROM {MEASUREMENT} "
            f"WHERE device = {sql_literal(device)} AND time >= now() - INTERVAL '{seconds} seconds' GROUP BY 1"
        )
        after = sensor.spec.alerting.no_data_after or fleet.spec.alerting.no_data_after
        location = sensor.spec.location
        values = {
            "uid": compact(rule_uid(fleet, device)),
            "after": compact(after)[1:-1],
            "title": compact(f"no data from {device} for {after}"),
            "seconds": str(seconds),
            "sql": compact(sql),
            "device": compact(device),
            "location": compact(expanded_literal(location)),  # labels are expanded: `$$` is a `$`
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
                    "name": expanded_literal(name),
                    "folder": expanded_literal(fleet.spec.grafana.folder),
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


def alert_file_text(doc: dict[str, Any]) -> str:
    """An alert provisioning document as JSON (Grafana reads `.json` provisioning files; JSON is also
    YAML) with one rule per line: diffs in git show exactly which sensors' rules changed, and the C JSON
    encoder writes 10,000 rules in milliseconds (indented JSON or block YAML take most of a second)."""
    lines = ["{"]
    keys = sorted(doc)
    for n, key in enumerate(keys):
        comma = "," if n < len(keys) - 1 else ""
        if key not in ("groups", "deleteRules"):
            lines.append(f" {compact(key)}: {compact(doc[key])}{comma}")
            continue
        if key == "deleteRules":
            items = doc[key]
            lines.append(' "deleteRules": [')
            lines.extend("  " + compact(d) + ("," if i < len(items) - 1 else "") for i, d in enumerate(items))
            lines.append(" ]" + comma)
            continue
        lines.append(' "groups": [')
        for g, group in enumerate(doc["groups"]):
            head = {k: v for k, v in group.items() if k != "rules"}
            lines.append("  " + compact(head)[:-1] + ', "rules": [')
            rules = group.get("rules", [])
            lines.extend(
                "   "
                + (r if isinstance(r, EncodedRule) else compact(r))
                + ("," if i < len(rules) - 1 else "")
                for i, r in enumerate(rules)
            )
            lines.append("  ]}" + ("," if g < len(doc["groups"]) - 1 else ""))
        lines.append(" ]" + comma)
    lines.append("}")
    return "\n".join(lines) + "\n"
