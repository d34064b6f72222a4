"""Ingest benchmark: MQTT (real Mosquitto, mutual TLS) into SQLite, against a bare paho subscriber.

1. Throughput. The broker holds the same backlog of N readings for two persistent sessions. First a bare
   paho subscriber (QoS 1, auto-ack, counts in on_message and nothing else) drains its session, then
   ingest (validate, batch, SQLite upsert with fsync, ack after commit) drains its own. Both are timed from
   connect to the last message, in this process, on this broker, in this run. Printed: both rates and
   their ratio (goal >= 0.8), and the check that SQLite holds exactly N rows (zero loss, no duplicates).
2. Memory. A child process runs ingest while publisher processes stream M readings (1,000,000 by
   default) through the broker, paced so the broker's queue stays bounded. The child reports its
   resident set size at every tenth of the stream and its peak (VmHWM): flat means it does not grow with
   the count.

    .venv/bin/python bench/ingest.py --quick      # ~1 minute: N=20,000, M=100,000
    .venv/bin/python bench/ingest.py              # 3 rounds of N=60,000, M=1,000,000
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sqlite3
import statistics
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from weatherfleet import identities
from weatherfleet.mqtt import MqttSettings, make_client
from weatherfleet.pki import LocalCA
from weatherfleet.reconcilers.broker import mosquitto_acl
from weatherfleet.services.mosquitto import MosquittoBroker
from weatherfleet.services.process import free_port, wait_until

START_NS = time.time_ns() - 24 * 3600 * 10**9
RECEIVE_MAXIMUM = 4000  # both consumers ask the broker for the same in-flight window


def settings_for(ca: LocalCA, broker: MosquittoBroker, identity: str) -> dict:
    issued = ca.issue(identity)
    return MqttSettings(
        host=broker.host, port=broker.port, ca=issued.ca, cert=issued.cert, key=issued.key
    ).model_dump()


# -- publishers (child processes) ---------------------------------------------------------------------


def publish(
    settings: dict,
    device: str,
    offset: int,
    count: int,
    consumed=None,
    max_backlog: int = 0,
    total_published=None,
) -> None:
    """Publish `count` readings of `device` with unique timestamps; optionally paced by `consumed`."""
    client = make_client(MqttSettings(**settings), f"bench-{device}", protocol=mqtt.MQTTv311)
    client.max_inflight_messages_set(1000)
    client.connect(settings["host"], settings["port"])
    client.loop_start()
    sent = 0
    while sent < count:
        if consumed is not None:
            while total_published.value - consumed.value > max_backlog:
                time.sleep(0.01)
        chunk = min(1000, count - sent)
        last = None
        for i in range(sent, sent + chunk):
            stamp = START_NS + (offset + i) * 1000
            payload = f"weather,device={device},location=bench,firmware=1.0.0 temperature={i % 60}.5,humidity=45.25,pressure=1001.5 {stamp}"
            last = client.publish(f"sensors/{device}/measurements", payload, qos=1)
        last.wait_for_publish(60)
        sent += chunk
        if total_published is not None:
            with total_published.get_lock():
                total_published.value += chunk
    client.loop_stop()
    client.disconnect()


def publish_all(
    ctx, settings_by_device: dict[str, dict], total: int, offset: int = 0, **pacing
) -> list[mp.Process]:
    devices = list(settings_by_device)
    share = total // len(devices)
    processes = []
    for n, device in enumerate(devices):
        count = share if n < len(devices) - 1 else total - share * (len(devices) - 1)
        p = ctx.Process(
            target=publish,
            args=(settings_by_device[device], device, n * 10**9 + offset, count),
            kwargs=pacing,
        )
        p.start()
        processes.append(p)
    return processes


# -- consumers ------------------------------------------------------------------------------------------


def connect_properties() -> Properties:
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = 3600
    properties.ReceiveMaximum = RECEIVE_MAXIMUM
    return properties


def create_session(settings: dict, client_id: str) -> None:
    """Subscribe once and leave: the broker now queues sensors/# for this persistent session."""
    client = make_client(MqttSettings(**settings), client_id, clean_start=False, protocol=mqtt.MQTTv5)
    done = threading.Event()
    client.on_connect = lambda c, *_: c.subscribe("sensors/#", qos=1)
    client.on_subscribe = lambda *_: done.set()
    client.connect(settings["host"], settings["port"], clean_start=False, properties=connect_properties())
    client.loop_start()
    assert done.wait(30), "subscription not acknowledged"
    client.disconnect()
    client.loop_stop()


