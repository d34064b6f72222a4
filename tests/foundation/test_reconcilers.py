"""The pure reconcilers: what each resource turns into, status and events, from observations."""

from __future__ import annotations

import copy
import importlib.util
import json
import random
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from pyhocon import ConfigFactory

from weatherfleet import identities
from weatherfleet.models import FirmwareRelease, SensorFleet, WeatherSensor
from weatherfleet.reconcilers import fleet as fleet_mod
from weatherfleet.reconcilers.broker import NANOMQ_AUTH_BLOCK, nanomq_acl
from weatherfleet.reconcilers.fleet import FleetObservation, fleet_for_sensor, reconcile_fleet
from weatherfleet.reconcilers.plan import plan_from_configmap, plan_key, rollout_plan_configmap
from weatherfleet.reconcilers.sensor import SensorObservation, reconcile_sensor
from weatherfleet.reconcilers.yamltext import dump_all
from weatherfleet.rollout import DeviceObservation, FleetPlan

_spec = importlib.util.spec_from_file_location(
    "nanomq_acl_standin", Path(__file__).with_name("nanomq_acl.py")
)
nano = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = nano
_spec.loader.exec_module(nano)

SERVICES = {"ingest": identities.INGEST, "operator": identities.OPERATOR, "otaflux": identities.OTAFLUX}


@pytest.fixture
def fleet(build) -> SensorFleet:
    doc = build.fleet(
        alerting={"noDataAfter": "15m", "telegram": {"botTokenSecretRef": {"name": "tg", "key": "token"}, "chatId": "-1001"}},
        rollout={"release": "fw-2", "waves": [{"percent": 50, "bakeTime": "10m"}, {"percent": 100, "bakeTime": "10m"}],
                 "failureThreshold": {"count": 1}},
    )  # fmt: skip
    doc["metadata"].update(uid="fleet-uid", generation=3)
    return SensorFleet.model_validate(doc)


def _sensor(build, device, sensors=None, **spec) -> WeatherSensor:
    doc = build.sensor(device, **spec)
    if sensors:
        doc["spec"]["sensors"] = sensors
    doc["metadata"].update(uid=f"uid-{device}", generation=1)
    return WeatherSensor.model_validate(doc)


@pytest.fixture
def sensors(build) -> list[WeatherSensor]:
    return [
        _sensor(build, "dev-01"),
        _sensor(build, "dev-02", [{"type": "bme280"}, {"type": "scd30"}], location="shed"),
        _sensor(
            build,
            "dev-03",
            [{"type": "bme280"}, {"type": "sds011"}],
            location="street",
            alerting={"noDataAfter": "30m"},
        ),
    ]


@pytest.fixture
def release(build) -> FirmwareRelease:
    doc = build.release("fw-2", "2.0.0")
    doc["status"] = {"signatureVerified": True}
    return FirmwareRelease.model_validate(doc)


def passwords(devices):
    return {**{d: f"pw-{d}" for d in devices}, **{s: f"pw-{s}" for s in identities.SERVICES}}


def observe(build, sensors, release=None, **kw) -> FleetObservation:
    return FleetObservation(now=build.now, sensors=sensors, releases={release.metadata.name: release} if release else {},
                            **kw)  # fmt: skip


def by_name(children, kind, name):
    return next(c for c in children if c["kind"] == kind and c["metadata"]["name"] == name)


# --- WeatherSensor ---------------------------------------------------------------------------------------


def test_device_certificate_follows_the_fleet_policy(build, fleet, sensors):
    result = reconcile_sensor(sensors[0], fleet, SensorObservation(now=build.now), "s3cret")
    cert = by_name(result.children, "Certificate", "dev-01")
    assert cert["spec"] == {
        "commonName": "dev-01",
        "duration": "2160h",
        "renewBefore": "360h",
        "issuerRef": {"group": "cert-manager.io", "kind": "ClusterIssuer", "name": "weatherfleet-ca"},
        "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
        "secretName": "dev-01-device-tls",
        "secretTemplate": {"labels": cert["metadata"]["labels"]},
        "subject": {"organizations": ["weatherfleet"]},
        "usages": ["client auth", "digital signature"],
    }
    assert cert["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "weatherfleet",
        "app.kubernetes.io/part-of": "weatherfleet",
        "weatherfleet.io/device": "dev-01",
        "weatherfleet.io/fleet": "garden",
    }
    assert cert["metadata"]["ownerReferences"] == [
        {"apiVersion": "weatherfleet.io/v1alpha1", "kind": "WeatherSensor", "name": "dev-01", "uid": "uid-dev-01",
         "controller": True, "blockOwnerDeletion": True}
    ]  # fmt: skip


