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

    .venv/bin/python bench/ingest.py            # 120 s windows, 60,000 messages per sustained run
    .venv/bin/python bench/ingest.py --quick    # 15 s windows, 10,000 messages (smoke run)
"""

from __future__ import annotations

import argparse
import gzip
import multiprocessing as mp
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from _common import MIB, memory_bytes, wait_for

from weatherfleet import identities
from weatherfleet.mqtt import MqttSettings, make_client
from weatherfleet.pki import LocalCA
from weatherfleet.services.mosquitto import MosquittoBroker
from weatherfleet.services.process import free_port

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
        root.mkdir(parents=True, exist_ok=True)
        self.root, self.store, self.standin = root, store, standin
        self.database = root / "weather.db"
        self.env = os.environ | {
            "MQTT_HOST": broker.host,
            "MQTT_PORT": str(broker.port),
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
    import paho.mqtt.client as mqtt

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
    issued = ca.issue(identities.INGEST)
    settings = MqttSettings(
        host=broker.host, port=broker.port, ca=issued.ca, cert=issued.cert, key=issued.key
    )
    ready, done, sent = ctx.Event(), ctx.Event(), ctx.Value("q", 0)
    sub = ctx.Process(target=bare_subscriber, args=(settings.model_dump(), "bench-bare", count, ready, done))
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


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short windows, fewer messages (smoke run)")
    parser.add_argument("--seconds", type=float, default=None, help="fleet-rate window (default 120)")
    parser.add_argument("--messages", type=int, default=None, help="per sustained run (default 60,000)")
    args = parser.parse_args()
    seconds = args.seconds or (15.0 if args.quick else 120.0)
    count = args.messages or (10_000 if args.quick else 60_000)
    ctx = mp.get_context("spawn")
    print(f"machine: {os.cpu_count()} cores shared by Mosquitto, the publishers, ingest and the stand-in")
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        root = Path(tmp)
        ca = LocalCA(root / "pki")
        broker = MosquittoBroker(root / "mosquitto", ca, free_port(), ACL).start()
        standin = WriteLpStandIn()
        try:
            issued = ca.issue(PUBLISHER)
            publisher = MqttSettings(
                host=broker.host, port=broker.port, ca=issued.ca, cert=issued.cert, key=issued.key
            ).model_dump()
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