def drain_bare(settings: dict, client_id: str, expected: int) -> float:
    """A bare paho subscriber that only counts: seconds to receive `expected` messages."""
    client = make_client(MqttSettings(**settings), client_id, clean_start=False, protocol=mqtt.MQTTv5)
    count = 0
    done = threading.Event()

    def on_message(_c, _u, _m) -> None:
        nonlocal count
        count += 1
        if count >= expected:
            done.set()

    client.on_message = on_message
    started = time.perf_counter()
    client.connect(settings["host"], settings["port"], clean_start=False, properties=connect_properties())
    client.loop_start()
    assert done.wait(600), f"bare subscriber got {count} of {expected}"
    elapsed = time.perf_counter() - started
    client.disconnect()
    client.loop_stop()
    return elapsed


def make_ingest(settings: dict, client_id: str, workdir: Path):
    from weatherfleet.ingest.consumer import MqttConsumer
    from weatherfleet.ingest.deadletters import DeadLetterStore
    from weatherfleet.ingest.pipeline import Ingestor
    from weatherfleet.ingest.spool import Spool
    from weatherfleet.ingest.sqlite_store import SQLiteStore

    store = SQLiteStore(workdir / "weather.db")
    ingestor = Ingestor(store, Spool(workdir / "spool"), DeadLetterStore(workdir / "dead.db"))
    consumer = MqttConsumer(
        MqttSettings(**settings),
        ingestor,
        client_id=client_id,
        receive_maximum=RECEIVE_MAXIMUM,
        session_expiry_s=3600,
    )
    return consumer, store


def drain_ingest(settings: dict, client_id: str, expected: int, workdir: Path) -> tuple[float, int, int]:
    consumer, store = make_ingest(settings, client_id, workdir)
    started = time.perf_counter()
    consumer.start()
    wait_until(
        lambda: consumer.ingestor.committed >= expected, 600, f"ingest to commit {expected}", interval=0.01
    )
    elapsed = time.perf_counter() - started
    consumer.stop()
    batches = consumer.ingestor.metrics.batch_seconds.collect()[0]
    count = next(s.value for s in batches.samples if s.name.endswith("_count"))
    total = next(s.value for s in batches.samples if s.name.endswith("_sum"))
    print(
        f"ingest batches: {count:.0f} (mean {expected / count:.0f} messages, {total / count * 1000:.1f} ms to commit)"
    )
    rows = store.count("weather")
    distinct = (
        sqlite3.connect(store.path)
        .execute("SELECT COUNT(DISTINCT device || time) FROM weather")
        .fetchone()[0]
    )
    dead = consumer.ingestor.dead_letters.count()
    assert dead == 0, f"{dead} dead letters"
    return elapsed, rows, distinct


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def memory_child(settings: dict, client_id: str, expected: int, workdir: str, consumed, report) -> None:
    """Runs ingest in its own process so its peak RSS is ingest's alone."""
    consumer, store = make_ingest(settings, client_id, Path(workdir))
    consumer.start()
    samples = []
    next_mark = expected // 10
    while consumer.ingestor.committed < expected:
        consumed.value = consumer.ingestor.committed
        if consumer.ingestor.committed >= next_mark:
            samples.append((consumer.ingestor.committed, _status("VmRSS")))
            next_mark += expected // 10
        time.sleep(0.05)
    consumed.value = consumer.ingestor.committed
    samples.append((consumer.ingestor.committed, _status("VmRSS")))
    consumer.stop()
    report.put({"samples": samples, "peak": _status("VmHWM"), "rows": store.count("weather")})


