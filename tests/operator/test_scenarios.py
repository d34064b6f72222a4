"""End-to-end scenarios: the real kopf operator against the API double (or a real cluster with
--real-cluster), as a person would drive it with kubectl."""

from __future__ import annotations

import base64
import logging

import pytest
from helpers import wait_for

from weatherfleet import identities
from weatherfleet.reconcilers.plan import plan_from_configmap

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

    # Until cert-manager issues the certificate, the sensor says so (after a short settle time).
    def pending():
        cond = cluster.condition(cluster.get("WeatherSensor", ns, "ws-a1"), "CertificateReady")
        return cond if cond and cond["status"] == "Unknown" else None

    if kube is not None:  # a real cert-manager may issue before we look
        assert wait_for(pending, 60, "CertificateReady Unknown while not issued")["reason"] == "Pending"
        assert not cluster.is_true("WeatherSensor", ns, "ws-a1")
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
    wait_for(
        lambda: all(
            f'"{d}": "{p}"' in password_file(cluster, ns) for d, p in zip(devices, passwords, strict=True)
        ),
        60,
        "every device's password in the NanoMQ password file",
    )
    pwd_file = password_file(cluster, ns)
    assert cluster.configmap(ns, "alpha-dashboard").metadata.labels["grafana_dashboard"] == "1"
    assert cluster.configmap(ns, "alpha-alerts").metadata.labels["grafana_alert"] == "1"
    plan_cm = cluster.configmap("weatherfleet", "weatherfleet-rollout-plan")
    plan = plan_from_configmap({"data": plan_cm.data, "binaryData": plan_cm.binary_data}, f"{ns}.alpha.json")
    assert all(plan.is_member(d) for d in devices)
    assert cluster.config_hash(ns)

    # Status as `kubectl get ws` shows it, and events a person cares about.
    ws = cluster.get("WeatherSensor", ns, "ws-a1")
    assert ws["status"]["fleet"] == "alpha" and ws["status"]["observedGeneration"] == 1
    assert cluster.condition(ws, "CertificateReady")["reason"] == "Issued"
    wait_for(
        lambda: any(e.reason == "CertificateReady" for e in cluster.events(ns, "ws-a1")), 30, "the event"
    )
    fleet = cluster.get("SensorFleet", ns, "alpha")
    assert fleet["status"]["sensors"]["total"] == 3

    # Service logins exist once per namespace and belong to no fleet (deleting a fleet keeps them).
    svc = cluster.secret(ns, "weatherfleet-ingest-mqtt-credentials")
    assert not svc.metadata.owner_references
    assert f'"weatherfleet-ingest": "{base64.b64decode(svc.data["password"]).decode()}"' in pwd_file

    # Passwords are never logged.
    text = "\n".join(r.getMessage() + str(r.__dict__) for r in caplog.records)
    assert not any(p in text for p in passwords)
    if kube is not None:  # the double records every field a schema pruned: none of ours (children too)
        assert [p for p in kube.store.pruned if "notInSchema" not in p] == []


def operator_writes(kube) -> list:
    return kube.call(lambda store: [w for w in store.writes if w.actor in ("weatherfleet-operator", "kopf")])


def reconciles(kind: str, outcome: str = "ok") -> float:
    from weatherfleet.controller import metrics

    return metrics.RECONCILES.labels(kind=kind, outcome=outcome)._value.get()


def password_file(cluster, ns: str) -> str:
    return base64.b64decode(cluster.secret(ns, "nanomq-passwords").data["nanomq_pwd.conf"]).decode()


