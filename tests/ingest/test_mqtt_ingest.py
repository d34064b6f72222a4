"""Ingest against a real Mosquitto over mutual TLS, into the embedded store.

The outage test is the one issue 6 asks to show: under a steady stream the store goes away for a while
and the broker restarts once; at the end every published message is stored exactly once and the only
dead letters are the malformed messages the test sent."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from pathlib import Path

import pytest

from weatherfleet.ingest.batching import BatchPolicy
from weatherfleet.ingest.consumer import MqttConsumer
from weatherfleet.ingest.deadletters import DeadLetterStore
from weatherfleet.ingest.pipeline import Ingestor
from weatherfleet.ingest.spool import Spool
from weatherfleet.mqtt import make_client
from weatherfleet.services.process import wait_until

START_NS = time.time_ns() - 3600 * 10**9  # readings of the last hour: inside the accepted clock range


class Ingest:
    """One ingest process's worth of objects in this test process."""

    def __init__(
        self, settings, store, workdir: Path, client_id: str, policy: BatchPolicy | None = None
    ) -> None:
        self.store = store
        self.dead = DeadLetterStore(workdir / "dead.db")
        self.ingestor = Ingestor(
            store,
            Spool(workdir / "spool"),
            self.dead,
            policy=policy or BatchPolicy(max_rows=200, max_delay=0.2, retry_interval=0.3),
        )
        # short-lived sessions: the session broker is shared with other suites, and a leftover session
        # would queue their messages until it expires
        self.consumer = MqttConsumer(settings, self.ingestor, client_id=client_id, session_expiry_s=30)

    def start(self) -> Ingest:
        self.consumer.start()
        assert self.consumer.subscribed.wait(30), "ingest did not subscribe"
        return self

    def stop(self) -> None:
        self.consumer.stop()


class Device:
    """A device publishing QoS 1 with a persistent session, counting what the broker acknowledged."""

    def __init__(self, settings, device_id: str) -> None:
        self.device_id = device_id
        self.client = make_client(settings, f"{device_id}-{uuid.uuid4().hex[:6]}", clean_start=False)
        self.client.max_queued_messages_set(0)
        self.sent_mids: list[int] = []
        self.acked_mids: set[int] = set()
        self.sent_times: list[int] = []
        # a publish made while the broker is down is queued by paho and sent after the reconnect; its
        # MQTTMessageInfo keeps the "not connected" code, so count the broker's PUBACKs instead
        self.client.on_publish = lambda _c, _u, mid, _rc, _p: self.acked_mids.add(mid)
        self.client.connect(settings.host, settings.port)
        self.client.loop_start()

    def reading(self, index: int) -> None:
        stamp = START_NS + index * 1_000_000
        payload = (
            f"weather,device={self.device_id},location=lab,firmware=1.0.0 temperature={index % 50}.25 {stamp}"
        )
        self.sent_times.append(stamp)
        self.publish("measurements", payload)

    def publish(self, kind: str, payload: str, retain: bool = False) -> None:
        info = self.client.publish(f"sensors/{self.device_id}/{kind}", payload, qos=1, retain=retain)
        self.sent_mids.append(info.mid)

    def all_acknowledged(self) -> bool:
        return self.acked_mids.issuperset(self.sent_mids)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def devices(mqtt_settings):
    made: list[Device] = []

    def make(broker, device_id: str) -> Device:
        device = Device(mqtt_settings(broker, device_id), device_id)
        made.append(device)
        return device

    yield make
    for device in made:
        device.close()


def ingest_settings(mqtt_settings, broker):
    from weatherfleet import identities

    return mqtt_settings(broker, identities.INGEST)


def dev01_statuses(store) -> list[tuple]:
    with sqlite3.connect(store.path) as db:
        return db.execute("SELECT online, heap FROM device_status WHERE device = 'dev-01'").fetchall()


