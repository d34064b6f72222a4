"""The operator and Grafana's alert files: the bot token Secret the fleet names becomes its contact point
(a Secret for the alerts sidecar), removed sensors' rules are listed for deletion, and a deleted fleet
leaves a retired file that deletes its rules."""

from __future__ import annotations

import base64
import json

import pytest
from helpers import wait_for

from weatherfleet.reconcilers import grafana

pytestmark = pytest.mark.slow

SENSOR = {"location": "roof $HOME", "sensors": [{"type": "bme280"}]}
TELEGRAM = {"telegram": {"botTokenSecretRef": {"name": "bot", "key": "token"}, "chatId": "-100"}}


def alert_doc(cluster, ns: str, name: str) -> dict | None:
    cm = cluster.configmap(ns, name)
    if cm is None:
        return None
    (text,) = cm.data.values()
    return json.loads(text)


def rule_uids(doc: dict | None) -> set[str]:
    return {r["uid"] for g in (doc or {}).get("groups") or [] for r in g["rules"]}


def test_contact_point_deleted_rules_and_a_retired_fleet(cluster, namespace, start_operator):
    ns = namespace
    cluster.core.create_namespaced_secret(
        ns, {"metadata": {"name": "bot"}, "data": {"token": base64.b64encode(b"42:tok").decode()}}
    )
    start_operator()
    cluster.broker_deployment(ns)
    cluster.create(
        "SensorFleet", ns, "eta", {"selector": {"matchLabels": {"fleet": "eta"}}, "alerting": TELEGRAM}
    )
    for device in ("ws-g1", "ws-g2"):
        cluster.create("WeatherSensor", ns, device, {"deviceId": device, **SENSOR}, {"fleet": "eta"})

    doc = wait_for(
        lambda: (
            len(rule_uids(alert_doc(cluster, ns, "eta-alerts"))) == 2 and alert_doc(cluster, ns, "eta-alerts")
        ),
        60,
        "two rules",
    )
    secret = wait_for(lambda: cluster.secret(ns, "eta-alerts-contact-point"), 60, "the contact point Secret")
    assert secret.metadata.labels[grafana.ALERT_LABEL] == "1"
    (text,) = (base64.b64decode(v).decode() for v in secret.data.values())
    (point,) = json.loads(text)["contactPoints"]
    assert point["receivers"][0]["settings"]["bottoken"] == "42:tok"
    assert {r["notification_settings"]["receiver"] for r in doc["groups"][0]["rules"]} == {point["name"]}
    gone = next(r["uid"] for r in doc["groups"][0]["rules"] if r["labels"]["device"] == "ws-g2")

    cluster.delete("WeatherSensor", ns, "ws-g2")
    doc = wait_for(
        lambda: (d := alert_doc(cluster, ns, "eta-alerts")) and d.get("deleteRules") and d, 60, "deleteRules"
    )
    assert doc["deleteRules"] == [{"orgId": 1, "uid": gone}]
    kept = rule_uids(doc)
    assert gone not in kept and len(kept) == 1

    cluster.delete("SensorFleet", ns, "eta")
    retired = wait_for(lambda: alert_doc(cluster, ns, "eta-alerts-retired"), 60, "the retired file")
    assert {d["uid"] for d in retired["deleteRules"]} == kept | {gone}
    assert retired["deleteContactPoints"] == [{"orgId": 1, "uid": point["receivers"][0]["uid"]}]
    assert not cluster.configmap(ns, "eta-alerts-retired").metadata.owner_references