def test_edits_update_children_and_a_noop_resync_writes_nothing(cluster, namespace, start_operator, kube):
    ns, devices = namespace, ["ws-b1", "ws-b2"]
    start_operator()
    make_fleet(cluster, ns, "beta", devices)
    wait_for(lambda: all_ready(cluster, ns, devices), 90, "every sensor Ready")
    wait_for(lambda: fleet_total(cluster, ns, "beta") == 2, 60, "the fleet counting its sensors")
    hash_before = wait_for(lambda: cluster.config_hash(ns), 30, "the broker config hash")

    # Fleet edit: the certificate policy reaches every device certificate.
    cluster.patch("SensorFleet", ns, "beta", {"spec": {"certificates": {"duration": "4320h"}}})
    wait_for(
        lambda: all(
            c["spec"]["duration"] == "4320h"
            for c in cluster.certificates(ns)
            if c["metadata"]["name"] in devices
        ),
        60,
        "certificates with the new duration",
    )
    # A new sensor: its own credentials, a new password file, and a new config hash rolls the broker.
    cluster.create("WeatherSensor", ns, "ws-b3", {"deviceId": "ws-b3", **SENSOR}, {"fleet": "beta"})
    wait_for(lambda: '"ws-b3"' in password_file(cluster, ns), 60, "ws-b3 in the NanoMQ password file")
    wait_for(lambda: cluster.config_hash(ns) != hash_before, 30, "a new config hash on the broker Deployment")
    # A sensor edit: status follows the generation.
    cluster.patch("WeatherSensor", ns, "ws-b1", {"spec": {"location": "cellar"}})
    wait_for(
        lambda: cluster.get("WeatherSensor", ns, "ws-b1")["status"].get("observedGeneration") == 2,
        60,
        "observedGeneration 2",
    )
    wait_for(lambda: all_ready(cluster, ns, [*devices, "ws-b3"]), 90, "every sensor Ready again")

    if kube is None:
        return  # a real cluster does not tell us who wrote what

    # Let the operator settle, then watch two full resyncs (every 3 s in tests) write nothing at all.
    def quiet() -> bool:
        before = len(operator_writes(kube))
        start = reconciles("SensorFleet")
        wait_for(lambda: reconciles("SensorFleet") >= start + 2, 30, "two fleet resyncs")
        return len(operator_writes(kube)) == before

    wait_for(quiet, 60, "a quiet period")
    before = len(operator_writes(kube))
    start_fleet, start_sensor = reconciles("SensorFleet"), reconciles("WeatherSensor")
    wait_for(lambda: reconciles("SensorFleet") >= start_fleet + 2, 30, "two more fleet resyncs")
    assert reconciles("WeatherSensor") >= start_sensor + 3  # every sensor was looked at again
    assert operator_writes(kube)[before:] == []


def test_deleting_a_sensor_removes_its_children(cluster, namespace, start_operator):
    ns, devices = namespace, ["ws-c1", "ws-c2"]
    start_operator()
    make_fleet(cluster, ns, "gamma", devices)
    wait_for(lambda: all_ready(cluster, ns, devices), 90, "every sensor Ready")
    wait_for(lambda: '"ws-c2"' in password_file(cluster, ns), 60, "ws-c2 in the password file")
    hash_before = cluster.config_hash(ns)

    cluster.delete("WeatherSensor", ns, "ws-c2")
    wait_for(
        lambda: "ws-c2" not in {c["metadata"]["name"] for c in cluster.certificates(ns)},
        60,
        "certificate gone",
    )
    wait_for(lambda: cluster.secret(ns, "ws-c2-mqtt-credentials") is None, 60, "credentials Secret gone")
    wait_for(lambda: '"ws-c2"' not in password_file(cluster, ns), 60, "ws-c2 out of the password file")
    wait_for(lambda: cluster.config_hash(ns) != hash_before, 30, "the broker rolled")
    assert cluster.secret(ns, "ws-c1-mqtt-credentials") is not None
    assert "ws-c1" in {c["metadata"]["name"] for c in cluster.certificates(ns)}


def test_an_invalid_resource_gets_a_clear_condition_and_others_are_unaffected(
    cluster, namespace, start_operator, kube
):
    ns = namespace
    start_operator()
    make_fleet(cluster, ns, "delta", ["ws-d1"], rollout={"release": "no-such-release"})
    # Accepted by the API server's schema, rejected by the model: bme280 is an I2C sensor.
    bad = {"deviceId": "ws-d2", "location": "shed", "sensors": [{"type": "bme280", "uart": {"id": 2}}]}
    cluster.create("WeatherSensor", ns, "ws-d2", bad, {"fleet": "delta"})

    def invalid_condition():
        cond = cluster.condition(cluster.get("WeatherSensor", ns, "ws-d2"), "Ready")
        return cond if cond and cond["reason"] == "InvalidSpec" else None

    cond = wait_for(invalid_condition, 60, "Ready=False InvalidSpec on ws-d2")
    assert cond["status"] == "False"
    assert "spec.sensors[0]" in cond["message"] and "I2C" in cond["message"]
    wait_for(
        lambda: any(e.reason == "InvalidSpec" for e in cluster.events(ns, "ws-d2")),
        30,
        "an InvalidSpec event",
    )
    # The valid sensor of the same fleet is not held up.
    wait_for(lambda: all_ready(cluster, ns, ["ws-d1"]), 90, "ws-d1 Ready")
    # A missing reference is a condition too, naming what is missing.
    fleet_cond = wait_for(
        lambda: cluster.condition(cluster.get("SensorFleet", ns, "delta"), "ReleaseAvailable"),
        60,
        "ReleaseAvailable",
    )
    assert fleet_cond["status"] == "False" and "no-such-release" in fleet_cond["message"]

    # Retried with backoff, without a crash loop: retries happen, but the status is not rewritten each time.
    start = reconciles("WeatherSensor", "invalid")
    wait_for(lambda: reconciles("WeatherSensor", "invalid") >= start + 2, 60, "two retries of ws-d2")
    if kube is not None:
        writes = [w for w in operator_writes(kube) if w.name == "ws-d2" and w.resource == "weathersensors"]
        assert len(writes) == 1, writes

    # Fixed by the user: it becomes Ready without restarting anything.
    cluster.patch("WeatherSensor", ns, "ws-d2", {"spec": {"sensors": [{"type": "bme280"}]}})
    wait_for(lambda: all_ready(cluster, ns, ["ws-d2"]), 90, "ws-d2 Ready once fixed")


