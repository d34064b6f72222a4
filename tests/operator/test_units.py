"""Unit tests of the operator's glue: the MQTT fleet view, the work queue, status diffs, apply skipping."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from weatherfleet import identities
from weatherfleet.controller.controller import field_errors
from weatherfleet.controller.kube import APPLIED_HASH, contains, manifest_hash, normalized, up_to_date
from weatherfleet.controller.settings import OperatorSettings
from weatherfleet.controller.statuspatch import merge_diff, prune_none
from weatherfleet.controller.workqueue import WorkQueue
from weatherfleet.models import WeatherSensor
from weatherfleet.observe import FleetView, MqttObserver

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def status(**body) -> bytes:
    return json.dumps(body).encode()


def test_fleet_view_folds_status_and_ota_events():
    changed: list[str] = []
    view = FleetView(on_change=changed.append)
    assert view.handle("sensors/dev-01/status", status(online=True, firmware="1.0.0"), T0)
    seen = view.get("dev-01")
    assert seen.observation.online and seen.observation.reported_version == "1.0.0" and seen.last_seen == T0
    # The same status again changes nothing (no requeue storm from periodic status messages).
    assert not view.handle(
        "sensors/dev-01/status", status(online=True, firmware="1.0.0"), T0 + timedelta(seconds=5)
    )
    assert view.get("dev-01").last_seen == T0 + timedelta(seconds=5)
    view.handle("sensors/dev-01/ota", status(event="downloading", version="2.0.0", percent=10), T0)
    assert not view.handle("sensors/dev-01/ota", status(event="downloading", version="2.0.0", percent=20), T0)
    # a new 25 % step is a change (the status shows it), a percent within the step is not
    assert view.handle("sensors/dev-01/ota", status(event="downloading", version="2.0.0", percent=50), T0)
    assert view.get("dev-01").observation.ota_percent == 50
    view.handle("sensors/dev-01/ota", status(event="rolled_back", version="2.0.0", reason="boot loop"), T0)
    obs = view.get("dev-01").observation
    assert obs.ota_state == "rolled_back" and obs.ota_reason == "boot loop" and obs.ota_version == "2.0.0"
    view.handle("sensors/dev-02/ota", status(event="confirmed", version="2.0.0"), T0)
    assert view.get("dev-02").observation.reported_version == "2.0.0"
    assert changed == ["dev-01", "dev-01", "dev-01", "dev-01", "dev-02"]  # status, 0 %, 50 %, rolled back


def test_last_will_marks_offline_without_counting_as_a_sighting():
    view = FleetView()
    view.handle("sensors/dev-03/status", status(online=True, firmware="1.0.0"), T0)
    view.handle("sensors/dev-03/status", status(online=False), T0 + timedelta(minutes=5))
    seen = view.get("dev-03")
    assert not seen.observation.online and seen.last_seen == T0
    assert seen.observation.reported_version == "1.0.0"


@pytest.mark.parametrize(
    ("topic", "payload"),
    [
        ("sensors/dev-04/status", b"not json"),
        ("sensors/dev-04/status", status(firmware="1.0.0")),  # online is required
        ("sensors/dev-04/ota", status(event="exploded")),
        ("sensors/dev-04/status/extra", status(online=True)),
        ("elsewhere", status(online=True)),
    ],
)
def test_malformed_messages_change_nothing(topic, payload):
    view = FleetView()
    assert not view.handle(topic, payload, T0)
    assert len(view) == 0


async def test_work_queue_dedupes_retries_with_backoff_and_never_blocks_others():
    queue = WorkQueue(base_delay=0.05, max_delay=0.2)
    seen: list[str] = []

    async def handle(key):
        seen.append(key)
        if key == "bad":
            raise RuntimeError("invalid")
        return None

    for key in ("bad", "a", "a", "b"):
        queue.add(key)
    task = asyncio.create_task(queue.run(2, handle))
    try:
        for _ in range(200):
            if seen.count("bad") >= 4:
                break
            await asyncio.sleep(0.02)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert seen.count("a") == 1 and seen.count("b") == 1  # queued twice, processed once
    assert seen.count("bad") >= 4  # retried, not dropped
    assert queue.failures("bad") >= 4
    assert [queue.retry_delay("x") for _ in range(5)] == [0.05, 0.1, 0.2, 0.2, 0.2]


async def test_add_after_keeps_the_earliest_time():
    queue = WorkQueue()
    queue.add_after("k", 10)
    queue.add_after("k", 0.01)
    queue.add_after("k", 5)
    assert len(queue._delayed) == 2 and queue._due["k"] < asyncio.get_running_loop().time() + 1


def test_merge_diff_is_minimal_and_removes_fields():
    old = {"online": True, "firmware": {"reported": "1", "lastError": "x"}, "conditions": [{"type": "Ready"}]}
    assert merge_diff(old, old) is None
    new = {"online": True, "firmware": {"reported": "2"}, "conditions": [{"type": "Ready"}]}
    assert merge_diff(old, new) == {"firmware": {"reported": "2", "lastError": None}}
    assert prune_none({"a": None, "b": [{"c": None, "d": 1}]}) == {"b": [{"d": 1}]}


def test_apply_is_skipped_only_when_live_matches_and_hash_is_ours():
    desired = normalized(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"k": "v"}}
    )
    assert desired["data"] == {"k": "dg=="} and "stringData" not in desired
    desired["metadata"]["annotations"] = {APPLIED_HASH: manifest_hash(desired)}
    live = json.loads(json.dumps(desired))
    live["metadata"]["uid"] = "u"
    assert up_to_date(live, desired)
    drifted = json.loads(json.dumps(live))
    drifted["data"]["k"] = "ZHJpZnQ="
    assert not up_to_date(drifted, desired)  # someone edited it: re-apply
    old_hash = json.loads(json.dumps(live))
    old_hash["metadata"]["annotations"][APPLIED_HASH] = "other"
    assert not up_to_date(old_hash, desired)  # we applied something else before (maybe more fields)
    assert not up_to_date(None, desired)
    assert contains({"a": {"b": 1, "c": 2}}, {"a": {"b": 1}}) and not contains({"a": [1, 2]}, {"a": [1]})


def test_field_errors_name_the_yaml_field():
    with pytest.raises(ValidationError) as err:
        WeatherSensor.model_validate(
            {
                "metadata": {"name": "x"},
                "spec": {
                    "deviceId": "x",
                    "location": "y",
                    "sensors": [{"type": "bme280", "uart": {"id": 2}}],
                },
            }
        )
    text = field_errors(err.value)
    assert text.startswith("spec.sensors[0]") and "I2C" in text


def test_settings_from_env_and_mqtt_needs_mutual_tls(tmp_path):
    s = OperatorSettings.from_env({"WEATHERFLEET_RESYNC_SECONDS": "30", "WEATHERFLEET_MQTT_PREFIXES": "a, b"})
    assert s.resync_seconds == 30 and s.prefixes == ("a", "b") and s.mqtt() is None
    with pytest.raises(ValueError, match="mutual TLS"):
        OperatorSettings.from_env({"WEATHERFLEET_MQTT_HOST": "nanomq"}).mqtt()
    with pytest.raises(ValidationError):
        OperatorSettings.from_env({"WEATHERFLEET_RESYNC_SECONDS": "-1"})
    assert "s3cr3t-value" not in repr(OperatorSettings(mqtt_password="s3cr3t-value"))
    # the CRL's CA Secret is named as <namespace>/<name>, nothing else
    crl = OperatorSettings.from_env({"WEATHERFLEET_CRL_CA_SECRET": "cert-manager/ca"})
    assert crl.crl_ca_secret == "cert-manager/ca"
    with pytest.raises(ValidationError):
        OperatorSettings.from_env({"WEATHERFLEET_CRL_CA_SECRET": "just-a-name"})


def test_observer_rebuilds_the_view_from_retained_status(mosquitto_factory, mqtt_settings):
    """A restarted operator sees every device's last status at once (retained), over mutual TLS."""
    import threading

    from weatherfleet.mqtt import make_client

    broker = mosquitto_factory()
    device = make_client(mqtt_settings(broker, "dev-05"), "dev-05")
    done = threading.Event()
    device.on_connect = lambda *_: done.set()
    device.connect(broker.host, broker.port)
    device.loop_start()
    assert done.wait(10)
    device.publish(
        "sensors/dev-05/status", status(online=True, firmware="1.4.0"), qos=1, retain=True
    ).wait_for_publish(10)
    device.loop_stop()
    device.disconnect()

    view = FleetView()
    observer = MqttObserver(mqtt_settings(broker, identities.OPERATOR), view, settle_seconds=0.2).start()
    try:
        assert observer.wait_ready(20)
        for _ in range(100):
            if view.get("dev-05"):
                break
            threading.Event().wait(0.05)
        assert view.get("dev-05").observation.reported_version == "1.4.0"
    finally:
        observer.stop()