def test_certificate_policy_changes_reach_the_certificate(build, sensors):
    doc = build.fleet(certificates={"duration": "720h", "renewBefore": "48h", "privateKey": {"algorithm": "ECDSA", "size": 384},
                                    "issuerRef": {"name": "lab-ca", "kind": "Issuer"}})  # fmt: skip
    result = reconcile_sensor(sensors[0], SensorFleet.model_validate(doc), SensorObservation(now=build.now))
    spec = result.children[0]["spec"]
    assert (spec["duration"], spec["renewBefore"], spec["privateKey"]["size"]) == ("720h", "48h", 384)
    assert spec["issuerRef"] == {"group": "cert-manager.io", "kind": "Issuer", "name": "lab-ca"}


def test_nanomq_credentials_secret_uses_the_callers_password(build, fleet, sensors):
    result = reconcile_sensor(
        sensors[0], fleet, SensorObservation(now=build.now, certificate_ready=True), "s3cret"
    )
    secret = by_name(result.children, "Secret", "dev-01-mqtt-credentials")
    assert secret["type"] == "kubernetes.io/basic-auth"
    assert secret["stringData"] == {"username": "dev-01", "password": "s3cret"}
    conds = {c.type: c for c in result.status.conditions}
    assert conds["BrokerAccess"].status == "True" and "sensors/dev-01/#" in conds["BrokerAccess"].message
    assert conds["Ready"].status == "True"


def test_without_a_password_there_is_no_secret_and_access_is_pending(build, fleet, sensors):
    result = reconcile_sensor(sensors[0], fleet, SensorObservation(now=build.now, certificate_ready=True))
    assert [c["kind"] for c in result.children] == ["Certificate"]
    conds = {c.type: c for c in result.status.conditions}
    assert (conds["BrokerAccess"].status, conds["BrokerAccess"].reason) == ("False", "CredentialsPending")
    assert conds["Ready"].status == "False" and "BrokerAccess" in conds["Ready"].message


def test_mosquitto_fleets_need_no_password(build, sensors):
    mosq = SensorFleet.model_validate(build.fleet(broker={"kind": "mosquitto", "host": "mosquitto"}))
    result = reconcile_sensor(
        sensors[0], mosq, SensorObservation(now=build.now, certificate_ready=True), "ignored"
    )
    assert [c["kind"] for c in result.children] == ["Certificate"]
    assert {c.type: c.status for c in result.status.conditions}["Ready"] == "True"


def test_a_sensor_outside_every_fleet_gets_nothing_and_says_why(build, sensors):
    result = reconcile_sensor(sensors[0], None, SensorObservation(now=build.now))
    assert result.children == []
    conds = {c.type: c for c in result.status.conditions}
    assert conds["CertificateReady"].reason == "NotInFleet" and conds["Ready"].status == "False"
    assert result.status.fleet is None


@pytest.mark.parametrize(
    ("seen_ago", "device", "status", "reason"),
    [
        (None, None, "False", "NeverSeen"),
        (timedelta(minutes=5), None, "True", "Reporting"),
        (timedelta(minutes=16), None, "False", "NoData"),
        (timedelta(minutes=1), DeviceObservation(device_id="dev-01", online=False), "False", "Disconnected"),
    ],
)
def test_online_from_last_seen_and_no_data_after(build, fleet, sensors, seen_ago, device, status, reason):
    seen = build.now - seen_ago if seen_ago else None
    result = reconcile_sensor(
        sensors[0], fleet, SensorObservation(now=build.now, last_seen=seen, device=device)
    )
    online = {c.type: c for c in result.status.conditions}["Online"]
    assert (online.status, online.reason) == (status, reason)
    assert result.status.online is (status == "True")
    if seen:
        assert result.status.last_seen == seen


