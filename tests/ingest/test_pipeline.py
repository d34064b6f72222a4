"""The pipeline without MQTT: ack only after durability, spool and ordered replay, dead letters, bounds."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from weatherfleet.ingest.batching import BatchPolicy
from weatherfleet.ingest.deadletters import DeadLetterStore
from weatherfleet.ingest.pipeline import Delivery, Ingestor
from weatherfleet.ingest.records import Point
from weatherfleet.ingest.spool import Spool
from weatherfleet.ingest.store import StoreUnavailable, WriteResult
from weatherfleet.services.process import wait_until

T0 = 1_764_000_000_000_000_000
TOPIC = "sensors/dev-01/measurements"


def message(i: int, device: str = "dev-01") -> Delivery:
    payload = f"weather,device={device} temperature={i % 40}.5 {T0 + i * 1000}".encode()
    return Delivery(f"sensors/{device}/measurements", payload, T0 + 10**9, i)


class RecordingStore:
    """Records every write; can block writes or fail them."""

    def __init__(self) -> None:
        self.batches: list[list[Point]] = []
        self.down = False
        self.gate = threading.Event()
        self.gate.set()

    def write(self, points: list[Point]) -> WriteResult:
        self.gate.wait(30)
        if self.down:
            raise StoreUnavailable("down")
        self.batches.append(list(points))
        return WriteResult(written=len(points))

    @property
    def times(self) -> list[int]:
        return [p.time_ns for batch in self.batches for p in batch]


def make(tmp_path: Path, store, **policy) -> tuple[Ingestor, list[Delivery], DeadLetterStore]:
    acked: list[Delivery] = []
    dead = DeadLetterStore(tmp_path / "dead.db")
    defaults = {"max_rows": 100, "max_delay": 0.2, "linger": 0.01, "retry_interval": 0.1}
    ingestor = Ingestor(
        store, Spool(tmp_path / "spool"), dead, policy=BatchPolicy(**(defaults | policy)), ack=acked.extend
    )
    return ingestor, acked, dead


def test_ack_waits_for_the_store(tmp_path: Path) -> None:
    store = RecordingStore()
    store.gate.clear()
    ingestor, acked, _ = make(tmp_path, store)
    ingestor.start()
    try:
        ingestor.submit(message(1))
        wait_until(lambda: ingestor.metrics.messages_in.labels("measurements")._value.get() == 1, 10, "parse")
        assert not store.gate.wait(0.3)  # the write is held ...
        assert acked == []  # ... so nothing is acknowledged
        store.gate.set()
        wait_until(lambda: len(acked) == 1, 10, "ack")
        assert store.times == [T0 + 1000]
    finally:
        ingestor.stop()


def test_size_bound_splits_batches(tmp_path: Path) -> None:
    store = RecordingStore()
    ingestor, acked, _ = make(tmp_path, store, max_rows=10, linger=5, max_delay=5)
    for i in range(25):
        ingestor.submit(message(i))
    ingestor.start()
    try:
        wait_until(lambda: len(acked) >= 20, 10, "two full batches")
        assert [len(b) for b in store.batches] == [10, 10]
    finally:
        ingestor.stop()  # flushes the remaining 5
    assert [len(b) for b in store.batches] == [10, 10, 5]
    assert [d.token for d in acked] == list(range(25))  # in arrival order (MQTT wants ordered PUBACKs)


def test_time_bound_flushes_a_lone_message(tmp_path: Path) -> None:
    store = RecordingStore()
    ingestor, acked, _ = make(tmp_path, store, max_rows=1000, linger=60, max_delay=0.3)
    ingestor.start()
    try:
        ingestor.submit(message(1))
        wait_until(lambda: len(acked) == 1, 10, "the time bound")
    finally:
        ingestor.stop()


def test_store_outage_spools_acks_and_replays_in_order(tmp_path: Path) -> None:
    store = RecordingStore()
    store.down = True
    ingestor, acked, _ = make(tmp_path, store, max_rows=5)
    ingestor.start()
    try:
        for i in range(12):
            ingestor.submit(message(i))
        wait_until(lambda: len(acked) == 12, 10, "acks while the store is down")
        assert store.batches == []
        assert ingestor.spool.points == 12 and ingestor.metrics.spool_points._value.get() == 12
        assert ingestor.metrics.store_errors._value.get() >= 1
        for i in range(12, 15):  # arriving while batches wait: they queue behind them
            ingestor.submit(message(i))
        wait_until(lambda: len(acked) == 15, 10, "acks")
        store.down = False
        wait_until(lambda: not ingestor.spool, 10, "the spool to drain")
        assert store.times == [T0 + i * 1000 for i in range(15)]  # oldest first, nothing twice
        assert ingestor.metrics.spool_batches._value.get() == 0
        assert ingestor.metrics.rows_written.labels("weather")._value.get() == 15
    finally:
        ingestor.stop()


def test_spool_survives_a_restart(tmp_path: Path) -> None:
    store = RecordingStore()
    store.down = True
    ingestor, acked, _ = make(tmp_path, store)
    ingestor.start()
    for i in range(7):
        ingestor.submit(message(i))
    wait_until(lambda: len(acked) == 7, 10, "spooled")
    ingestor.stop()
    store.down = False
    again, _, _ = make(tmp_path, store)  # a new process finds the spooled batches on disk
    assert again.spool.points == 7
    again.start()
    try:
        wait_until(lambda: not again.spool, 10, "replay after restart")
        assert store.times == [T0 + i * 1000 for i in range(7)]
    finally:
        again.stop()


def test_malformed_messages_become_dead_letters_before_the_ack(tmp_path: Path) -> None:
    store = RecordingStore()
    ingestor, acked, dead = make(tmp_path, store)
    ingestor.submit(message(1))
    ingestor.submit(Delivery(TOPIC, b"weather,device=dev-01 temperature=hot 1", T0, "bad-1"))
    ingestor.submit(Delivery("sensors/dev-01/ota", b"{not json", T0, "bad-2"))
    ingestor.start()
    try:
        wait_until(lambda: len(acked) == 3, 10, "acks")
    finally:
        ingestor.stop()
    letters = dead.list()
    assert [(d.topic, d.source) for d in letters] == [(TOPIC, "parse"), ("sensors/dev-01/ota", "parse")]
    assert "must be a number" in letters[0].reason and letters[0].payload.startswith(b"weather,")
    assert "invalid JSON" in letters[1].reason
    assert ingestor.metrics.dead_letters.labels("parse")._value.get() == 2
    assert len(store.times) == 1


def test_a_redelivered_malformed_message_is_kept_once(tmp_path: Path) -> None:
    ingestor, acked, dead = make(tmp_path, RecordingStore())
    for token in range(3):
        ingestor.submit(Delivery(TOPIC, b"weather,device=dev-01 wind=3 1", T0, token))
    ingestor.submit(Delivery(TOPIC, b"weather,device=dev-01 wind=4 1", T0, 3))
    ingestor.start()
    try:
        wait_until(lambda: len(acked) == 4, 10, "acks")
    finally:
        ingestor.stop()
    assert [d.payload for d in dead.list()] == [
        b"weather,device=dev-01 wind=3 1",
        b"weather,device=dev-01 wind=4 1",
    ]


def test_nothing_is_acked_when_even_the_spool_fails(tmp_path: Path) -> None:
    store = RecordingStore()
    store.down = True
    ingestor, acked, _ = make(tmp_path, store)

    def broken(points):
        raise OSError("disk full")

    ingestor.spool.append = broken
    ingestor.start()
    try:
        ingestor.submit(message(1))
        wait_until(lambda: ingestor.metrics.store_errors._value.get() >= 2, 10, "retries")
        assert acked == []
        del ingestor.spool.append  # the disk has room again
        wait_until(lambda: len(acked) == 1, 10, "ack after recovery")
    finally:
        ingestor.stop()


@pytest.mark.parametrize(
    ("size", "first", "last", "now", "due"),
    [
        (0, None, None, 5.0, False),
        (10, 0.0, 4.99, 5.0, True),  # size bound
        (3, 0.0, 4.999, 5.0, True),  # time bound (max_delay 5)
        (3, 3.0, 3.5, 3.9, False),  # quiet for 0.4 < linger 0.5
        (3, 3.0, 3.5, 4.0, True),  # quiet for the linger time
    ],
)
def test_batch_policy(size, first, last, now, due) -> None:
    assert BatchPolicy(max_rows=10, max_delay=5, linger=0.5).due(size, first, last, now) is due


def test_invalid_batch_policy() -> None:
    with pytest.raises(ValueError):
        BatchPolicy(max_rows=0)


def test_a_dying_writer_is_reported_not_silent(tmp_path: Path) -> None:
    ingestor, acked, _ = make(tmp_path, RecordingStore())
    ingestor.ack = None  # a bug: the ack callback is unusable
    ingestor.submit(message(1))
    ingestor.start()
    assert ingestor.failed.wait(10)
    assert acked == []
