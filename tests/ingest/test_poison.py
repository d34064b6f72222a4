"""Issue 14: nothing one message can do stops ingest.

- hostile text, JSON bombs, huge numbers and timestamps are dead letters with a reason (never the
  parser-bug path "internal error");
- a message the store refuses (here: a lone surrogate that got past validation, written into the real
  SQLite store) is isolated by splitting the batch: it becomes a dead letter with the store's reason,
  everything else of the batch is stored, and no retry cycle is spent on it;
- end to end through the real Mosquitto: a poison reading from one device does not hold back the
  readings of another.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from pathlib import Path

import pytest

from weatherfleet.ingest.batching import BatchPolicy
from weatherfleet.ingest.deadletters import DeadLetterStore
from weatherfleet.ingest.parsing import MessageParser, Rejected
from weatherfleet.ingest.pipeline import Delivery, Ingestor
from weatherfleet.ingest.records import Point
from weatherfleet.ingest.spool import Spool
from weatherfleet.ingest.sqlite_store import SQLiteStore
from weatherfleet.services.process import wait_until

NOW = 1_764_000_000_000_000_000
parser = MessageParser()
MEASUREMENTS, STATUS, OTA = "sensors/dev-01/measurements", "sensors/dev-01/status", "sensors/dev-01/ota"


def rejected(topic: str, payload: bytes | str) -> str:
    raw = payload.encode("utf-8", "surrogatepass") if isinstance(payload, str) else payload
    with pytest.raises(Rejected) as caught:
        parser.parse(topic, raw, NOW)
    return caught.value.reason


# -- the boundary: every text field, numbers, nesting -------------------------------------------------


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        # escaped lone surrogates: valid JSON, valid UTF-8 on the wire, no store can encode them
        (MEASUREMENTS, '{"time": 1764000000, "co2": 400, "location": "\\ud800"}', "lone surrogate (U+D800)"),
        (MEASUREMENTS, '{"time": 1764000000, "co2": 400, "firmware": "1.0\\udfff"}', "lone surrogate"),
        (STATUS, '{"online": true, "firmware": "\\ud800"}', "'firmware' contains a lone surrogate"),
        (STATUS, '{"online": true, "boot": "x\\ud83d"}', "lone surrogate"),
        (STATUS, '{"online": true, "slot": "\\udc00"}', "lone surrogate"),
        (STATUS, '{"online": true, "sensors": {"bme280": "\\ud800"}}', "lone surrogate"),
        (STATUS, '{"online": true, "sensors": {"\\ud800": "ok"}}', "a key contains a lone surrogate"),
        (STATUS, '{"online": true, "extra": [["\\ud800"]]}', "lone surrogate"),
        (OTA, '{"event": "failed", "reason": "\\ud800"}', "lone surrogate"),
        (OTA, '{"event": "installed", "version": "1.0.0\\ud800"}', "lone surrogate"),
        # non-characters, escaped and raw
        (STATUS, '{"online": true, "firmware": "\\uffff"}', "non-character (U+FFFF)"),
        (STATUS, '{"online": true, "firmware": "\\ufdd0"}', "non-character (U+FDD0)"),
        (STATUS, '{"online": true, "firmware": "\\ud83f\\udffe"}', "non-character (U+1FFFE)"),
        (STATUS, '{"online": true, "firmware": "a\ufffe"}', "non-character (U+FFFE)"),
        (MEASUREMENTS, "weather,device=dev-01,location=a\U0010ffff co2=3 1764000000000000000", "U+10FFFF"),
        # control characters in text (they would break line protocol and logs)
        (STATUS, '{"online": true, "firmware": "1\\n0"}', "control character (U+000A)"),
        (MEASUREMENTS, '{"time": 1764000000, "co2": 1, "location": "a\\u0000"}', "control character"),
        (MEASUREMENTS, "weather,device=dev-01,location=a\tb co2=3 1764000000000000000", "control character"),
        # JSON bombs and huge numbers: reasons, not "internal error"
        (MEASUREMENTS, '{"a":' * 10000, "nested too deeply"),
        (STATUS, "[" * 30000, "nested too deeply"),
        (OTA, '{"event": "failed", "x": ' + "[" * 30000, "nested too deeply"),
        (MEASUREMENTS, '{"time": 1e300, "co2": 400}', "out of range for epoch seconds"),
        (MEASUREMENTS, '{"time": -1e300, "co2": 400}', "out of range for epoch seconds"),
        (OTA, '{"event": "failed", "time": 1e300}', "time"),  # the model's reason or ours
        (STATUS, '{"online": true, "time": 1e308}', "out of range for epoch seconds"),
        (MEASUREMENTS, '{"time": 1764000000, "co2": ' + "9" * 5000 + "}", "5000 digits is out of range"),
        (MEASUREMENTS, '{"time": 1764000000, "co2": ' + "9" * 400 + "}", "400 digits is out of range"),
        (MEASUREMENTS, '{"time": ' + "1" * 400 + ', "co2": 1}', "out of range"),
        (STATUS, '{"online": true, "uptime": ' + "9" * 30 + "}", "out of range"),
        (STATUS, '{"online": true, "heap": 1e300}', "invalid status"),
        (MEASUREMENTS, '{"time": 1764000000, "co2": 1e400}', "not a finite number"),
        (MEASUREMENTS, "weather,device=dev-01 co2=1e400 1764000000000000000", "not a finite number"),
        (MEASUREMENTS, "weather,device=dev-01 co2=" + "9" * 5000 + "i 1764000000000000000", "18 digits"),
        (MEASUREMENTS, "weather,device=dev-01 co2=\u00b2i 1764000000000000000", "must be a number"),
        (MEASUREMENTS, "weather,device=dev-01 co2=\u0661 1764000000000000000", "must be a number"),
        (MEASUREMENTS, "weather,device=dev-01 co2=1 " + "9" * 5000, "5000 digits is out of range"),
        (MEASUREMENTS, "weather,device=dev-01 co2=1 \u00b2", "not an integer"),
    ],
)
def test_hostile_payloads_are_rejected_with_a_reason(topic: str, payload: str, reason: str) -> None:
    text = rejected(topic, payload)
    assert reason in text
    assert "internal error" not in text


def test_unicode_text_that_is_valid_is_kept() -> None:
    [point] = parser.parse(
        MEASUREMENTS,
        json.dumps(
            {"time": 1764000000, "co2": 400, "location": "Gew\u00e4chshaus \U0001f331 \u5317"}
        ).encode(),
        NOW,
    )
    assert point.tags["location"] == "Gew\u00e4chshaus \U0001f331 \u5317"


def test_a_device_id_in_the_topic_must_be_printable_ascii() -> None:
    assert "printable ASCII" in rejected("sensors/d\u00e9v/status", '{"online": true}')


async def test_hostile_payloads_through_the_pipeline_are_dead_letters_with_reasons(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "weather.db")
    ingestor, acked, dead = _make(tmp_path, store)
    hostile = [
        (STATUS, b'{"online": true, "firmware": "\\ud800"}'),
        (MEASUREMENTS, b'{"a":' * 10000),
        (MEASUREMENTS, b'{"time": 1e300, "co2": 400}'),
        (MEASUREMENTS, b'{"time": 1764000000, "co2": ' + b"9" * 5000 + b"}"),
    ]
    for index, (topic, payload) in enumerate(hostile):
        ingestor.submit(Delivery(topic, payload, NOW, index))
    ingestor.submit(Delivery(MEASUREMENTS, f"weather,device=dev-01 co2=400 {NOW}".encode(), NOW, 99))
    ingestor.start()
    try:
        wait_until(lambda: len(acked) == 5, 10, "every message acknowledged")
    finally:
        ingestor.stop()
        store.close()
    letters = dead.list()
    assert len(letters) == 4
    assert all(letter.reason and "internal error" not in letter.reason for letter in letters)
    assert ingestor.metrics.dead_letters.labels("parse")._value.get() == 4


# -- the store: a message it refuses is isolated ------------------------------------------------------


class GapParser(MessageParser):
    """A parser with a validation gap: location text goes through unchecked (as before issue 14)."""

    def parse(self, topic: str, payload: bytes, received_ns: int) -> list[Point]:
        if payload.startswith(b"POISON"):
            location = payload[6:].decode("utf-8", "surrogatepass")
            return [Point("weather", {"device": "dev-01", "location": location}, {"co2": 1.0}, NOW - 1)]
        if payload.startswith(b"HUGE"):
            return [Point("device_status", {"device": "dev-02"}, {"online": True, "uptime": 2**70}, NOW - 2)]
        return super().parse(topic, payload, received_ns)


def _make(tmp_path: Path, store, **policy) -> tuple[Ingestor, list[Delivery], DeadLetterStore]:
    acked: list[Delivery] = []
    dead = DeadLetterStore(tmp_path / "dead.db")
    defaults = {"max_rows": 1000, "max_delay": 0.3, "linger": 0.05, "retry_interval": 60.0}
    ingestor = Ingestor(
        store,
        Spool(tmp_path / "spool"),
        dead,
        parser=GapParser(),
        policy=BatchPolicy(**(defaults | policy)),
        ack=acked.extend,
    )
    return ingestor, acked, dead


def _reading(i: int, device: str = "dev-03") -> Delivery:
    payload = f"weather,device={device} temperature={i % 40}.5 {NOW - 10**9 + i}".encode()
    return Delivery(f"sensors/{device}/measurements", payload, NOW, i)


def test_a_message_the_store_refuses_is_isolated_and_the_batch_is_stored(tmp_path: Path) -> None:
    """The lone surrogate of issue 14 in the real SQLite store: UnicodeEncodeError on the write. A retry
    interval of 60 s shows that no retry cycle is spent: everything is acknowledged within seconds."""
    store = SQLiteStore(tmp_path / "weather.db")
    ingestor, acked, dead = _make(tmp_path, store)
    for i in range(300):
        ingestor.submit(_reading(i))
    poison = "POISON\ud800".encode("utf-8", "surrogatepass")
    ingestor.submit(Delivery("sensors/dev-01/measurements", poison, NOW, "poison"))
    ingestor.submit(Delivery("sensors/dev-02/status", b"HUGE", NOW, "huge"))
    for i in range(300, 600):
        ingestor.submit(_reading(i))
    started = time.monotonic()
    ingestor.start()
    try:
        wait_until(lambda: len(acked) == 602, 20, "the whole batch acknowledged")
        assert time.monotonic() - started < 20
    finally:
        ingestor.stop()
    assert store.count("weather") == 600
    assert store.count("device_status") == 0
    letters = {letter.payload: letter for letter in dead.list()}
    assert set(letters) == {poison, b"HUGE"}
    assert letters[poison].source == "store" and letters[poison].topic == "sensors/dev-01/measurements"
    assert "UnicodeEncodeError" in letters[poison].reason
    assert "OverflowError" in letters[b"HUGE"].reason
    assert ingestor.metrics.dead_letters.labels("store")._value.get() == 2
    assert ingestor.metrics.store_errors._value.get() == 0  # never taken for an outage
    assert not ingestor.failed.is_set()
    store.close()


def test_later_batches_keep_flowing_after_a_poison_message(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "weather.db")
    ingestor, acked, dead = _make(tmp_path, store, max_rows=10)
    ingestor.start()
    try:
        ingestor.submit(Delivery(MEASUREMENTS, "POISON\udfff".encode("utf-8", "surrogatepass"), NOW, "p"))
        for i in range(50):
            ingestor.submit(_reading(i, "dev-04"))
        wait_until(lambda: store.count("weather") == 50, 20, "later readings stored")
        wait_until(lambda: len(acked) == 51, 10, "all acknowledged")
    finally:
        ingestor.stop()
    assert dead.count() == 1
    store.close()


def test_a_poison_point_in_the_spool_does_not_block_the_replay(tmp_path: Path) -> None:
    """While the store was down the batch went to the spool (which keeps points, not messages); on replay
    the refused point is isolated and kept as a store dead letter, the rest is written."""
    store = SQLiteStore(tmp_path / "weather.db")
    spool = Spool(tmp_path / "spool")
    good = [Point("weather", {"device": "dev-05"}, {"co2": float(i)}, NOW - 10**9 + i) for i in range(20)]
    bad = Point("weather", {"device": "dev-05", "location": "\ud800"}, {"co2": 1.0}, NOW - 5)
    spool.append([*good[:10], bad, *good[10:]])
    acked: list[Delivery] = []
    dead = DeadLetterStore(tmp_path / "dead.db")
    policy = BatchPolicy(max_rows=100, max_delay=0.2, linger=0.01, retry_interval=60.0)
    ingestor = Ingestor(store, spool, dead, policy=policy, ack=acked.extend).start()
    try:
        wait_until(lambda: not spool, 20, "the spool replayed")
    finally:
        ingestor.stop()
    assert store.count("weather") == 20
    [letter] = dead.list()
    assert letter.topic == "store:weather" and letter.source == "store"
    assert "UnicodeEncodeError" in letter.reason and b"\\ud800" in letter.payload
    assert not ingestor.failed.is_set()
    store.close()


def test_dead_letters_with_unencodable_text_are_still_kept(tmp_path: Path) -> None:
    from weatherfleet.ingest.records import DeadLetter

    dead = DeadLetterStore(tmp_path / "dead.db")
    dead.add_many([DeadLetter("sensors/\ud800/status", b"x", "reason quoting '\udfff'", NOW)])
    [letter] = dead.list()
    assert letter.topic == "sensors/\\ud800/status" and "\\udfff" in letter.reason


# -- end to end through the real broker ---------------------------------------------------------------


def test_a_poison_reading_through_mosquitto_does_not_stop_other_devices(
    mosquitto, mqtt_settings, sqlite_store, tmp_path
) -> None:
    from weatherfleet import identities
    from weatherfleet.ingest.consumer import MqttConsumer
    from weatherfleet.mqtt import make_client

    dead = DeadLetterStore(tmp_path / "dead.db")
    policy = BatchPolicy(max_rows=200, max_delay=0.2, retry_interval=60.0)
    ingestor = Ingestor(sqlite_store, Spool(tmp_path / "spool"), dead, policy=policy)
    consumer = MqttConsumer(
        mqtt_settings(mosquitto, identities.INGEST),
        ingestor,
        client_id=f"ingest-{uuid.uuid4().hex}",
        session_expiry_s=30,
    )
    consumer.start()
    assert consumer.subscribed.wait(30)
    clients = []
    try:
        for device in ("dev-11", "dev-12"):
            client = make_client(mqtt_settings(mosquitto, device), f"{device}-{uuid.uuid4().hex[:6]}")
            client.connect(mosquitto.host, mosquitto.port)
            client.loop_start()
            clients.append(client)
        attacker, other = clients
        now_s = time.time()
        # issue 14's message: an escaped lone surrogate in a JSON reading, and in a status
        attacker.publish(
            "sensors/dev-11/measurements",
            '{"time": ' + f"{now_s:f}" + ', "co2": 400, "location": "\\ud800"}',
            qos=1,
        ).wait_for_publish(10)
        attacker.publish("sensors/dev-11/status", '{"online": true, "firmware": "\\ud800"}', qos=1)
        for i in range(20):
            other.publish(
                "sensors/dev-12/measurements", f"weather,device=dev-12 co2={400 + i} {time.time_ns()}", qos=1
            )
        wait_until(lambda: sqlite_store.count("weather") == 20, 30, "the other device's readings")
        wait_until(lambda: dead.count() == 2, 10, "two dead letters")
    finally:
        for client in clients:
            client.loop_stop()
            client.disconnect()
        consumer.stop()
    reasons = sorted(letter.reason for letter in dead.list())
    assert all("lone surrogate (U+D800)" in reason for reason in reasons), reasons
    with sqlite3.connect(sqlite_store.path) as db:
        assert db.execute("SELECT COUNT(*) FROM weather WHERE device = 'dev-11'").fetchone() == (0,)
