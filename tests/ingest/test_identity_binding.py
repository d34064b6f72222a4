"""Issue 14: a device certificate must not take another client's MQTT session.

Against the real Mosquitto with the generated configuration and ACL: with the client id bound to the
certificate (`use_username_as_clientid`, MosquittoBroker(bind_client_id=True)), a device that connects as
`weatherfleet-ingest` or as another device gets a session of its own name; ingest stays connected and
stores every reading published meanwhile, and the other device is not kicked off. The same attack on a
broker without the binding is shown too, so the test proves the setting is what makes the difference."""

from __future__ import annotations

import contextlib
import threading
import time

import paho.mqtt.client as mqtt
import pytest

from weatherfleet import identities
from weatherfleet.ingest.batching import BatchPolicy
from weatherfleet.ingest.consumer import MqttConsumer
from weatherfleet.ingest.deadletters import DeadLetterStore
from weatherfleet.ingest.pipeline import Ingestor
from weatherfleet.ingest.spool import Spool
from weatherfleet.mqtt import make_client
from weatherfleet.reconcilers.broker import mosquitto_acl
from weatherfleet.services.mosquitto import MosquittoBroker
from weatherfleet.services.process import free_port, wait_until


@pytest.fixture
def broker_with(local_ca, tmp_path_factory):
    started: list[MosquittoBroker] = []

    def start(bind: bool) -> MosquittoBroker:
        broker = MosquittoBroker(
            directory=tmp_path_factory.mktemp("mosquitto-bound"),
            ca=local_ca,
            port=free_port(),
            acl_text=mosquitto_acl("test/identity", ["dev-01", "dev-02"]),
            bind_client_id=bind,
        )
        started.append(broker.start())
        return broker

    yield start
    for broker in started:
        broker.stop()


class Client:
    """A paho client that records its connections and disconnections."""

    def __init__(self, settings, client_id: str, **kwargs) -> None:
        self.connects, self.disconnects = 0, 0
        self.connected = threading.Event()
        self.client = make_client(settings, client_id, **kwargs)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.connect(settings.host, settings.port)
        self.client.loop_start()
        assert self.connected.wait(10)

    def _on_connect(self, *_args) -> None:
        self.connects += 1
        self.connected.set()

    def _on_disconnect(self, *_args) -> None:
        self.disconnects += 1

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _attack(broker, mqtt_settings, sqlite_store, tmp_path) -> tuple[int, int, int]:
    """Ingest (persistent session) runs; dev-02's certificate connects as `weatherfleet-ingest` and as
    `dev-01` (connected too), holding on for 3 s with paho's reconnects, while dev-01 publishes 30
    readings. Returns (readings stored, ingest's disconnects, dev-01's disconnects)."""
    ingestor = Ingestor(
        sqlite_store,
        Spool(tmp_path / "spool"),
        DeadLetterStore(tmp_path / "dead.db"),
        policy=BatchPolicy(max_rows=100, max_delay=0.2),
    )
    consumer = MqttConsumer(mqtt_settings(broker, identities.INGEST), ingestor, session_expiry_s=60)
    consumer.start()
    assert consumer.subscribed.wait(30)
    disconnects = []
    consumer.client.on_disconnect = lambda *_args: disconnects.append(1)
    victim = Client(mqtt_settings(broker, "dev-01"), "dev-01")
    attackers = [
        Client(mqtt_settings(broker, "dev-02"), identities.INGEST, clean_start=True, protocol=mqtt.MQTTv5),
        Client(mqtt_settings(broker, "dev-02"), "dev-01"),
    ]
    try:
        start = time.time_ns() - 10**9
        for i in range(30):
            victim.client.publish(
                "sensors/dev-01/measurements", f"weather,device=dev-01 co2={400 + i} {start + i}", qos=1
            )
            time.sleep(0.1)
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: sqlite_store.count("weather") == 30, 10, "30 readings")
        return sqlite_store.count("weather"), len(disconnects), victim.disconnects
    finally:
        for client in [*attackers, victim]:
            client.close()
        consumer.stop()


def test_a_device_certificate_cannot_take_ingests_or_another_devices_session(
    broker_with, mqtt_settings, sqlite_store, tmp_path
) -> None:
    stored, ingest_kicked, device_kicked = _attack(broker_with(True), mqtt_settings, sqlite_store, tmp_path)
    assert (stored, ingest_kicked, device_kicked) == (30, 0, 0)


def test_without_the_binding_the_same_attack_takes_the_sessions(
    broker_with, mqtt_settings, sqlite_store, tmp_path
) -> None:
    """What issue 14 found (30 of 30 readings lost there): here at least the kicks are visible."""
    _stored, ingest_kicked, device_kicked = _attack(broker_with(False), mqtt_settings, sqlite_store, tmp_path)
    assert ingest_kicked > 0 and device_kicked > 0


def test_a_service_certificate_cannot_take_ingests_session_either(broker_with, mqtt_settings) -> None:
    broker = broker_with(True)
    ingest = Client(mqtt_settings(broker, identities.INGEST), identities.INGEST)
    other = Client(mqtt_settings(broker, identities.OTAFLUX), identities.INGEST)
    time.sleep(1.5)
    try:
        assert ingest.disconnects == 0 and ingest.connects == 1
    finally:
        other.close()
        ingest.close()