def test_sensor_no_data_after_overrides_the_fleet(build, fleet, sensors):
    seen = build.now - timedelta(minutes=20)  # stale for the fleet's 15m, fine for dev-03's 30m
    statuses = [
        {c.type: c.status for c in reconcile_sensor(s, fleet, SensorObservation(now=build.now, last_seen=seen)).status.conditions}["Online"]
        for s in (sensors[0], sensors[2])
    ]  # fmt: skip
    assert statuses == ["False", "True"]


@pytest.mark.parametrize(
    ("desired", "device", "status", "reason", "error"),
    [
        (None, None, "Unknown", "NoDesiredVersion", None),
        ("2.0.0", DeviceObservation(device_id="dev-01", reported_version="2.0.0"), "True", "UpToDate", None),
        ("2.0.0", DeviceObservation(device_id="dev-01", reported_version="1.0.0", ota_state="downloading"), "False", "UpdatePending", None),
        ("2.0.0", DeviceObservation(device_id="dev-01", reported_version="1.0.0", ota_state="rolled_back", ota_version="2.0.0",
                                    ota_reason="watchdog reset"), "False", "UpdateFailed", "watchdog reset"),
    ],
)  # fmt: skip
def test_firmware_current_and_firmware_status(build, fleet, sensors, desired, device, status, reason, error):
    obs = SensorObservation(now=build.now, desired_version=desired, device=device)
    result = reconcile_sensor(sensors[0], fleet, obs)
    cond = {c.type: c for c in result.status.conditions}["FirmwareCurrent"]
    assert (cond.status, cond.reason) == (status, reason)
    assert result.status.firmware.desired == desired
    assert result.status.firmware.last_error == error
    if device:
        assert result.status.firmware.reported == device.reported_version
        assert result.status.firmware.state == device.ota_state
    if reason == "UpdateFailed":
        assert [e.reason for e in result.events] == ["UpdateFailed"]


def test_transition_times_move_only_when_a_status_changes_and_events_follow_transitions(
    build, fleet, sensors
):
    sensor = sensors[0]
    t1 = build.now
    first = reconcile_sensor(
        sensor, fleet, SensorObservation(now=t1, last_seen=t1, certificate_ready=True), "pw"
    )
    assert {e.reason for e in first.events} == {"CertificateReady", "SensorOnline"}
    sensor = sensor.model_copy(update={"status": first.status})
    t2 = t1 + timedelta(minutes=5)
    second = reconcile_sensor(sensor, fleet, SensorObservation(now=t2, certificate_ready=True), "pw")
    assert second.events == []
    times = {c.type: c.last_transition_time for c in second.status.conditions}
    assert times["Online"] == t1 and times["CertificateReady"] == t1
    sensor = sensor.model_copy(update={"status": second.status})
    t3 = t1 + timedelta(minutes=20)
    third = reconcile_sensor(sensor, fleet, SensorObservation(now=t3, certificate_ready=True), "pw")
    assert [(e.type, e.reason) for e in third.events] == [("Warning", "SensorOffline")]
    online = {c.type: c for c in third.status.conditions}["Online"]
    assert online.last_transition_time == t3 and online.observed_generation == 1
    assert third.status.observed_generation == 1


def test_fleet_for_sensor_takes_the_first_matching_fleet_by_name(build, sensors):
    b = SensorFleet.model_validate(build.fleet("b", selector={"matchLabels": {}}))
    a = SensorFleet.model_validate(build.fleet("a", selector={"matchExpressions": [{"key": "weatherfleet.io/fleet", "operator": "Exists"}]}))  # fmt: skip
    other_ns = SensorFleet.model_validate(
        {**build.fleet("0"), "metadata": {"name": "0", "namespace": "elsewhere"}}
    )
    assert fleet_for_sensor(sensors[0], [b, other_ns, a]).metadata.name == "a"


# --- SensorFleet: broker ---------------------------------------------------------------------------------


def test_broker_server_certificate_only_when_the_fleet_manages_it(build, fleet, sensors, release):
    # by default gitops deploys the broker with its certificate: a second owner would fight over it
    default = reconcile_fleet(fleet, observe(build, sensors, release, passwords=passwords([])))
    assert not [c for c in default.children if c["metadata"]["name"] == "nanomq-server"]
    managed = fleet.model_copy(deep=True)
    managed.spec.broker.manage_server_certificate = True
    result = reconcile_fleet(managed, observe(build, sensors, release, passwords=passwords([])))
    cert = by_name(result.children, "Certificate", "nanomq-server")
    assert "server auth" in cert["spec"]["usages"]
    assert "nanomq.weatherfleet.svc" in cert["spec"]["dnsNames"]


