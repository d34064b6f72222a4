"""Shared fixtures: a local CA, a real Mosquitto over mutual TLS, a real distribution registry.

Every fixture starts a real server on 127.0.0.1 on a free port and waits until it answers."""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from weatherfleet import identities
from weatherfleet.mqtt import MqttSettings, make_client
from weatherfleet.pki import LocalCA
from weatherfleet.reconcilers.broker import mosquitto_acl
from weatherfleet.services.mosquitto import MosquittoBroker
from weatherfleet.services.process import free_port
from weatherfleet.services.registry import DistributionRegistry


def _stop_as_interrupted(signum: int, _frame: object) -> None:
    # `timeout`, CI and a person's kill send SIGTERM: turn it into the interrupt pytest handles, so the
    # session's fixtures are torn down and every broker, registry, OtaFlux and board a test started is
    # stopped instead of left running as an orphan.
    raise KeyboardInterrupt(f"stopped by signal {signum}")


signal.signal(signal.SIGTERM, _stop_as_interrupted)

# The kubernetes client reads KUBECONFIG once, when it is first imported, and keeps the path: point it at
# the API stand-in's kubeconfig (written by the `kube` fixture of tests/operator) here, in the conftest
# pytest loads first, before any test module imports `kubernetes`. With --real-cluster, $KUBECONFIG stays.
if "--real-cluster" not in sys.argv:
    os.environ["KUBECONFIG"] = os.path.join(tempfile.mkdtemp(prefix="weatherfleet-kube-"), "config")

TEST_DEVICES = [f"dev-{i:02d}" for i in range(1, 21)]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--real-cluster", action="store_true", help="also run the suite against $KUBECONFIG")


@pytest.fixture(scope="session")
def local_ca(tmp_path_factory: pytest.TempPathFactory) -> LocalCA:
    return LocalCA(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def mosquitto_factory(
    local_ca: LocalCA, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., MosquittoBroker]]:
    """Start a broker of your own (for tests that stop or restart it); all are stopped at the end."""
    started: list[MosquittoBroker] = []

    def start(devices: list[str] = TEST_DEVICES, prefix: str = "sensors") -> MosquittoBroker:
        broker = MosquittoBroker(
            directory=tmp_path_factory.mktemp("mosquitto"),
            ca=local_ca,
            port=free_port(),
            acl_text=mosquitto_acl("test/fleet", devices, prefix),
        )
        started.append(broker.start())
        return broker

    yield start
    for broker in started:
        broker.stop()


@pytest.fixture(scope="session")
def mosquitto(mosquitto_factory: Callable[..., MosquittoBroker]) -> MosquittoBroker:
    """One broker shared by the session, with the least-privilege ACL for TEST_DEVICES and the services."""
    return mosquitto_factory()


@pytest.fixture(scope="session")
def mqtt_settings(local_ca: LocalCA) -> Callable[[MosquittoBroker, str], MqttSettings]:
    """Connection settings for an identity on a broker: a device on the boards' listener (client id = its
    certificate's CN), a service on the services listener with its login."""

    def settings(broker: MosquittoBroker, identity: str) -> MqttSettings:
        issued = local_ca.issue(identity)
        if identity not in identities.SERVICES:
            return MqttSettings(
                host=broker.host, port=broker.port, ca=issued.ca, cert=issued.cert, key=issued.key
            )
        username, password = broker.login(identity)
        return MqttSettings(host=broker.host, port=broker.services_port, ca=issued.ca, cert=issued.cert,
                            key=issued.key, username=username, password=password)  # fmt: skip

    return settings


class Collector:
    """A subscribed paho client that records messages; `wait_for` waits on a condition, never sleeps blind."""

    def __init__(self, client: mqtt.Client) -> None:
        self.client = client
        self.messages: list[mqtt.MQTTMessage] = []
        self._changed = threading.Condition()
        client.on_message = self._on_message

    def _on_message(self, _client, _userdata, message: mqtt.MQTTMessage) -> None:
        with self._changed:
            self.messages.append(message)
            self._changed.notify_all()

    def wait_for(self, predicate: Callable[[list[mqtt.MQTTMessage]], bool], timeout: float = 10.0) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: predicate(self.messages), timeout):
                topics = [m.topic for m in self.messages[-10:]]
                raise AssertionError(f"condition not met within {timeout}s; last topics: {topics}")


@pytest.fixture
def mqtt_subscriber(
    mqtt_settings: Callable[[MosquittoBroker, str], MqttSettings],
) -> Iterator[Callable[..., Collector]]:
    """Subscribe as a service identity (ingest by default) and collect what arrives."""
    clients: list[mqtt.Client] = []

    def subscribe(broker: MosquittoBroker, topic: str, identity: str = identities.INGEST) -> Collector:
        settings = mqtt_settings(broker, identity)
        client = make_client(settings, f"test-{identity}-{len(clients)}")
        collector = Collector(client)
        subscribed = threading.Event()
        client.on_subscribe = lambda *_args: subscribed.set()
        client.on_connect = lambda c, *_args: c.subscribe(topic, qos=1)
        client.connect(settings.host, settings.port)
        client.loop_start()
        clients.append(client)
        assert subscribed.wait(10), f"subscription to {topic} not acknowledged"
        return collector

    yield subscribe
    for client in clients:
        client.loop_stop()
        client.disconnect()


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DistributionRegistry]:
    """A real CNCF distribution registry (Debian docker-registry), plain HTTP on loopback."""
    reg = DistributionRegistry(directory=tmp_path_factory.mktemp("registry"), port=free_port()).start()
    yield reg
    reg.stop()


@pytest.fixture
def artifacts_dir() -> Path:
    """Where tests keep what a person may want to look at afterwards (screenshots, reports)."""
    path = Path(__file__).resolve().parent.parent / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path
