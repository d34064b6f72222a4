"""Ingest benchmark: a fleet of 10,000 devices, one reading each per 60 s, through real Mosquitto (mutual
TLS) into SQLite and into the InfluxDB 3 write path (a stand-in for `POST /api/v3/write_lp`, in this
process), with ingest running as it does in a cluster: `weatherfleet ingest` processes, one or two replicas
sharing `$share/ingest/sensors/#`, each with its own persistent session.

1. Fleet rate: the fleet's rate (10,000 / 60 s = 167 messages/s) for a window, one replica, per store.
   Printed: loss (published minus stored rows, goal 0) and ingest's resident set at the start, the middle
   and the end of the window (flat: it does not grow with the count).
2. Sustained rate: as fast as two publisher processes can publish, for 1 and for 2 replicas, per store:
   messages stored per second from the first publish to the last row, and
   `headroom (sustained rate / needed rate)`, the factor by which ingest outruns the fleet; against a
   baseline in the same run, a bare paho subscriber that only counts what the same publishers send.

3. Throughput against a baseline: the broker holds the same backlog of N readings for two persistent
   sessions; a bare paho subscriber (QoS 1, auto-ack, counts and nothing else) drains one, ingest
   (in-process: validate, batch, SQLite upsert with fsync, ack after commit) the other. Both rates, their
   ratio (goal >= 0.8), and exactly N rows in SQLite (zero loss, no duplicates).
4. Memory over a long stream: ingest in a child process while publishers stream M readings (1,000,000
   by default), its resident set at every tenth and its peak (VmHWM).

    .venv/bin/python bench/ingest.py            # 120 s windows, 60,000 per sustained run; 3 x 60,000; 1,000,000
    .venv/bin/python bench/ingest.py --quick    # 15 s windows, 10,000; 1 x 20,000; 100,000 (smoke run)
"""

from __future__ import annotations

import argparse
import gzip
import multiprocessing as mp
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import paho.mqtt.client as mqtt
from _common import MIB, memory_bytes, wait_for
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from weatherfleet import identities
from weatherfleet.mqtt import MqttSettings, make_client
from weatherfleet.pki import LocalCA
from weatherfleet.reconcilers.broker import mosquitto_acl
from weatherfleet.services.mosquitto import MosquittoBroker
from weatherfleet.services.process import free_port, wait_until

DEVICES = 10_000
NEEDED = DEVICES / 60.0  # messages per second the fleet sends
PUBLISHER = "bench-fleet"
TOKEN = "apiv3_bench-token-not-a-secret"
ACL = f"user {identities.INGEST}\ntopic read sensors/#\n\nuser {PUBLISHER}\ntopic write sensors/#\n"


class WriteLpStandIn:
    """InfluxDB 3's write path as ingest's client meets it: `POST /api/v3/write_lp?db=` with a bearer
    token, gzip bodies, 204 on success; rows are keyed by series and timestamp (a second write of the
    same point overwrites it), so `rows` counts what was stored, duplicates once."""

    def __init__(self) -> None:
        self.keys: set[bytes] = set()
        self.lock = threading.Lock()
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                url = urlparse(self.path)
                ok = url.path == "/api/v3/write_lp" and parse_qs(url.query).get("db") == ["weather"]
                ok = ok and self.headers.get("Authorization", "").split(" ", 1)[-1] == TOKEN
                if ok:
                    keys = [
                        line.split(b" ", 1)[0] + b" " + line.rsplit(b" ", 1)[-1]
                        for line in body.split(b"\n")
                        if line
                    ]
                    with standin.lock:
                        standin.keys.update(keys)
                self.send_response(204 if ok else 400)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def rows(self) -> int:
        with self.lock:
            return len(self.keys)

    def reset(self) -> None:
        with self.lock:
            self.keys.clear()