def test_nanomq_children_and_password_file(build, fleet, sensors, release):
    devices = [s.spec.device_id for s in sensors]
    pw = {**passwords(devices), "intruder": "pw-intruder"}  # not a member: must not get in
    result = reconcile_fleet(fleet, observe(build, sensors, release, passwords=pw))
    names = [(c["kind"], c["metadata"]["name"]) for c in result.children]
    assert names == sorted(
        names, key=lambda n: ("cert-manager.io/v1" if n[0] == "Certificate" else "v1", n[0], n[1])
    )
    assert set(names) == {("ConfigMap", "nanomq-acl"), ("Secret", "nanomq-passwords"),
                          ("ConfigMap", "garden-dashboard"), ("ConfigMap", "garden-alerts")}  # fmt: skip
    for child in result.children:
        assert child["metadata"]["labels"]["weatherfleet.io/fleet"] == "garden"
        assert child["metadata"]["ownerReferences"][0]["uid"] == "fleet-uid"
    pwd = by_name(result.children, "Secret", "nanomq-passwords")["stringData"]["nanomq_pwd.conf"]
    users = ConfigFactory.parse_string(pwd)
    assert dict(users) == {u: p for u, p in pw.items() if u != "intruder"}
    assert result.members == devices


def test_nanomq_acl_grants_exactly_the_contract(build, fleet, sensors):
    result = reconcile_fleet(fleet, observe(build, sensors))
    text = by_name(result.children, "ConfigMap", "nanomq-acl")["data"]["nanomq_acl.conf"]
    assert text == nanomq_acl("garden", "sensors")
    acl = nano.NanoAcl(text)
    ok = [
        ("dev-01", "publish", "sensors/dev-01/measurements"),
        ("dev-01", "publish", "sensors/dev-01/status"),
        ("dev-01", "subscribe", "ota/dev-01/#"),
        ("dev-01", "subscribe", "ota/dev-01"),
        (SERVICES["ingest"], "subscribe", "sensors/#"),
        (SERVICES["operator"], "subscribe", "sensors/+/status"),
        (SERVICES["operator"], "subscribe", "sensors/+/ota"),
        (SERVICES["otaflux"], "publish", "ota/dev-02"),
    ]
    refused = [
        ("dev-01", "publish", "sensors/dev-02/measurements"),
        ("dev-01", "publish", "ota/dev-01"),
        ("dev-01", "subscribe", "ota/#"),
        ("dev-01", "subscribe", "ota/dev-02/#"),
        ("dev-01", "subscribe", "sensors/#"),
        ("dev-01", "subscribe", "sensors/dev-01/#"),
        (SERVICES["ingest"], "publish", "sensors/weatherfleet-ingest/x"),
        (SERVICES["operator"], "subscribe", "sensors/#"),
        (SERVICES["operator"], "subscribe", "sensors/+/measurements"),
        (SERVICES["otaflux"], "subscribe", "sensors/#"),
        (SERVICES["otaflux"], "publish", "sensors/weatherfleet-otaflux/x"),
    ]
    assert [c for c in ok if not acl.allowed(*c)] == []
    assert [c for c in refused if acl.allowed(*c)] == []
    # Explicit deny at the end: the broker's no_match setting does not matter.
    assert [c for c in refused if nano.NanoAcl(text, no_match="allow").allowed(*c)] == []


def test_nanomq_auth_block_is_hocon_with_deny_defaults():
    # The include paths are the contract with the gitops NanoMQ Deployment's mounts (contracts.md).
    assert 'password = {include "/etc/nanomq/pwd/nanomq_pwd.conf"}' in NANOMQ_AUTH_BLOCK
    assert 'acl = {include "/etc/nanomq/acl/nanomq_acl.conf"}' in NANOMQ_AUTH_BLOCK
    block = "\n".join(line for line in NANOMQ_AUTH_BLOCK.splitlines() if "include" not in line)
    auth = ConfigFactory.parse_string(block)["auth"]
    assert auth["allow_anonymous"] is False and auth["no_match"] == "deny"


