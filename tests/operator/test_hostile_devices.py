"""Issue 14: nothing a device sends can stop the operator or the local mode.

The boundary is the view that parses device messages (`observe.FleetView`, fed by `MqttObserver` in the
operator and in `weatherfleet up`): a lone surrogate in a board's status used to reach the local mode's
timeline and end `weatherfleet up` with a serialization error. Every hostile payload here is either
refused (counted) or enters the view as printable, encodable text; the last test sends them through the
real Mosquitto and checks the observer's network thread is still alive afterwards."""

from __future__ import annotations

import json
import threading
import time

import pytest

from weatherfleet import identities
from weatherfleet.mqtt import make_client
from weatherfleet.observe import FleetView, MqttObserver
from weatherfleet.services.process import wait_until

HOSTILE = [
    b'{"online": true, "firmware": "\\ud800"}',
    b'{"online": true, "firmware": "1.0\\udfff", "boot": "\\uffff", "slot": "a\\u0000b"}',
    b'{"online": true, "sensors": {"\\ud83d": "\\ud800"}}',
    b'{"online": true, "extra": [["\\ud800", {"\\udc00": 1}]]}',
    b'{"online": true, "uptime": ' + b"9" * 5000 + b"}",
    b'{"online": true, "uptime": 1e400}',
    b'{"a":' * 20000,
    b"[" * 50000,
    b"\xff\xfe",
    b'{"online": true, "firmware": "' + b"x" * 70000 + b'"}',
    b"null",
    b"[1, 2]",
]


def _encodable(view: FleetView) -> None:
    """What every consumer of the view does with it: JSON for timelines and reports, text for tables."""
    for device_id, sighting in view.snapshot().items():
        if sighting.status is not None:
            json.dumps(sighting.status.model_dump(mode="json"), ensure_ascii=False).encode()
            sighting.status.model_dump_json().encode()
        sighting.observation.model_dump_json().encode()
        device_id.encode()


@pytest.mark.parametrize("payload", HOSTILE)
@pytest.mark.parametrize("kind", ["status", "ota"])
def test_a_hostile_message_never_raises_and_leaves_encodable_text(payload: bytes, kind: str) -> None:
    view = FleetView()
    view.handle(f"sensors/dev-01/{kind}", payload)
    _encodable(view)


def test_text_that_cannot_be_encoded_is_replaced_not_kept() -> None:
    view = FleetView()
    assert view.handle(
        "sensors/dev-01/status", b'{"online": true, "firmware": "1.0\\ud800", "boot": "a\\nb"}'
    )
    status = view.get("dev-01").status
    assert status.firmware == "1.0\ufffd" and status.boot == "a\ufffdb"
    assert view.get("dev-01").observation.reported_version == "1.0\ufffd"
    assert view.handle(
        "sensors/dev-01/ota", b'{"event": "failed", "reason": "crc \\ud800", "version": "2\\uffff"}'
    )
    observation = view.get("dev-01").observation
    assert observation.ota_reason == "crc \ufffd" and observation.ota_version == "2\ufffd"
    _encodable(view)


def test_refused_messages_are_counted_and_an_on_change_failure_is_contained() -> None:
    def on_change(_device: str) -> None:
        raise RuntimeError("a bug downstream")

    view = FleetView(on_change=on_change)
    for payload in (b'{"a":' * 20000, b"\xff", b'{"online": "maybe"}'):
        assert view.handle("sensors/dev-02/status", payload) is False
    assert view.rejected == 3
    assert view.handle("sensors/dev-02/status", b'{"online": true}') is True  # on_change raised inside


def test_hostile_statuses_through_mosquitto_leave_the_observer_running(mosquitto, mqtt_settings) -> None:
    view = FleetView()
    observer = MqttObserver(
        mqtt_settings(mosquitto, identities.OPERATOR), view, client_id=f"test-observer-{time.time_ns()}"
    ).start()
    device = make_client(mqtt_settings(mosquitto, "dev-16"), f"dev-16-{time.time_ns()}")
    device.connect(mosquitto.host, mosquitto.port)
    device.loop_start()
    try:
        assert observer.wait_ready(30)
        threads_before = {t.name for t in threading.enumerate()}
        for payload in HOSTILE:
            device.publish("sensors/dev-16/status", payload, qos=1).wait_for_publish(10)
            device.publish("sensors/dev-16/ota", payload, qos=1).wait_for_publish(10)
        device.publish("sensors/dev-16/status", b'{"online": true, "firmware": "9.9.9"}', qos=1)
        wait_until(
            lambda: view.get("dev-16") is not None and view.get("dev-16").status.firmware == "9.9.9",
            30,
            "the good status after the hostile ones",
        )
        assert {t.name for t in threading.enumerate()} >= threads_before  # paho's thread still runs
        _encodable(view)
    finally:
        device.publish("sensors/dev-16/status", b"", qos=1, retain=True)
        device.loop_stop()
        device.disconnect()
        observer.stop()