def test_readings_status_and_ota_events_are_stored(
    mosquitto, mqtt_settings, devices, sqlite_store, tmp_path
) -> None:
    ingest = Ingest(
        ingest_settings(mqtt_settings, mosquitto), sqlite_store, tmp_path, f"ingest-{uuid.uuid4().hex}"
    )
    one, two = devices(mosquitto, "dev-01"), devices(mosquitto, "dev-02")
    one.publish("status", json.dumps({"online": True, "firmware": "1.0.0", "heap": 90000}), retain=True)
    ingest.start()
    try:
        one.reading(1)
        now_s = time.time()
        two.publish(
            "measurements", json.dumps({"device": "dev-02", "location": "cellar", "time": now_s, "co2": 612})
        )
        two.publish(
            "ota", json.dumps({"event": "downloading", "version": "1.1.0", "percent": 50, "time": int(now_s)})
        )
        two.publish("measurements", f"weather,device=dev-02 temperature=200 {time.time_ns()}")  # flagged
        wait_until(
            lambda: sqlite_store.count("weather") == 3 and sqlite_store.count("ota_events") == 1, 30, "rows"
        )
        # the session broker may hold retained statuses of other tests' devices too: look at dev-01's
        wait_until(lambda: dev01_statuses(sqlite_store) == [(1, 90000)], 30, "dev-01's retained status")
    finally:
        ingest.stop()
        one.publish("status", "", retain=True)  # clear the retained status on the shared broker
        wait_until(one.all_acknowledged, 30, "the retained status to be cleared")
    latest = sqlite_store.latest_readings()
    assert latest["dev-01"].values == {"temperature": 1.25}
    assert latest["dev-02"].flagged == "temperature=200.0"
    db = sqlite3.connect(sqlite_store.path)
    assert db.execute(
        "SELECT co2, location FROM weather WHERE device = 'dev-02' AND co2 IS NOT NULL"
    ).fetchall() == [(612.0, "cellar")]
    assert dev01_statuses(sqlite_store) == [(1, 90000)]
    assert db.execute("SELECT event, percent FROM ota_events").fetchall() == [("downloading", 50)]
    # other tests' devices may have left retained statuses on the shared broker
    assert {"dev-01", "dev-02"} <= set(sqlite_store.last_seen())
    metrics = ingest.ingestor.metrics
    assert metrics.flagged_values._value.get() == 1
    assert metrics.rows_written.labels("weather")._value.get() == 3


def test_messages_sent_while_ingest_is_away_arrive_when_it_returns(
    mosquitto, mqtt_settings, devices, sqlite_store, tmp_path
) -> None:
    client_id = f"ingest-{uuid.uuid4().hex}"
    settings = ingest_settings(mqtt_settings, mosquitto)
    Ingest(settings, sqlite_store, tmp_path / "a", client_id).start().stop()  # creates the persistent session
    device = devices(mosquitto, "dev-03")
    for i in range(50):
        device.reading(i)
    wait_until(device.all_acknowledged, 30, "the broker to take the readings")
    assert sqlite_store.count("weather") == 0
    ingest = Ingest(settings, sqlite_store, tmp_path / "b", client_id).start()
    try:
        wait_until(lambda: sqlite_store.count("weather") == 50, 30, "the queued readings")
    finally:
        ingest.stop()


def test_unacknowledged_messages_are_redelivered_after_a_crash(
    mosquitto, mqtt_settings, devices, sqlite_store, switchable_store, tmp_path
) -> None:
    """The first ingest cannot make anything durable (store down, spool disk failing) and then dies:
    nothing was acknowledged, so the broker gives every message to the next ingest."""
    client_id = f"ingest-{uuid.uuid4().hex}"
    settings = ingest_settings(mqtt_settings, mosquitto)
    switchable_store.down = True
    doomed = Ingest(settings, switchable_store, tmp_path / "a", client_id)

    def disk_full(points):
        raise OSError("No space left on device")

    doomed.ingestor.spool.append = disk_full
    doomed.start()
    device = devices(mosquitto, "dev-04")
    for i in range(30):
        device.reading(i)
    wait_until(
        lambda: doomed.ingestor.metrics.messages_in.labels("measurements")._value.get() == 30, 30, "delivery"
    )
    assert doomed.ingestor.committed == 0
    # crash: the connection drops without a DISCONNECT and without any PUBACK for these messages
    doomed.consumer.client.loop_stop()
    doomed.consumer.client.socket().close()
    doomed.ingestor._stopping.set()
    doomed.ingestor._wake.set()

    survivor = Ingest(settings, sqlite_store, tmp_path / "b", client_id)
    survivor.start()
    try:
        wait_until(lambda: sqlite_store.count("weather") == 30, 60, "redelivery")
    finally:
        survivor.stop()