def test_mosquitto_fleet_gets_per_user_acl_a_bound_config_and_only_service_logins(build, sensors):
    mosq = SensorFleet.model_validate(build.fleet(broker={"kind": "mosquitto", "host": "mosquitto", "aclConfigMap": "mosquitto-acl", "deployment": "mosquitto", "manageServerCertificate": True}))  # fmt: skip
    result = reconcile_fleet(mosq, observe(build, sensors, passwords=passwords(["dev-01"])))
    data = by_name(result.children, "ConfigMap", "mosquitto-acl")["data"]
    acl = data["mosquitto.acl"]
    for device in ("dev-01", "dev-02", "dev-03"):
        assert f"user {device}\ntopic write sensors/{device}/#\ntopic read ota/{device}/#\n" in acl
    # issue 14: on the boards' listener the client id is the certificate's CN; the services' listener
    # admits the service logins only (devices log in by certificate: no password of theirs is written)
    devices, services = data["mosquitto.conf"].split("\n# services\n")
    assert "listener 8883\n" in devices and "use_username_as_clientid true" in devices
    assert "listener 8884\n" in services and "use_username_as_clientid" not in services
    assert "password_file /mosquitto/logins/mosquitto.passwd" in services
    secret = by_name(result.children, "Secret", "nanomq-passwords")["stringData"]
    assert [line.split(":")[0] for line in secret["mosquitto.passwd"].splitlines()] == sorted(
        identities.SERVICES
    )
    assert (
        by_name(result.children, "Certificate", "mosquitto-server")["spec"]["secretName"] == "mosquitto-tls"
    )


def test_config_hash_follows_acl_and_passwords_and_reaches_the_broker_deployment(build, fleet, sensors):
    devices = [s.spec.device_id for s in sensors]
    base = reconcile_fleet(fleet, observe(build, sensors, passwords=passwords(devices)))
    same = reconcile_fleet(fleet, observe(build, list(reversed(sensors)), passwords=passwords(devices)))
    rotated = reconcile_fleet(
        fleet, observe(build, sensors, passwords={**passwords(devices), "dev-01": "new"})
    )
    fewer = reconcile_fleet(fleet, observe(build, sensors[:2], passwords=passwords(devices[:2])))
    assert base.config_hash == same.config_hash
    assert len({base.config_hash, rotated.config_hash, fewer.config_hash}) == 3
    assert base.broker_patch == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "nanomq", "namespace": "weatherfleet"},
        "spec": {
            "template": {"metadata": {"annotations": {"weatherfleet.io/config-hash": base.config_hash}}}
        },
    }


def test_missing_passwords_and_oversized_configuration_are_conditions(build, fleet, sensors, monkeypatch):
    result = reconcile_fleet(fleet, observe(build, sensors, passwords=passwords(["dev-01"])))
    broker = {c.type: c for c in result.status.conditions}["BrokerConfigured"]
    assert (broker.status, broker.reason) == ("False", "CredentialsPending")
    assert "dev-02, dev-03" in broker.message
    monkeypatch.setattr(fleet_mod, "MAX_OBJECT_DATA", 100)
    result = reconcile_fleet(fleet, observe(build, sensors))
    broker = {c.type: c for c in result.status.conditions}["BrokerConfigured"]
    assert broker.reason == "TooLarge" and "BrokerConfigTooLarge" in [e.reason for e in result.events]


# --- SensorFleet: Grafana --------------------------------------------------------------------------------


def test_dashboard_panels_queries_and_label(build, fleet, sensors):
    result = reconcile_fleet(fleet, observe(build, sensors))
    cm = by_name(result.children, "ConfigMap", "garden-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Weather"}
    board = json.loads(cm["data"]["weatherfleet-garden.json"])
    titles = [p["title"] for p in board["panels"]]
    for quantity in ("Temperature", "Humidity", "Pressure", "CO2", "PM2.5", "PM10"):
        assert f"{quantity} per location" in titles
    for panel in ("Devices online", "Online state", "Firmware versions", "OTA events"):
        assert panel in titles
    ids = [p["id"] for p in board["panels"]]
    assert len(set(ids)) == len(ids)
    targets = [t for p in board["panels"] for t in p.get("targets", [])]
    assert all(t["datasource"] == {"type": "influxdb", "uid": "influxdb3"} and t["rawQuery"] for t in targets)
    sql = " ".join(t["rawSql"] for t in targets)
    assert 'avg("co2")' in sql and 'avg("pm25")' in sql and "FROM weather" in sql
    assert "FROM device_status" in sql and "FROM ota_events" in sql and "GROUP BY 1, location" in sql
    location = next(v for v in board["templating"]["list"] if v["name"] == "location")
    assert location["query"] == "garden,shed,street"


