"""End-to-end scenarios: the real kopf operator against the API double (or a real cluster with
--real-cluster), as a person would drive it with kubectl."""

from __future__ import annotations

import base64
import logging

import pytest
from helpers import wait_for

pytestmark = pytest.mark.slow

SENSOR = {"location": "roof", "sensors": [{"type": "bme280"}, {"type": "sds011"}]}


def fleet_spec(selector: str, **extra) -> dict:
    return {"selector": {"matchLabels": {"fleet": selector}}, **extra}


def make_fleet(cluster, ns: str, name: str, devices: list[str], **extra) -> None:
    cluster.broker_deployment(ns)
    cluster.create("SensorFleet", ns, name, fleet_spec(name, **extra))
    for device in devices:
        cluster.create("WeatherSensor", ns, device, {"deviceId": device, **SENSOR}, {"fleet": name})


def fleet_total(cluster, ns: str, name: str) -> int:
    return (((cluster.get("SensorFleet", ns, name) or {}).get("status") or {}).get("sensors") or {}).get(
        "total", -1
    )


def all_ready(cluster, ns: str, devices: list[str]) -> bool:
    cluster.mark_certificates_ready(ns)
    return all(cluster.is_true("WeatherSensor", ns, d) for d in devices)


def test_fleet_with_sensors_gets_every_child_and_becomes_ready(
    cluster, namespace, start_operator, kube, caplog
):
    caplog.set_level(logging.DEBUG)
    ns, devices = namespace, ["ws-a1", "ws-a2", "ws-a3"]
    start_operator()
    make_fleet(cluster, ns, "alpha", devices)

    wait_for(lambda: all_ready(cluster, ns, devices), 90, "every sensor Ready")
    wait_for(lambda: cluster.is_true("SensorFleet", ns, "alpha"), 60, "the fleet Ready")
    wait_for(lambda: fleet_total(cluster, ns, "alpha") == 3, 60, "the fleet counting its sensors")

    # Children: a certificate and broker credentials per device, the broker files, dashboards, alerts.
    certs = {c["metadata"]["name"]: c for c in cluster.certificates(ns)}
    assert set(devices) <= set(certs)
    assert certs["ws-a1"]["spec"]["commonName"] == "ws-a1"
    assert certs["ws-a1"]["metadata"]["ownerReferences"][0]["kind"] == "WeatherSensor"
    acl = cluster.configmap(ns, "nanomq-acl").data["nanomq_acl.conf"]
    assert "sensors/${username}/#" in acl  # NanoMQ matches the per-device username
    passwords = []
    for device in devices:
        secret = cluster.secret(ns, f"{device}-mqtt-credentials")
        assert base64.b64decode(secret.data["username"]).decode() == device
        passwords.append(base64.b64decode(secret.data["password"]).decode())
    assert len(set(passwords)) == len(devices) and all(len(p) >= 32 for p in passwords)
    pwd_file = base64.b64decode(cluster.secret(ns, "nanomq-passwords").data["nanomq_pwd.conf"]).decode()
    assert all(f'"{d}": "{p}"' in pwd_file for d, p in zip(devices, passwords, strict=True))
    assert cluster.configmap(ns, "alpha-dashboard").metadata.labels["grafana_dashboard"] == "1"
    assert cluster.configmap(ns, "alpha-alerts").metadata.labels["grafana_alert"] == "1"
    plan = cluster.configmap("weatherfleet", "weatherfleet-rollout-plan").data[f"{ns}.alpha.json"]
    assert all(d in plan for d in devices)
    assert cluster.config_hash(ns)

    # Status as `kubectl get ws` shows it, and events a person cares about.
    ws = cluster.get("WeatherSensor", ns, "ws-a1")
    assert ws["status"]["fleet"] == "alpha" and ws["status"]["observedGeneration"] == 1
    assert cluster.condition(ws, "CertificateReady")["reason"] == "Issued"
    assert any(e.reason == "CertificateReady" for e in cluster.events(ns, "ws-a1"))
    fleet = cluster.get("SensorFleet", ns, "alpha")
    assert fleet["status"]["sensors"]["total"] == 3

    # Passwords are never logged.
    text = "\n".join(r.getMessage() + str(r.__dict__) for r in caplog.records)
    assert not any(p in text for p in passwords)
    if kube is not None:  # the double knows whether any field we wrote was pruned by the schema
        assert not [p for p in kube.store.pruned if ns in p or "status" in p], kube.store.pruned
