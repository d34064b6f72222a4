"""The real servers the other suites stand on: Mosquitto with mTLS and ACLs, the registry."""

from __future__ import annotations

import ssl
import threading
import urllib.request

import paho.mqtt.client as mqtt

from weatherfleet.mqtt import make_client


def _connect(client: mqtt.Client, broker) -> None:
    connected = threading.Event()
    client.on_connect = lambda *_a: connected.set()
    client.connect(broker.host, broker.port)
    client.loop_start()
    assert connected.wait(10), "no CONNACK"


def test_device_publishes_and_ingest_receives_over_mtls(mosquitto, mqtt_settings, mqtt_subscriber):
    collector = mqtt_subscriber(mosquitto, "sensors/#")
    device = make_client(mqtt_settings(mosquitto, "dev-01"), "dev-01")
    _connect(device, mosquitto)
    device.publish("sensors/dev-01/measurements", b"weather temperature=21.5", qos=1).wait_for_publish(5)
    collector.wait_for(lambda ms: any(m.payload == b"weather temperature=21.5" for m in ms))
    device.loop_stop()
    device.disconnect()


def test_acl_stops_a_device_publishing_as_another(mosquitto, mqtt_settings, mqtt_subscriber):
    collector = mqtt_subscriber(mosquitto, "sensors/#")
    device = make_client(mqtt_settings(mosquitto, "dev-02"), "dev-02")
    _connect(device, mosquitto)
    device.publish("sensors/dev-03/measurements", b"spoofed", qos=1).wait_for_publish(5)
    device.publish("sensors/dev-02/measurements", b"own", qos=1).wait_for_publish(5)
    collector.wait_for(lambda ms: any(m.payload == b"own" for m in ms))
    assert not any(m.payload == b"spoofed" for m in collector.messages)
    device.loop_stop()
    device.disconnect()


def test_broker_refuses_a_client_without_certificate(mosquitto, local_ca):
    context = ssl.create_default_context(cafile=str(local_ca.cert_path))
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="anonymous")
    client.tls_set_context(context)
    accepted = threading.Event()
    client.on_connect = lambda _c, _u, _f, reason, _p: reason == 0 and accepted.set()
    try:
        client.connect(mosquitto.host, mosquitto.port)
        # TLS 1.3 reports the missing certificate only on the first read, so run a few loops
        for _ in range(5):
            if client.loop(timeout=0.5) != mqtt.MQTT_ERR_SUCCESS:
                break
    except (ssl.SSLError, OSError):
        pass
    assert not accepted.is_set(), "the broker accepted a client without a certificate"


def test_registry_answers_the_distribution_api(registry):
    with urllib.request.urlopen(f"{registry.url}/v2/", timeout=5) as response:
        assert response.status == 200
        assert response.headers["Docker-Distribution-Api-Version"] == "registry/2.0"