def test_dashboard_shows_only_what_the_fleet_measures(build, fleet, sensors):
    result = reconcile_fleet(fleet, observe(build, sensors[:1]))
    board = json.loads(
        by_name(result.children, "ConfigMap", "garden-dashboard")["data"]["weatherfleet-garden.json"]
    )
    quantities = [p["title"] for p in board["panels"] if p["type"] == "timeseries"]
    assert quantities == ["Temperature per location", "Humidity per location", "Pressure per location"]


def _alert_docs(children):
    return [json.loads(next(iter(c["data"].values()))) for c in children if c["metadata"]["labels"].get("grafana_alert") == "1"]  # fmt: skip


def test_one_no_data_rule_per_sensor_routed_to_telegram(build, fleet, sensors):
    result = reconcile_fleet(fleet, observe(build, sensors, telegram_token="123:tok"))
    cm = by_name(result.children, "ConfigMap", "garden-alerts")
    assert "annotations" not in cm["metadata"]
    (doc,) = _alert_docs([c for c in result.children if c["kind"] == "ConfigMap"])
    assert "\\u0000" not in next(iter(cm["data"].values()))  # every per-sensor marker was filled in
    assert doc["apiVersion"] == 1
    assert "policies" not in doc  # one tree per organisation: never a fleet's to replace
    rules = doc["groups"][0]["rules"]
    assert [r["title"] for r in rules] == [
        "no data from dev-01 for 15m",
        "no data from dev-02 for 15m",
        "no data from dev-03 for 30m",
    ]
    for rule, seconds in zip(rules, (900, 900, 1800), strict=True):
        assert rule["noDataState"] == "Alerting" and rule["condition"] == "C"
        assert rule["data"][0]["relativeTimeRange"] == {"from": seconds, "to": 0}
        assert rule["data"][0]["datasourceUid"] == "influxdb3"
        assert "$" not in rule["data"][0]["model"]["rawSql"]  # Grafana would expand it as a variable
        assert rule["notification_settings"] == {"receiver": "weatherfleet-weatherfleet-garden-telegram"}
        assert rule["labels"]["weatherfleet_fleet"] == "garden"
    secret = by_name(result.children, "Secret", "garden-alerts-contact-point")
    assert secret["metadata"]["labels"]["grafana_alert"] == "1"
    (text,) = secret["stringData"].values()
    (point,) = json.loads(text)["contactPoints"]
    assert point["name"] == "weatherfleet-weatherfleet-garden-telegram"
    (receiver,) = point["receivers"]
    assert receiver["type"] == "telegram"
    assert receiver["settings"]["bottoken"] == "123:tok"
    assert receiver["settings"]["chatid"] == "-1001"
    conds = {c.type: c for c in result.status.conditions}
    assert conds["AlertingConfigured"].reason == "ContactPointProvisioned"


def test_without_the_bot_token_rules_are_not_routed_and_the_fleet_says_why(build, fleet, sensors):
    result = reconcile_fleet(fleet, observe(build, sensors))
    assert not [c for c in result.children if c["kind"] == "Secret"]
    (doc,) = _alert_docs(result.children)
    assert all("notification_settings" not in r for r in doc["groups"][0]["rules"])
    cond = {c.type: c for c in result.status.conditions}["AlertingConfigured"]
    assert (cond.status, cond.reason) == ("False", "TelegramTokenMissing") and "tg" in cond.message


def test_alerts_without_telegram_have_no_contact_point(build, sensors):
    quiet = SensorFleet.model_validate(build.fleet())
    result = reconcile_fleet(quiet, observe(build, sensors, telegram_token="unused"))
    (doc,) = _alert_docs(result.children)
    assert "contactPoints" not in doc and "policies" not in doc
    assert all("notification_settings" not in r for r in doc["groups"][0]["rules"])
    assert not [c for c in result.children if c["kind"] == "Secret"]