def publish(settings: dict, first: int, count: int, rate: float | None, sent) -> None:
    """Readings of the fleet's devices in turn (device i % 10,000), unique timestamps, QoS 1; at `rate`
    messages per second, or as fast as the broker takes them."""
    client = make_client(MqttSettings(**settings), f"{PUBLISHER}-{first}")
    client.max_inflight_messages_set(1000)
    client.connect(settings["host"], settings["port"])
    client.loop_start()
    started = time.monotonic()
    stamp = time.time_ns() - 10**12
    last = None
    chunk = 50 if rate else 500
    for n in range(first, first + count):
        device = f"d{n % DEVICES:05d}"
        payload = f"weather,device={device},location=bench temperature={n % 40}.5,humidity=45.25 {stamp + n}"
        last = client.publish(f"sensors/{device}/measurements", payload, qos=1)
        if n % chunk == chunk - 1:
            last.wait_for_publish(120)
            with sent.get_lock():
                sent.value += chunk
            if rate:
                ahead = (n - first + 1) / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
    last.wait_for_publish(120)
    with sent.get_lock():
        sent.value += count % chunk
    client.loop_stop()
    client.disconnect()


class Ingest:
    """`weatherfleet ingest` replicas as child processes."""

    def __init__(self, root: Path, broker: MosquittoBroker, ca: LocalCA, store: str, standin: WriteLpStandIn):
        issued = ca.issue(identities.INGEST)
        username, password = broker.login(identities.INGEST)
        root.mkdir(parents=True, exist_ok=True)
        self.root, self.store, self.standin = root, store, standin
        self.database = root / "weather.db"
        self.env = os.environ | {
            "MQTT_HOST": broker.host,
            "MQTT_PORT": str(broker.services_port),
            "MQTT_USERNAME": username,
            "MQTT_PASSWORD": password,
            "MQTT_CA": str(issued.ca),
            "MQTT_CERT": str(issued.cert),
            "MQTT_KEY": str(issued.key),
            "INGEST_SQLITE_PATH": str(self.database),
            "INGEST_STATE_DIR": str(root / "state"),
            "INGEST_STORE": "influxdb" if store == "influxdb" else "sqlite",
            "INFLUX_HOST": standin.url,
            "INFLUX_TOKEN": TOKEN,
            "INFLUX_DATABASE": "weather",
            "INGEST_CLIENT_ID": f"bench-ingest-{root.name}",
            "INGEST_SHARE_GROUP": "ingest",
        }
        self.processes: list[subprocess.Popen] = []

    def start(self, replicas: int) -> Ingest:
        for n in range(replicas):
            port = free_port()
            env = self.env | {"INGEST_REPLICA": str(n), "INGEST_METRICS_PORT": str(port)}
            log = (self.root / f"ingest-{n}.log").open("ab")
            self.processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "weatherfleet", "ingest"], env=env, stdout=log, stderr=log
                )
            )
            wait_for(lambda port=port: _connected(port), 60, "ingest connected and subscribed")
        return self

    def rows(self) -> int:
        if self.store == "influxdb":
            return self.standin.rows()
        try:
            return (
                sqlite3.connect(self.database, timeout=30)
                .execute("SELECT COUNT(*) FROM weather")
                .fetchone()[0]
            )
        except sqlite3.OperationalError:
            return 0

    def rss(self) -> int:
        return sum(memory_bytes(p.pid, "VmRSS") for p in self.processes)

    def stop(self) -> None:
        for process in self.processes:
            process.send_signal(signal.SIGTERM)
        for process in self.processes:
            process.wait(60)


