"""Issue 14: a device certificate must not take another client's MQTT session.

Against the real Mosquitto with the configuration every broker we generate gets
(`reconcilers.broker.mosquitto_config`): on the boards' listener the client id is the certificate's CN, so
a device that connects as `weatherfleet-ingest` or as another device gets a session of its own name; ingest
(on the services listener) stays connected and stores every reading published meanwhile, and the other
device is not kicked off. The services listener admits the service logins only: a device certificate is
refused there whatever client id or username it claims. The services keep several connections per identity
(ingest replicas) under client ids of their own."""

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
from weatherfleet.mqtt import MqttSettings, make_client
from weatherfleet.reconcilers.broker import mosquitto_acl
from weatherfleet.services.mosquitto import MosquittoBroker
from weatherfleet.services.process import free_port, wait_until


@pytest.fixture
def broker(local_ca, tmp_path_factory):
    broker = MosquittoBroker(
        directory=tmp_path_factory.mktemp("mosquitto-bound"),
        ca=local_ca,
        port=free_port(),
        acl_text=mosquitto_acl("test/identity", ["dev-01", "dev-02"]),
    ).start()
    yield broker
    broker.stop()


class Client:
    """A paho client that records its connections, disconnections and the CONNACK's reason."""

    def __init__(self, settings: MqttSettings, client_id: str, *, refused_ok: bool = False, **kwargs) -> None:
        self.connects, self.disconnects, self.reasons = 0, 0, []
        self.answered = threading.Event()
        self.client = make_client(settings, client_id, **kwargs)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.connect(settings.host, settings.port)
        self.client.loop_start()
        assert self.answered.wait(10), "no CONNACK"
        assert refused_ok or self.connects == 1, self.reasons

    def _on_connect(self, _client, _userdata, _flags, reason, _properties=None) -> None:
        self.reasons.append(str(reason))
        if not reason.is_failure:
            self.connects += 1
        self.answered.set()

    def _on_disconnect(self, *_args) -> None:
        self.disconnects += 1

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _still_connected(client: Client) -> bool:
    """A QoS 1 round trip after everything else connected: a client whose session was taken has been
    disconnected by then (the broker closes it before it answers the newcomer's CONNACK)."""
    client.client.publish("probe/round-trip", b"", qos=1).wait_for_publish(5)
    return (client.connects, client.disconnects) == (1, 0)


def _ingest(settings: MqttSettings, sqlite_store, tmp_path, client_id: str = identities.INGEST):
    ingestor = Ingestor(
        sqlite_store,
        Spool(tmp_path / client_id / "spool"),
        DeadLetterStore(tmp_path / f"{client_id}.db"),
        policy=BatchPolicy(max_rows=100, max_delay=0.2),
    )
    consumer = MqttConsumer(settings, ingestor, client_id=client_id, session_expiry_s=60)
    consumer.start()
    assert consumer.subscribed.wait(30)
    return consumer


def test_a_device_certificate_cannot_take_ingests_or_another_devices_session(
    broker, mqtt_settings, sqlite_store, tmp_path
) -> None:
    """Ingest (persistent session) runs; dev-02's certificate connects as `weatherfleet-ingest` and as
    `dev-01` (connected too), holding on for 3 s with paho's reconnects, while dev-01 publishes 30
    readings: all 30 are stored, nobody but the attackers is disconnected."""
    consumer = _ingest(mqtt_settings(broker, identities.INGEST), sqlite_store, tmp_path)
    ingest_disconnects = []
    consumer.client.on_disconnect = lambda *_args: ingest_disconnects.append(1)
    victim = Client(mqtt_settings(broker, "dev-01"), "dev-01")
    attacker = mqtt_settings(broker, "dev-02")
    attackers = [
        Client(attacker, identities.INGEST, clean_start=True, protocol=mqtt.MQTTv5),
        Client(attacker, "dev-01"),
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
        assert (sqlite_store.count("weather"), len(ingest_disconnects), victim.disconnects) == (30, 0, 0)
        # both attackers were given the one session their certificate names, dev-02: they took it in turn
        assert sum(a.disconnects for a in attackers) > 0
    finally:
        for client in [*attackers, victim]:
            client.close()
        consumer.stop()


@pytest.mark.parametrize(
    "login", [None, (identities.INGEST, None), (identities.INGEST, "guessed"), ("dev-02", "anything")]
)
def test_the_services_listener_refuses_a_device_certificate(broker, mqtt_settings, login) -> None:
    """Whatever client id, username or password a device claims there, CONNACK says not authorised; the
    session it named stays with its owner."""
    ingest = Client(mqtt_settings(broker, identities.INGEST), identities.INGEST)
    device = mqtt_settings(broker, "dev-02")
    username, password = login or (None, None)
    settings = MqttSettings(**{**device.model_dump(), "port": broker.services_port, "username": username,
                               "password": password})  # fmt: skip
    attacker = Client(settings, identities.INGEST, refused_ok=True)
    try:
        assert attacker.connects == 0 and "Not authorized" in attacker.reasons[0]
        # paho tries again a second later: refused again, and ingest never notices
        wait_until(lambda: len(attacker.reasons) >= 2, 10, "paho's second try")
        assert attacker.connects == 0 and _still_connected(ingest)
    finally:
        attacker.close()
        ingest.close()


def test_a_service_certificate_on_the_boards_listener_is_bound_to_its_own_name(broker, mqtt_settings) -> None:
    """OtaFlux's certificate there as `weatherfleet-ingest` and as `x`: both are `weatherfleet-otaflux`,
    so they take that one session from each other, never ingest's."""
    ingest = Client(mqtt_settings(broker, identities.INGEST), identities.INGEST)
    otaflux = mqtt_settings(broker, identities.OTAFLUX).model_copy(update={"port": broker.port})
    others = [Client(otaflux, identities.INGEST), Client(otaflux, "x", refused_ok=True)]
    try:
        wait_until(lambda: sum(o.disconnects for o in others) > 0, 10, "the two to share one session")
        assert _still_connected(ingest)
    finally:
        for client in [*others, ingest]:
            client.close()


def test_service_connections_sharing_an_identity_keep_their_own_sessions(broker, mqtt_settings) -> None:
    """What the binding would break and the services listener keeps: ingest replicas, OtaFlux workers and
    the operator with the local view each connect several times with one certificate and login."""
    clients = [
        Client(mqtt_settings(broker, identity), f"{identity}-{n}")
        for identity in identities.SERVICES
        for n in range(2)
    ]
    try:
        assert all(_still_connected(c) for c in clients)
    finally:
        for client in clients:
            client.close()