def test_user_text_keeps_its_dollars_in_provisioning_files(build, fleet):
    sensor = _sensor(build, "dev-09", location="$HOME shed")
    (doc,) = _alert_docs(reconcile_fleet(fleet, observe(build, [sensor])).children)
    (rule,) = doc["groups"][0]["rules"]
    assert rule["labels"]["location"] == "$$HOME shed"  # labels are expanded: `$$` is one `$`
    # annotations are taken raw and are templates: the location comes from the label, never as text
    assert rule["annotations"]["summary"] == (
        "No data from {{ $labels.device }} ({{ $labels.location }}) for 15m"
    )


def test_large_fleets_split_alert_rules_over_configmaps_under_the_size_limit(build, fleet):
    many = [_sensor(build, f"dev-{i:04d}") for i in range(1000)]
    result = reconcile_fleet(fleet, observe(build, many))
    alerts = [c for c in result.children if c["metadata"]["labels"].get("grafana_alert") == "1"]
    assert [c["metadata"]["name"] for c in alerts] == ["garden-alerts", "garden-alerts-2", "garden-alerts-3"]
    for cm in alerts:
        assert sum(len(v) for v in cm["data"].values()) < 900_000
    docs = _alert_docs(result.children)
    uids = [r["uid"] for d in docs for r in d["groups"][0]["rules"]]
    assert len(uids) == 1000 == len(set(uids))
    assert len({d["groups"][0]["name"] for d in docs}) == 3
    assert not any("contactPoints" in d for d in docs)


# --- SensorFleet: rollout --------------------------------------------------------------------------------


def test_release_found_and_verified_opens_the_first_wave(build, fleet, sensors, release):
    result = reconcile_fleet(fleet, observe(build, sensors, release))
    assert result.status.rollout.phase == "Progressing" and result.status.rollout.percent == 50
    assert result.plan.candidate == "2.0.0" and result.plan.percent == 50
    assert result.plan_key == "weatherfleet.garden.json" == plan_key("weatherfleet", "garden")
    assert [(e.type, e.reason) for e in result.events] == [("Normal", "RolloutStarted")]
    conds = {c.type: c for c in result.status.conditions}
    assert conds["ReleaseAvailable"].status == "True" and conds["Ready"].status == "True"
    assert result.status.observed_generation == 3


def test_missing_or_unverified_release_opens_nothing(build, fleet, sensors, release):
    missing = reconcile_fleet(fleet, observe(build, sensors))
    conds = {c.type: c for c in missing.status.conditions}
    assert (conds["ReleaseAvailable"].status, conds["ReleaseAvailable"].reason) == ("False", "NotFound")
    assert "FirmwareRelease fw-2 not found" in missing.status.rollout.reason
    assert missing.plan.candidate is None
    assert ("Warning", "ReleaseUnavailable") in [(e.type, e.reason) for e in missing.events]
    signed = build.release(
        "fw-2", "2.0.0", signature={"required": True, "publicKeyRef": {"name": "k", "key": "pub"}}
    )
    unverified = FirmwareRelease.model_validate(signed)  # required, not verified yet (status empty)
    pending = reconcile_fleet(fleet, observe(build, sensors, unverified))
    assert {c.type: c.reason for c in pending.status.conditions}["ReleaseAvailable"] == "SignatureNotVerified"
    assert pending.plan.candidate is None and pending.plan.percent == 0


def test_failures_halt_the_rollout_close_the_plan_and_say_why(build, fleet, sensors, release):
    first = reconcile_fleet(fleet, observe(build, sensors, release))
    fleet2 = fleet.model_copy(update={"status": first.status})
    rid = first.plan.rollout_id
    inside = [s.spec.device_id for s in sensors if first.plan.version_for(s.spec.device_id) == "2.0.0"]
    assert inside, f"no device inside 50% of {rid}: pick other ids"
    bad = DeviceObservation(
        device_id=inside[0], ota_state="failed", ota_version="2.0.0", ota_reason="signature mismatch"
    )
    result = reconcile_fleet(fleet2, observe(build, sensors, release, devices={inside[0]: bad}))
    assert result.status.rollout.phase == "Halted"
    assert result.plan.halted and result.plan.percent == 0 and result.plan.version_for(inside[0]) is None
    events = [(e.type, e.reason) for e in result.events]
    assert ("Warning", "RolloutHalted") in events
    halted = next(e for e in result.events if e.reason == "RolloutHalted")
    assert f"{inside[0]} (signature mismatch)" in halted.message
    conds = {c.type: c for c in result.status.conditions}
    assert conds["RolloutHealthy"].status == "False" and conds["Ready"].status == "False"