MALFORMED = [
    ("measurements", "weather,device=dev-01 wind=3 1764000000000000000"),
    ("measurements", '{"device": "dev-01", "temperature": 21.5}'),
    ("measurements", "weather,device=dev-01 temperature=NaN 1764000000000000000"),
    ("status", '{"online": "maybe"}'),
    ("ota", '{"event": "exploded"}'),
]


@pytest.mark.slow
def test_outage_of_store_and_broker_loses_and_duplicates_nothing(
    mosquitto_factory, mqtt_settings, devices, switchable_store, sqlite_store, tmp_path
) -> None:
    broker = mosquitto_factory()
    settings = ingest_settings(mqtt_settings, broker)
    ingest = Ingest(settings, switchable_store, tmp_path, f"ingest-{uuid.uuid4().hex}").start()
    fleet = [devices(broker, f"dev-{i:02d}") for i in range(1, 6)]
    stop_stream = threading.Event()

    def stream(device: Device) -> None:
        index = bad = 0
        while not stop_stream.is_set():
            device.reading(index)
            if index % 97 == 13 and bad < len(MALFORMED):
                kind, payload = MALFORMED[bad]
                device.publish(kind, payload.replace("dev-01", device.device_id))
                bad += 1
            index += 1
            time.sleep(0.02)  # ~50 readings/s per device
        for kind, payload in MALFORMED[bad:]:  # a short stream: send the remaining bad ones now
            device.publish(kind, payload.replace("dev-01", device.device_id))

    threads = [threading.Thread(target=stream, args=(d,), daemon=True) for d in fleet]
    for thread in threads:
        thread.start()
    try:
        stored = lambda: sqlite_store.count("weather")  # noqa: E731
        wait_until(lambda: stored() > 200, 60, "the stream to flow")
        switchable_store.down = True  # the store goes away ...
        wait_until(lambda: ingest.ingestor.spool.points > 300, 60, "batches to spool during the outage")
        broker.restart()  # ... and the broker restarts once while it is away
        wait_until(lambda: ingest.consumer.connected.is_set(), 60, "ingest to reconnect")
        spooled_before = ingest.ingestor.spool.points
        wait_until(
            lambda: ingest.ingestor.spool.points > spooled_before + 200, 60, "the stream after the restart"
        )
        switchable_store.down = False  # the store is back
        wait_until(lambda: not ingest.ingestor.spool, 60, "the spool to drain")
        time.sleep(1.0)  # keep streaming for a moment with everything healthy
    finally:
        stop_stream.set()
        for thread in threads:
            thread.join(10)
    for device in fleet:
        wait_until(device.all_acknowledged, 60, f"{device.device_id}'s messages to be acknowledged")
    published = sum(len(d.sent_times) for d in fleet)
    try:
        wait_until(lambda: stored() == published, 60, f"{published} stored readings")
        wait_until(lambda: ingest.dead.count() >= len(MALFORMED) * len(fleet), 30, "dead letters")
    finally:
        ingest.stop()

    assert switchable_store.failed_writes > 0
    db = sqlite3.connect(sqlite_store.path)
    rows = db.execute("SELECT device, time, temperature FROM weather").fetchall()
    assert len(rows) == published
    expected = {(d.device_id, t) for d in fleet for t in d.sent_times}
    assert {(device, t) for device, t, _ in rows} == expected  # every message, each exactly once
    assert all(temp == (t - START_NS) // 1_000_000 % 50 + 0.25 for _, t, temp in rows)
    letters = ingest.dead.list()
    sent_bad = sorted(p.replace("dev-01", d.device_id) for d in fleet for _, p in MALFORMED)
    assert sorted(letter.payload.decode() for letter in letters) == sent_bad
    assert {letter.source for letter in letters} == {"parse"}
    deliveries = sum(
        ingest.ingestor.metrics.messages_in.labels(k)._value.get() for k in ("measurements", "status", "ota")
    )
    print(
        f"\noutage test: published={published} stored={len(rows)} duplicates=0 deliveries={deliveries:.0f} "
        f"dead_letters={len(letters)} store_failures={switchable_store.failed_writes}"
    )