def test_last_reading_and_last_seen_come_from_the_time_series_store(
    cluster, namespace, start_operator, tmp_path, monkeypatch
):
    """lastReading from what ingest stored (its SQLite store here; InfluxDB 3 in a cluster): one query per
    interval for the whole fleet."""
    import time

    from weatherfleet.ingest.records import Point
    from weatherfleet.ingest.sqlite_store import SQLiteStore

    ns = namespace
    store = SQLiteStore(tmp_path / "weather.db")
    monkeypatch.setenv("WEATHERFLEET_READINGS_SQLITE", str(tmp_path / "weather.db"))
    monkeypatch.setenv("WEATHERFLEET_READINGS_SECONDS", "0.5")
    start_operator()
    make_fleet(cluster, ns, "eps", ["ws-e1"])
    wait_for(lambda: all_ready(cluster, ns, ["ws-e1"]), 90, "ws-e1 Ready")
    now_ns = time.time_ns()
    tags = {"device": "ws-e1", "location": "roof", "firmware": "1.0.0"}
    store.write([Point("weather", tags, {"temperature": 21.5, "humidity": 40.25}, now_ns)])

    def reading():
        status = cluster.get("WeatherSensor", ns, "ws-e1")["status"]
        return status if (status.get("lastReading") or {}).get("values") else None

    status = wait_for(reading, 60, "lastReading in the status")
    assert status["lastReading"]["values"] == {"temperature": 21.5, "humidity": 40.25}
    assert status["lastSeen"] and status["online"] is True
    assert cluster.condition(cluster.get("WeatherSensor", ns, "ws-e1"), "Online")["reason"] == "Reporting"


def test_children_no_longer_wanted_are_removed(cluster, namespace, start_operator):
    """Switching a fleet from NanoMQ to Mosquitto: NanoMQ's password file and every device's NanoMQ
    credentials go (owned, no longer desired); the password Secret keeps only the service logins, in
    Mosquitto's format (its services' listener); the ACL ConfigMap switches format; the certificates stay."""
    ns, devices = namespace, ["ws-f1", "ws-f2"]
    start_operator()
    make_fleet(cluster, ns, "phi", devices)
    wait_for(lambda: all_ready(cluster, ns, devices), 90, "every sensor Ready")
    wait_for(lambda: cluster.secret(ns, "nanomq-passwords"), 60, "the NanoMQ password file")
    cluster.patch("SensorFleet", ns, "phi", {"spec": {"broker": {"kind": "mosquitto"}}})
    wait_for(
        lambda: "mosquitto.acl" in (cluster.configmap(ns, "nanomq-acl").data or {}), 60, "a Mosquitto ACL"
    )

    def service_logins_only() -> bool:
        secret = cluster.secret(ns, "nanomq-passwords")
        return secret is not None and set(secret.data or {}) == {"mosquitto.passwd"}

    wait_for(service_logins_only, 60, "NanoMQ's password file replaced by the service logins")
    logins = base64.b64decode(cluster.secret(ns, "nanomq-passwords").data["mosquitto.passwd"]).decode()
    assert {line.split(":")[0] for line in logins.splitlines()} <= set(identities.SERVICES)
    assert not any(line.startswith(("ws-f1:", "ws-f2:")) for line in logins.splitlines())
    for device in devices:
        wait_for(
            lambda d=device: cluster.secret(ns, f"{d}-mqtt-credentials") is None,
            60,
            f"{device} credentials removed",
        )
    assert "nanomq_acl.conf" not in cluster.configmap(ns, "nanomq-acl").data
    assert set(devices) <= {c["metadata"]["name"] for c in cluster.certificates(ns)}
    # Service logins belong to no fleet: kept.
    assert cluster.secret(ns, "weatherfleet-ingest-mqtt-credentials") is not None
    wait_for(lambda: all_ready(cluster, ns, devices), 60, "still Ready on Mosquitto")