def test_advancing_a_wave_is_an_event_and_pins_and_exclusions_reach_the_plan(build, fleet, release):
    members = [
        _sensor(build, "dev-01"),
        _sensor(build, "dev-02", firmware={"pinnedVersion": "1.0.0"}),
        _sensor(build, "dev-03", features={"ota": False}),
        _sensor(build, "dev-04", firmware={"channel": "beta"}),
    ]
    first = reconcile_fleet(fleet, observe(build, members, release))
    assert first.plan.pins == {"dev-02": "1.0.0"}
    assert first.plan.exclusions == ["dev-03", "dev-04"]
    later = fleet.model_copy(update={"status": first.status})
    then = build.now + timedelta(minutes=11)
    waiting = reconcile_fleet(later, observe(build, members, release).model_copy(update={"now": then}))
    assert waiting.status.rollout.wave == 0  # baked, but nobody runs 2.0.0 yet: the success gate holds
    assert "0 of 1 devices needed run 2.0.0" in waiting.status.rollout.reason
    updated = {"dev-01": DeviceObservation(device_id="dev-01", reported_version="2.0.0")}
    obs = observe(build, members, release, devices=updated, last_seen={"dev-01": then})
    result = reconcile_fleet(later, obs.model_copy(update={"now": then}))
    assert result.status.rollout.wave == 1 and result.status.rollout.percent == 100
    assert [(e.type, e.reason) for e in result.events] == [("Normal", "RolloutAdvanced")]
    assert result.plan.version_for("dev-01") == "2.0.0"
    assert result.plan.version_for("dev-02") == "1.0.0"
    assert result.plan.version_for("dev-03") is None and result.plan.version_for("dev-04") is None


def test_sensor_counts(build, fleet, sensors):
    seen = {"dev-01": build.now - timedelta(minutes=1), "dev-02": build.now - timedelta(hours=1)}
    result = reconcile_fleet(fleet, observe(build, sensors, last_seen=seen))
    assert result.status.sensors.model_dump() == {"total": 3, "online": 1, "stale": 1}


# --- determinism and the plan ConfigMap -----------------------------------------------------------------


def test_same_input_gives_byte_identical_output(build, fleet, sensors, release):
    def render(order):
        pw = passwords([s.spec.device_id for s in sensors])
        result = reconcile_fleet(copy.deepcopy(fleet), observe(build, order, release, passwords=pw))
        per_sensor = [reconcile_sensor(s, fleet, SensorObservation(now=build.now), pw[s.spec.device_id]) for s in sorted(order, key=lambda s: s.spec.device_id)]  # fmt: skip
        children = result.children + [c for r in per_sensor for c in r.children]
        return dump_all(children) + result.status.model_dump_json() + result.plan.model_dump_json()

    shuffled = sensors[:]
    random.Random(7).shuffle(shuffled)
    assert render(sensors) == render(sensors) == render(shuffled)


def test_rollout_plan_configmap_holds_one_json_key_per_fleet():
    plans = {"b.x.json": FleetPlan(rolloutId="b/x/r@1.0.0", candidate="1.0.0", percent=5, devices=["d2"]),
             "a.y.json": FleetPlan(stable="0.9.0", devices=["d1"])}  # fmt: skip
    cm = rollout_plan_configmap(plans, "weatherfleet")
    assert cm["metadata"]["name"] == "weatherfleet-rollout-plan"
    assert list(cm["data"]) == ["a.y.json", "b.x.json"]
    parsed = plan_from_configmap(cm, "b.x.json")  # the JSON, its members from binaryData
    assert parsed == plans["b.x.json"]
    assert json.loads(cm["data"]["b.x.json"])["rolloutId"] == "b/x/r@1.0.0"  # by alias, as OtaFlux reads it