# -- main -----------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer messages (about a minute)")
    parser.add_argument("--throughput-messages", type=int)
    parser.add_argument("--memory-messages", type=int)
    parser.add_argument("--publishers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    n = options.throughput_messages or (20_000 if options.quick else 60_000)
    m = options.memory_messages or (100_000 if options.quick else 1_000_000)
    ctx = mp.get_context("spawn")

    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        root = Path(tmp)
        ca = LocalCA(root / "pki")
        devices = [f"dev-{i:02d}" for i in range(1, options.publishers + 1)]
        broker = MosquittoBroker(root / "mosquitto", ca, free_port(), mosquitto_acl("bench", devices)).start()
        try:
            ingest_settings = settings_for(ca, broker, identities.INGEST)
            publishers = {d: settings_for(ca, broker, d) for d in devices}

            # 1. throughput on the same backlog; rounds alternate who goes first, and the median ratio is
            #    printed, because the machine is shared and its load changes from second to second
            create_session(ingest_settings, "bench-bare")
            create_session(ingest_settings, "bench-ingest")
            ratios = []
            for round_ in range(options.rounds):
                started = time.perf_counter()
                for p in publish_all(ctx, publishers, n, offset=round_ * n):
                    p.join()
                print(
                    f"round {round_ + 1}: published {n} readings for both sessions in {time.perf_counter() - started:.1f}s"
                )
                workdir = root / f"throughput-{round_}"
                if round_ % 2 == 0:
                    bare = drain_bare(ingest_settings, "bench-bare", n)
                    ingest_s, rows, distinct = drain_ingest(ingest_settings, "bench-ingest", n, workdir)
                else:
                    ingest_s, rows, distinct = drain_ingest(ingest_settings, "bench-ingest", n, workdir)
                    bare = drain_bare(ingest_settings, "bench-bare", n)
                ratios.append(bare / ingest_s)
                print(f"  bare paho subscriber : {n / bare:9.0f} msg/s ({bare:.2f}s)")
                print(
                    f"  ingest into SQLite   : {n / ingest_s:9.0f} msg/s ({ingest_s:.2f}s), rows={rows} distinct={distinct}"
                )
                print(f"  ratio ingest/bare    : {bare / ingest_s:9.2f}; loss={n - distinct}")
                assert rows == distinct == n, "lost or duplicated readings"
            print(
                f"median ratio ingest/bare over {len(ratios)} rounds: {statistics.median(ratios):.2f} (goal >= 0.8)"
            )

            # 2. memory over a long stream
            create_session(ingest_settings, "bench-memory")
            consumed, total = ctx.Value("q", 0), ctx.Value("q", 0)
            report = ctx.Queue()
            child = ctx.Process(
                target=memory_child,
                args=(ingest_settings, "bench-memory", m, str(root / "memory"), consumed, report),
            )
            child.start()
            started = time.perf_counter()
            pubs = publish_all(
                ctx, publishers, m, consumed=consumed, max_backlog=50_000, total_published=total
            )
            result = report.get(timeout=3600)
            child.join()
            for p in pubs:
                p.join()
            elapsed = time.perf_counter() - started
            mib = 1024 * 1024
            marks = ", ".join(f"{count // 1000}k:{rss / mib:.0f}" for count, rss in result["samples"])
            print(
                f"memory run: {m} readings in {elapsed:.0f}s ({m / elapsed:.0f} msg/s end to end), rows={result['rows']}"
            )
            print(f"RSS MiB at messages committed: {marks}")
            print(f"peak RSS of the ingest process: {result['peak'] / mib:.0f} MiB")
            assert result["rows"] == m, "lost readings in the memory run"
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
