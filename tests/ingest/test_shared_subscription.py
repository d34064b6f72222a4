"""Ingest beyond one replica, against real Mosquitto: two `weatherfleet ingest` processes share
`$share/ingest/sensors/#`, each with its own persistent session. One is killed (SIGKILL) mid-stream and
comes back; another leaves for good (SIGTERM, a scale-down). Every reading lands exactly once."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from weatherfleet import identities
from weatherfleet.mqtt import make_client
from weatherfleet.services.process import free_port, wait_until

pytestmark = pytest.mark.slow
DEVICES = ["dev-01", "dev-02", "dev-03", "dev-04"]
PER_DEVICE = 1500


class Replica:
    def __init__(self, name: str, broker, local_ca, tmp_path: Path, database: Path) -> None:
        issued = local_ca.issue(identities.INGEST)
        username, password = broker.login(identities.INGEST)
        self.name, self.metrics_port = name, free_port()
        # the services listener: two sessions under one certificate and login (issue 14)
        self.env = os.environ | {
            "MQTT_HOST": broker.host,
            "MQTT_PORT": str(broker.services_port),
            "MQTT_USERNAME": username,
            "MQTT_PASSWORD": password,
            "MQTT_CA": str(issued.ca),
            "MQTT_CERT": str(issued.cert),
            "MQTT_KEY": str(issued.key),
            "INGEST_SQLITE_PATH": str(database),
            "INGEST_STATE_DIR": str(tmp_path / "state"),
            "INGEST_METRICS_PORT": str(self.metrics_port),
            "INGEST_CLIENT_ID": f"ingest-share-{broker.port}",
            "INGEST_SHARE_GROUP": "ingest",
            "INGEST_REPLICA": name,
            "INGEST_BATCH_DELAY": "0.2",
        }
        self.log_path = tmp_path / f"ingest-{name}.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> Replica:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "weatherfleet", "ingest"],
            env=self.env,
            stdout=self.log_path.open("ab"),
            stderr=subprocess.STDOUT,
        )
        wait_until(lambda: "mqtt_connected 1.0" in self.metrics(), 60, f"replica {self.name} connected")
        return self

    def metrics(self) -> str:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2) as r:
                return r.read().decode()
        except OSError:
            return ""

    def measurements(self) -> float:
        for line in self.metrics().splitlines():
            if line.startswith('weatherfleet_ingest_messages_total{kind="measurements"}'):
                return float(line.split()[-1])
        return 0.0

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        return self.process.wait(60)


def publish(broker, mqtt_settings, published: list[int]) -> None:
    """Every device publishes PER_DEVICE readings with unique timestamps, QoS 1, paced a little."""
    clients = []
    for device in DEVICES:
        client = make_client(mqtt_settings(broker, device), f"{device}-share", protocol=mqtt.MQTTv311)
        client.max_inflight_messages_set(200)
        client.connect(broker.host, broker.port)
        client.loop_start()
        clients.append((device, client))
    stamp = time.time_ns()
    for i in range(PER_DEVICE):
        last = None
        for device, client in clients:
            last = client.publish(
                f"sensors/{device}/measurements",
                f"weather,device={device} temperature={i % 40}.5 {stamp + i}",
                qos=1,
            )
        if i % 100 == 99:
            last.wait_for_publish(30)
            time.sleep(0.05)
        published[0] += len(clients)
    for _device, client in clients:
        client.loop_stop()
        client.disconnect()


def rows(database: Path) -> tuple[int, int]:
    try:
        db = sqlite3.connect(database, timeout=30)
        return db.execute("SELECT COUNT(*), COUNT(DISTINCT device || '/' || time) FROM weather").fetchone()
    except sqlite3.OperationalError:
        return 0, 0


def test_a_killed_replica_resumes_its_session_and_a_leaving_one_drains_it(
    mosquitto_factory, mqtt_settings, local_ca, tmp_path: Path
) -> None:
    broker = mosquitto_factory()
    database = tmp_path / "weather.db"
    a = Replica("a", broker, local_ca, tmp_path, database).start()
    b = Replica("b", broker, local_ca, tmp_path, database).start()
    c = Replica("c", broker, local_ca, tmp_path, database).start()
    published = [0]
    publisher = threading.Thread(target=publish, args=(broker, mqtt_settings, published))
    publisher.start()
    total = len(DEVICES) * PER_DEVICE
    try:
        wait_until(lambda: published[0] >= total // 4, 120, "a quarter published")
        b.stop(signal.SIGKILL)  # crashed: nothing committed or acknowledged after this point
        wait_until(lambda: published[0] >= total // 2, 120, "half published")
        b.start()  # back under its own session: what the broker queued for it meanwhile arrives now
        assert c.stop(signal.SIGTERM) == 0  # scale-down: unsubscribes, drains its session, ends it
        publisher.join(300)
        wait_until(lambda: rows(database)[0] >= total, 120, f"{total} rows")
        time.sleep(1.0)  # anything extra (a duplicate) would arrive now
        assert rows(database) == (total, total)
        assert a.measurements() > 0 and b.measurements() > 0  # both replicas took a share
    finally:
        for replica in (a, b, c):
            if replica.process and replica.process.poll() is None:
                replica.stop()
