"""Decommissioning against a real Mosquitto: the device's certificate revoked through the CA's CRL (the
broker's `crlfile`, re-read on SIGHUP) makes its next connection attempt fail, while other devices keep
connecting; the operator clears the retained topics the device left (status, desired configuration);
re-creating the device later needs a new identity (a new key, not the revoked certificate again)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
import threading
import types
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from mpy_harness import DEVICE

from weatherfleet import identities
from weatherfleet.controller.devicetwin import TwinPublisher
from weatherfleet.messages import desired_topic, status_topic
from weatherfleet.mqtt import make_client, tls_context

GONE, STAYS = "dev-19", "dev-18"


@pytest.fixture
def device_mqtt(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    shim = types.ModuleType("micropython")
    shim.const = lambda x: x
    monkeypatch.setitem(sys.modules, "micropython", shim)
    spec = importlib.util.spec_from_file_location("device_mqtt_decommission", DEVICE / "mqtt.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def _connect(device_mqtt, settings, device_id: str):
    client = device_mqtt.MQTTClient(
        device_id, settings.host, settings.port, ssl=tls_context(settings), keepalive=30, ticks_ms=lambda: 0
    )
    await asyncio.wait_for(client.connect(), 20)
    return client


def _retained(settings, topic: str) -> bytes | None:
    """What the broker retains on topic (None: nothing), read as the operator."""
    got: list[bytes] = []
    done = threading.Event()
    client = make_client(settings, f"test-retained-{topic.replace('/', '-')}")

    def on_message(_c, _u, message):
        got.append(message.payload)
        done.set()

    client.on_message = on_message
    client.on_connect = lambda c, *_a: c.subscribe(topic, qos=1)
    client.on_subscribe = lambda *_a: threading.Timer(1.0, done.set).start()
    client.connect(settings.host, settings.port)
    client.loop_start()
    done.wait(10)
    client.loop_stop()
    client.disconnect()
    return got[0] if got else None


async def test_a_decommissioned_device_is_refused_and_its_retained_topics_cleared(
    device_mqtt, mosquitto_factory, mqtt_settings, local_ca
) -> None:
    broker = mosquitto_factory()
    broker.crl = True
    broker.restart()  # now with crlfile
    gone, stays = mqtt_settings(broker, GONE), mqtt_settings(broker, STAYS)
    operator = mqtt_settings(broker, identities.OPERATOR)

    client = await _connect(device_mqtt, gone, GONE)
    pid = await client.publish(status_topic(GONE).encode(), b'{"online": true}', -1, 1, True)
    reader = asyncio.create_task(client.run_reader())
    await asyncio.wait_for(client.wait_puback(pid), 10)
    await client.disconnect()
    reader.cancel()

    # the operator's side: the device twin is published on its connection, and cleared on decommission
    op = make_client(operator, "test-operator-decommission")
    connected = threading.Event()
    op.on_connect = lambda *_a: connected.set()
    op.connect(operator.host, operator.port)
    op.loop_start()
    assert connected.wait(10)
    twin = TwinPublisher(lambda topic, payload, retain: op.publish(topic, payload, 1, retain).rc == 0)
    assert twin.desired(GONE, '{"generation":1}')
    # only the device itself may read its desired configuration
    assert await asyncio.to_thread(_retained, gone, desired_topic(GONE)) == b'{"generation":1}'
    assert await asyncio.to_thread(_retained, stays, desired_topic(GONE)) is None
    assert json.loads(await asyncio.to_thread(_retained, operator, status_topic(GONE))) == {"online": True}

    # decommission: revoke the certificate (CRL re-read on SIGHUP) and clear the retained topics
    old_cert = Path(gone.cert).read_bytes()
    local_ca.revoke(Path(gone.cert))
    broker.reload()
    twin.decommission(GONE, "sensors")
    await asyncio.sleep(1.0)

    with pytest.raises((OSError, device_mqtt.MQTTError, asyncio.TimeoutError, EOFError)):
        refused = await _connect(device_mqtt, gone, GONE)
        await refused.disconnect()
    still = await _connect(device_mqtt, stays, STAYS)  # everyone else keeps connecting
    assert still.connected
    await still.disconnect()
    assert await asyncio.to_thread(_retained, operator, status_topic(GONE)) is None
    op.loop_stop()
    op.disconnect()

    # re-created later: a new identity (new key and serial), which the broker accepts again
    again = local_ca.issue(GONE)
    new_cert = x509.load_pem_x509_certificate(Path(again.cert).read_bytes())
    assert new_cert.serial_number != x509.load_pem_x509_certificate(old_cert).serial_number
    old_key = serialization.load_pem_private_key(Path(again.key).read_bytes(), None)
    assert old_key.public_key().public_numbers() == new_cert.public_key().public_numbers()
    back = await _connect(device_mqtt, mqtt_settings(broker, GONE), GONE)
    assert back.connected
    await back.disconnect()
    # and finds no desired configuration of its predecessor waiting for it
    assert await asyncio.to_thread(_retained, mqtt_settings(broker, GONE), desired_topic(GONE)) is None
