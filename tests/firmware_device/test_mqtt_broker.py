"""The device's own MQTT client (firmware/device/mqtt.py, unchanged) on CPython against a real Mosquitto
over mutual TLS: MQTT 5 is negotiated, QoS 1 PUBACKs are tracked, the ACL's refusal comes back as an MQTT 5
reason code, an OtaFlux notification arrives on the subscribed topic, and the retained last will
announces the device offline when its connection dies without a DISCONNECT."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import socket
import sys
import types

import pytest
from mpy_harness import DEVICE

from weatherfleet import identities
from weatherfleet.mqtt import make_client, tls_context

DEVICE_ID = "dev-17"


@pytest.fixture
def device_mqtt(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    shim = types.ModuleType("micropython")
    shim.const = lambda x: x
    monkeypatch.setitem(sys.modules, "micropython", shim)
    spec = importlib.util.spec_from_file_location("device_mqtt_under_test", DEVICE / "mqtt.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_device_client_against_mosquitto(
    device_mqtt, mosquitto, mqtt_settings, mqtt_subscriber
) -> None:
    settings = mqtt_settings(mosquitto, DEVICE_ID)
    collector = mqtt_subscriber(mosquitto, f"sensors/{DEVICE_ID}/#")
    received: list[tuple[str, bytes, bool]] = []
    status_topic = f"sensors/{DEVICE_ID}/status".encode()
    client = device_mqtt.MQTTClient(
        DEVICE_ID,
        settings.host,
        settings.port,
        ssl=tls_context(settings),
        keepalive=30,
        will=(status_topic, b'{"online": false}', True, 1),
        version=5,
        ticks_ms=lambda: 0,
        on_message=lambda topic, payload, retained: received.append((topic, bytes(payload), retained)),
    )
    await asyncio.wait_for(client.connect(), 20)
    assert client.version == 5 and client.connected
    reader = asyncio.create_task(client.run_reader())
    try:
        await client.subscribe(f"ota/{DEVICE_ID}/#", 1)
        pid = await client.publish(status_topic, b'{"online": true}', -1, 1, True)
        await asyncio.wait_for(client.wait_puback(pid), 10)
        line = f"weather,device={DEVICE_ID},firmware=1.0.0,location=lab temperature=21.50 1764000000000000000"
        pid = await client.publish(f"sensors/{DEVICE_ID}/measurements".encode(), line.encode(), -1, 1)
        await asyncio.wait_for(client.wait_puback(pid), 10)
        collector.wait_for(
            lambda ms: any(m.topic.endswith("/measurements") and m.payload == line.encode() for m in ms)
        )

        # least privilege: another device's topic is refused, and MQTT 5 says so in the PUBACK
        pid = await client.publish(b"sensors/dev-18/measurements", b"spoofed", -1, 1)
        await asyncio.wait_for(client.wait_puback(pid), 10)
        assert client.refused == 1

        # OtaFlux's notification (retained, QoS 1) reaches the device on its subscription
        otaflux = make_client(mqtt_settings(mosquitto, identities.OTAFLUX), "test-otaflux-notify")
        otaflux.connect(mosquitto.host, mosquitto.port)
        otaflux.loop_start()
        try:
            info = otaflux.publish(
                f"ota/{DEVICE_ID}", json.dumps({"version": "1.1.0", "size": 10}), qos=1, retain=True
            )
            info.wait_for_publish(10)
            for _ in range(200):
                if received:
                    break
                await asyncio.sleep(0.05)
            assert received and received[0][0] == f"ota/{DEVICE_ID}"
            assert json.loads(received[0][1]) == {"version": "1.1.0", "size": 10}
            otaflux.publish(f"ota/{DEVICE_ID}", b"", qos=1, retain=True).wait_for_publish(10)  # clear it
        finally:
            otaflux.loop_stop()
            otaflux.disconnect()

        # power loss: the TCP connection dies without DISCONNECT -> the broker publishes the retained will
        client.writer.get_extra_info("socket").shutdown(socket.SHUT_RDWR)
        collector.wait_for(
            lambda ms: any(
                m.topic == status_topic.decode() and json.loads(m.payload) == {"online": False} for m in ms
            ),
            timeout=20,
        )
    finally:
        client.close()
        reader.cancel()
    # the will was retained: a late subscriber still sees the device offline
    late = mqtt_subscriber(mosquitto, status_topic.decode())
    late.wait_for(lambda ms: any(m.retain and json.loads(m.payload) == {"online": False} for m in ms))