def _connected(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            return "weatherfleet_ingest_mqtt_connected 1.0" in response.read().decode()
    except OSError:
        return False


def fleet_rate(ctx, root, broker, ca, publisher: dict, store: str, standin, seconds: float) -> None:
    ingest = Ingest(root, broker, ca, store, standin).start(1)
    sent = ctx.Value("q", 0)
    count = int(NEEDED * seconds)
    p = ctx.Process(target=publish, args=(publisher, 0, count, NEEDED, sent))
    p.start()
    samples = []
    started = time.monotonic()
    while p.is_alive():
        samples.append(ingest.rss())
        time.sleep(seconds / 20)
    p.join()
    wait_for(lambda: ingest.rows() >= count, 120, f"{count} rows", interval=0.2)
    time.sleep(1.0)
    rows = ingest.rows()
    elapsed = time.monotonic() - started
    ingest.stop()
    marks = [samples[0], samples[len(samples) // 2], samples[-1]]
    print(
        f"fleet rate into {store:<8}: {count} readings of {DEVICES} devices at {NEEDED:.0f}/s in {elapsed:.0f}s; "
        f"loss {count - rows} (stored {rows}); ingest RSS start/middle/end "
        f"{' / '.join(f'{m / MIB:.0f}' for m in marks)} MiB (growth {(marks[-1] - marks[0]) / MIB:+.1f} MiB)"
    )


def bare_subscriber(settings: dict, client_id: str, expected: int, ready, done) -> None:
    """The baseline: a paho subscriber in the same share group that only counts (QoS 1, auto-ack)."""
    client = make_client(MqttSettings(**settings), client_id, protocol=mqtt.MQTTv5)
    count = 0

    def on_message(_c, _u, _m) -> None:
        nonlocal count
        count += 1
        if count >= expected:
            done.set()

    client.on_message = on_message
    client.on_subscribe = lambda *_: ready.set()
    client.on_connect = lambda c, *_: c.subscribe("$share/ingest/sensors/#", qos=1)
    client.connect(settings["host"], settings["port"])
    client.loop_start()
    done.wait(900)
    client.loop_stop()


def bare(ctx, broker, ca, publisher: dict, count: int) -> float:
    settings = settings_for(ca, broker, identities.INGEST)
    ready, done, sent = ctx.Event(), ctx.Event(), ctx.Value("q", 0)
    sub = ctx.Process(target=bare_subscriber, args=(settings, "bench-bare", count, ready, done))
    sub.start()
    ready.wait(60)
    half = count // 2
    started = time.monotonic()
    pubs = [ctx.Process(target=publish, args=(publisher, i * half, half, None, sent)) for i in range(2)]
    for p in pubs:
        p.start()
    done.wait(900)
    elapsed = time.monotonic() - started
    for p in [*pubs, sub]:
        p.join()
    rate = 2 * half / elapsed
    print(
        f"baseline: a bare paho subscriber that only counts: {rate:7.0f} messages/s ({2 * half} in {elapsed:.1f}s)"
    )
    return rate


def sustained(
    ctx, root, broker, ca, publisher: dict, store: str, standin, count: int, replicas: int
) -> float:
    ingest = Ingest(root, broker, ca, store, standin).start(replicas)
    sent = ctx.Value("q", 0)
    half = count // 2
    started = time.monotonic()
    pubs = [ctx.Process(target=publish, args=(publisher, i * half, half, None, sent)) for i in range(2)]
    for p in pubs:
        p.start()
    wait_for(lambda: ingest.rows() >= 2 * half, 900, f"{2 * half} rows", interval=0.1)
    elapsed = time.monotonic() - started
    for p in pubs:
        p.join()
    ingest.stop()
    rate = 2 * half / elapsed
    print(
        f"sustained into {store:<8} with {replicas} replica{'s' if replicas > 1 else ' '}: {rate:7.0f} messages/s "
        f"({2 * half} in {elapsed:.1f}s); headroom (sustained rate / needed rate) for {DEVICES} devices at "
        f"one reading per 60 s: {rate / NEEDED:.1f}"
    )
    return rate


# -- 3. and 4.: against a bare subscriber, and memory over a long stream ------------------------------

START_NS = time.time_ns() - 24 * 3600 * 10**9
RECEIVE_MAXIMUM = 4000  # both consumers ask the broker for the same in-flight window


def settings_for(ca: LocalCA, broker: MosquittoBroker, identity: str) -> dict:
    """A device on the boards' listener; an identity with a login (services, the shared publisher) on the
    services' listener, where one identity may hold several connections."""
    issued = ca.issue(identity)
    if identity not in broker.logins:
        return MqttSettings(
            host=broker.host, port=broker.port, ca=issued.ca, cert=issued.cert, key=issued.key
        ).model_dump()
    username, password = broker.login(identity)
    return MqttSettings(host=broker.host, port=broker.services_port, ca=issued.ca, cert=issued.cert,
                        key=issued.key, username=username, password=password).model_dump()  # fmt: skip


# -- publishers (child processes) ---------------------------------------------------------------------


def publish_backlog(
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
            target=publish_backlog,
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


def drain_and_memory(ctx, n: int, m: int, rounds: int, publishers_count: int) -> None:
    """3. and 4.: ingest against a bare subscriber on the same backlog, and its memory over a long stream."""

    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        root = Path(tmp)
        ca = LocalCA(root / "pki")
        devices = [f"dev-{i:02d}" for i in range(1, publishers_count + 1)]
        broker = MosquittoBroker(root / "mosquitto", ca, free_port(), mosquitto_acl("bench", devices)).start()
        try:
            ingest_settings = settings_for(ca, broker, identities.INGEST)
            publishers = {d: settings_for(ca, broker, d) for d in devices}

            # 1. throughput on the same backlog; rounds alternate who goes first, and the median ratio is
            #    printed, because the machine is shared and its load changes from second to second
            create_session(ingest_settings, "bench-bare")
            create_session(ingest_settings, "bench-ingest")
            ratios = []
            for round_ in range(rounds):
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


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short windows, fewer messages (smoke run)")
    parser.add_argument("--seconds", type=float, default=None, help="fleet-rate window (default 120)")
    parser.add_argument("--messages", type=int, default=None, help="per sustained run (default 60,000)")
    parser.add_argument(
        "--throughput-messages", type=int, help="backlog of the drain against a bare subscriber"
    )
    parser.add_argument("--memory-messages", type=int, help="readings of the memory run")
    parser.add_argument("--publishers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=None, help="drain rounds (default 3, --quick 1)")
    args = parser.parse_args()
    seconds = args.seconds or (15.0 if args.quick else 120.0)
    count = args.messages or (10_000 if args.quick else 60_000)
    ctx = mp.get_context("spawn")
    print(f"machine: {os.cpu_count()} cores shared by Mosquitto, the publishers, ingest and the stand-in")
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        root = Path(tmp)
        ca = LocalCA(root / "pki")
        # several publishers and ingest replicas share one identity each: logins on the services' listener
        logins = {identities.INGEST: "bench-ingest", PUBLISHER: "bench-publisher"}
        broker = MosquittoBroker(root / "mosquitto", ca, free_port(), ACL, logins=logins).start()
        standin = WriteLpStandIn()
        try:
            publisher = settings_for(ca, broker, PUBLISHER)
            run = 0
            for store in ("sqlite", "influxdb"):
                run += 1
                standin.reset()
                fleet_rate(ctx, root / f"run{run}", broker, ca, publisher, store, standin, seconds)
            baseline = bare(ctx, broker, ca, publisher, count)
            rates = {}
            for store in ("sqlite", "influxdb"):
                for replicas in (1, 2):
                    run += 1
                    standin.reset()
                    rates[(store, replicas)] = sustained(
                        ctx, root / f"run{run}", broker, ca, publisher, store, standin, count, replicas
                    )
            for store in ("sqlite", "influxdb"):
                print(
                    f"into {store}: 1 replica / bare subscriber x{rates[(store, 1)] / baseline:.2f}; "
                    f"2 replicas / 1 replica x{rates[(store, 2)] / rates[(store, 1)]:.2f}"
                )
        finally:
            broker.stop()
            standin.server.shutdown()
    drain_and_memory(
        ctx,
        args.throughput_messages or (20_000 if args.quick else 60_000),
        args.memory_messages or (100_000 if args.quick else 1_000_000),
        args.rounds or (1 if args.quick else 3),
        args.publishers,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
