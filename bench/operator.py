"""Operator benchmark: one fleet of N WeatherSensors against the embedded API server (weatherfleet.apiserver).

The operator runs as it does in a cluster, as its own process (`weatherfleet operator --standalone`), so its
CPU and peak RSS are its own; the API server, a cert-manager stand-in (marks each Certificate Ready, as
cert-manager does once it issued it) and the devices' readings run in this process. Writes are counted by
the API server, by the operator's user agent.

Phases and what each prints:
  1. create: the fleet and N sensors at once; time until every sensor is Ready and every child exists
     (Certificates, NanoMQ credential Secrets, the fleet's password file naming every device); operator
     writes per sensor (goal <= 3); the operator's and this process's (the API server's) CPU, which says
     which side is the bottleneck.
  2. no-op resync: a restarted operator reconciles everything, and then its resync timer does it again:
     writes (goal 0).
  3. steady state: every device reports every 60 s (its reading lands in the store the operator reads
     lastReading and lastSeen from, as ingest would write it). Time is compressed: one simulated hour
     takes --hour-seconds, and every period of the system is divided by the same factor (device report
     interval, WEATHERFLEET_STATUS_REFRESH_SECONDS, _RESYNC_SECONDS, _READINGS_SECONDS, noDataAfter), so
     the count of writes in that window is the count of an hour. Printed as
     `steady-state writes per sensor per hour: X` (goal <= 12), with the operator's CPU per reconcile.
  4. latency: the spec of one sensor changes in the busy fleet; time until its status shows the new
     generation (median of 5).
Peak RSS of the operator process comes last.

    .venv/bin/python bench/operator.py --sensors 2000    # the issue's figure (about 10 minutes here)
    .venv/bin/python bench/operator.py                   # 500 sensors
    .venv/bin/python bench/operator.py --quick           # 100 sensors, a 30 s hour (smoke run)
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import MIB, cpu_seconds, install_crds, memory_bytes, wait_for

from weatherfleet.apiserver import ApiServer
from weatherfleet.controller.settings import OperatorSettings
from weatherfleet.durations import format_duration
from weatherfleet.identities import OPERATOR
from weatherfleet.ingest.records import WEATHER, Point
from weatherfleet.ingest.sqlite_store import SQLiteStore
from weatherfleet.services.process import free_port

GROUP, VERSION = "weatherfleet.io", "v1alpha1"
MERGE = "application/merge-patch+json"
NS = "bench"
FLEET = "bench"
# The real periods (seconds) that the steady-state phase divides by its compression factor: the devices'
# report interval and noDataAfter as in the examples, the operator's own periods at their defaults.
DEFAULTS = OperatorSettings.from_env({})
REPORT_SECONDS, NO_DATA_AFTER = 60, 600
REFRESH_SECONDS = DEFAULTS.status_refresh_seconds
RESYNC_SECONDS, READINGS_SECONDS = DEFAULTS.resync_seconds, DEFAULTS.readings_seconds


STARTED: list[Operator] = []  # stopped on the way out, whatever happened


class Operator:
    """`weatherfleet operator` as a child process, with its metrics endpoint."""

    def __init__(self, kubeconfig: Path, log: Path, settings: dict[str, float | str]) -> None:
        self.port = free_port()
        env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "WEATHERFLEET_NAMESPACE": "weatherfleet",
            "WEATHERFLEET_METRICS_PORT": str(self.port),
            **{f"WEATHERFLEET_{k.upper()}": str(v) for k, v in settings.items()},
        }
        command = [sys.executable, "-m", "weatherfleet", "operator", "--standalone", "-A", "--liveness", ""]
        command += ["--log-format", "plain"]
        self.log = log.open("ab")
        self.process = subprocess.Popen(command, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        STARTED.append(self)
        wait_for(self._metrics_up, 60, "the operator's metrics endpoint")

    def _metrics_up(self) -> bool:
        if self.process.poll() is not None:
            raise SystemExit(f"the operator exited with {self.process.returncode}; see {self.log.name}")
        try:
            self.metrics()
            return True
        except OSError:
            return False

    def metrics(self) -> dict[str, float]:
        """Samples of the operator's Prometheus endpoint, by name with labels."""
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10).read().decode()
        samples = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    def reconciles(self, kind: str = "WeatherSensor") -> float:
        return self.metrics().get(f'weatherfleet_reconciles_total{{kind="{kind}",outcome="ok"}}', 0.0)

    def reconcile_seconds(self, kind: str = "WeatherSensor") -> tuple[float, float]:
        m = self.metrics()
        return (
            m.get(f'weatherfleet_reconcile_seconds_sum{{kind="{kind}"}}', 0.0),
            m.get(f'weatherfleet_reconcile_seconds_count{{kind="{kind}"}}', 0.0),
        )

    def cpu(self) -> float:
        return cpu_seconds(self.process.pid)

    def peak_rss(self) -> int:
        return memory_bytes(self.process.pid, "VmHWM")

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


class Bench:
    def __init__(self, root: Path, count: int) -> None:
        self.root, self.count = root, count
        self.server = ApiServer().start()
        self.kubeconfig = self.server.write_kubeconfig(root / "kubeconfig")
        install_crds(self.server, ("weatherfleet", NS))
        self.names = [f"s{i:05d}" for i in range(count)]
        self.store = SQLiteStore(root / "readings.db", synchronous="OFF")
        self.stop_cert_manager = threading.Event()

    # -- reading the API server's store in its own thread (cheaper than listing over HTTP) --
    def objects(self, group: str, plural: str) -> list[dict]:
        return self.server.call(
            lambda store: [o for (ns, _), o in store.objects.get((group, plural), {}).items() if ns == NS]
        )

    def operator_writes(self) -> list:
        return self.server.call(lambda store: [w for w in store.writes if w.actor == OPERATOR])

    def write_count(self) -> int:
        return self.server.call(lambda store: sum(1 for w in store.writes if w.actor == OPERATOR))

    def create(self, kind: str, plural: str, name: str, spec: dict, labels: dict | None = None) -> None:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": kind,
            "metadata": {"name": name, "namespace": NS, "labels": labels or {}},
            "spec": spec,
        }

        def put(store):
            store.create(store.type_for(GROUP, VERSION, plural), NS, body)

        self.server.call(put)

    def cert_manager(self) -> None:
        """Marks every new Certificate Ready, twice a second, as cert-manager does once it issued it."""

        def mark(store) -> int:
            rt = store.type_for("cert-manager.io", "v1", "certificates")
            pending = [o for (ns, _), o in store.objects[rt.key].items() if ns == NS and not o.get("status")]
            status = {
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "Ready",
                        "message": "Certificate is up to date and has not expired",
                        "lastTransitionTime": "2026-01-01T00:00:00Z",
                    }
                ]
            }
            for cert in pending:
                store.patch(rt, NS, cert["metadata"]["name"], MERGE, {"status": status}, "status")
            return len(pending)

        while not self.stop_cert_manager.wait(0.5):
            self.server.call(mark)

    def all_ready(self) -> bool:
        ready = sum(
            1
            for o in self.objects(GROUP, "weathersensors")
            if any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in (o.get("status") or {}).get("conditions", [])
            )
        )
        if ready < self.count:
            return False
        fleet = next(iter(self.objects(GROUP, "sensorfleets")), {})
        if ((fleet.get("status") or {}).get("sensors") or {}).get("total") != self.count:
            return False
        secrets = {o["metadata"]["name"]: o for o in self.objects("", "secrets")}
        if len(self.objects("cert-manager.io", "certificates")) < self.count:
            return False
        if sum(1 for n in secrets if n.endswith("-mqtt-credentials")) < self.count:
            return False
        # The fleet's children are current too: every device can log in to NanoMQ.
        import base64

        pwd = secrets.get("nanomq-passwords")
        text = base64.b64decode(pwd["data"]["nanomq_pwd.conf"]).decode() if pwd else ""
        return all(f'"{n}":' in text for n in self.names)

    def quiet(self, op: Operator, seconds: float, timeout: float) -> None:
        """Wait until the operator made no write and finished no reconcile for `seconds`."""
        deadline = time.monotonic() + timeout
        last = (self.write_count(), op.reconciles(), op.reconciles("SensorFleet"))
        since = time.monotonic()
        while time.monotonic() - since < seconds:
            if time.monotonic() > deadline:
                raise SystemExit("the operator did not settle")
            time.sleep(0.5)
            now = (self.write_count(), op.reconciles(), op.reconciles("SensorFleet"))
            if now != last:
                last, since = now, time.monotonic()


def probe(bench: Bench, seed: int, pause: float) -> float:
    """Seconds from changing one sensor's spec to its status showing the new generation."""
    name = random.Random(seed).choice(bench.names)

    def change(store):
        rt = store.type_for(GROUP, VERSION, "weathersensors")
        obj, _changed = store.patch(rt, NS, name, MERGE, {"spec": {"location": f"moved-{seed}"}}, None)
        return obj["metadata"]["generation"]

    started = time.perf_counter()
    generation = bench.server.call(change)

    def observed() -> bool:
        obj = bench.server.call(lambda store: store.objects[(GROUP, "weathersensors")].get((NS, name)))
        return ((obj or {}).get("status") or {}).get("observedGeneration") == generation

    wait_for(observed, 300, f"{name} to observe generation {generation}", interval=0.005)
    took = time.perf_counter() - started
    time.sleep(pause)
    return took


def breakdown(writes: list) -> str:
    kinds = Counter(f"{w.verb} {w.resource}{'/' + w.subresource if w.subresource else ''}" for w in writes)
    return ", ".join(f"{k}: {v}" for k, v in sorted(kinds.items()))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="100 sensors and a 30 s hour (smoke run)")
    parser.add_argument("--sensors", type=int, default=None, help="fleet size (default 500)")
    parser.add_argument("--hour-seconds", type=float, default=None, help="wall seconds per simulated hour")
    args = parser.parse_args()
    count = args.sensors or (100 if args.quick else 500)
    hour = args.hour_seconds or (30.0 if args.quick else 300.0)
    k = 3600.0 / hour  # compression of the steady-state phase

    with tempfile.TemporaryDirectory(prefix="bench-operator-") as tmp:
        root = Path(tmp)
        bench = Bench(root, count)
        log = root / "operator.log"
        try:
            return run(bench, log, count, hour, k)
        finally:
            for op in STARTED:
                op.stop()
            bench.stop_cert_manager.set()
            bench.server.stop()


def run(bench: Bench, log: Path, count: int, hour: float, k: float) -> int:
    # -- 1. create --------------------------------------------------------------------------------------
    op = Operator(bench.kubeconfig, log, {})
    marker = threading.Thread(target=bench.cert_manager, daemon=True)
    marker.start()
    cpu_op0, cpu_self0, started = op.cpu(), cpu_seconds(), time.perf_counter()
    fleet_spec = {
        "selector": {"matchLabels": {"fleet": FLEET}},
        "alerting": {"noDataAfter": format_duration(max(1, NO_DATA_AFTER / k))},
    }
    bench.create("SensorFleet", "sensorfleets", FLEET, fleet_spec)
    sensor = {"location": "bench", "sensors": [{"type": "bme280"}]}
    with ThreadPoolExecutor(4) as pool:
        list(
            pool.map(
                lambda n: bench.create(
                    "WeatherSensor", "weathersensors", n, {"deviceId": n, **sensor}, {"fleet": FLEET}
                ),
                bench.names,
            )
        )
    sent = time.perf_counter() - started
    wait_for(bench.all_ready, 1800, "every sensor Ready and every child present", interval=2.0)
    ready = time.perf_counter() - started
    cpu_op, cpu_self = op.cpu() - cpu_op0, cpu_seconds() - cpu_self0
    bench.quiet(op, 3.0, 600)
    create_writes = bench.operator_writes()
    own = {f"weathersensors/{n}" for n in bench.names} | {f"certificates/{n}" for n in bench.names}
    own |= {f"secrets/{n}-mqtt-credentials" for n in bench.names}
    sensor_writes = [w for w in create_writes if f"{w.resource}/{w.name}" in own]
    fleet_writes = [w for w in create_writes if f"{w.resource}/{w.name}" not in own]
    bench.stop_cert_manager.set()
    op.stop()
    print(
        f"fleet of {count} sensors: creates sent in {sent:.1f}s; every sensor Ready and every child present in "
        f"{ready:.1f}s ({ready / count * 1000:.1f} ms/sensor)"
    )
    print(
        f"writes per sensor on create: {len(sensor_writes) / count:.2f} (goal <= 3: "
        f"{breakdown(sensor_writes)}); and {len(fleet_writes)} for the fleet whatever its size "
        f"({breakdown(fleet_writes)})"
    )
    bottleneck = "the API stand-in (this process)" if cpu_self > cpu_op else "the operator"
    print(
        f"CPU while creating: operator {cpu_op:.1f}s, API stand-in + cert-manager stand-in {cpu_self:.1f}s "
        f"over {ready:.1f}s wall: the busier side is {bottleneck}"
    )

    # -- 2. no-op resync: a restart reconciles everything, then the resync timer does it again ----------
    scaled = {
        "status_refresh_seconds": REFRESH_SECONDS / k,
        "resync_seconds": RESYNC_SECONDS / k,
        "readings_seconds": READINGS_SECONDS / k,
        "readings_sqlite": str(bench.root / "readings.db"),
    }
    before = bench.write_count()
    op = Operator(bench.kubeconfig, log, scaled)
    wait_for(
        lambda: op.reconciles() >= 2 * count, 600, "a restart and one resync of every sensor", interval=0.5
    )
    bench.quiet(op, 2.0, 600)
    resync_writes = bench.operator_writes()[before:]
    print(
        f"writes on a no-op resync: {len(resync_writes)} (goal 0; a restart and a resync timer of {count} "
        f"sensors{'; ' + breakdown(resync_writes) if resync_writes else ''})"
    )

    # -- 3. steady state ------------------------------------------------------------------------------
    stop = threading.Event()
    period = REPORT_SECONDS / k

    def devices() -> None:
        """Every device's reading every `period` seconds, as ingest stores them."""
        retention = sqlite3.connect(bench.store.path, isolation_level=None, timeout=30)
        n = 0
        while not stop.is_set():
            tick = time.monotonic()
            now_ns = time.time_ns()
            points = [
                Point(
                    WEATHER, {"device": d, "location": "bench"}, {"temperature": 20.0 + (n % 7)}, now_ns + i
                )
                for i, d in enumerate(bench.names)
            ]
            bench.store.write(points)
            # a retention window, as the InfluxDB query of a cluster has one: the store keeps two reports
            retention.execute(f"DELETE FROM {WEATHER} WHERE time < ?", (now_ns - int(2.5 * period * 1e9),))
            n += 1
            stop.wait(max(0.0, period - (time.monotonic() - tick)))

    feeder = threading.Thread(target=devices, daemon=True)
    feeder.start()
    # Warm-up: the first sighting of every device is a real change (Online), written at once; two refresh
    # periods later every sensor is in its steady rhythm.
    time.sleep(2 * REFRESH_SECONDS / k + period)
    w0, r0, c0, t0 = bench.write_count(), op.reconciles(), op.cpu(), time.perf_counter()
    time.sleep(hour)
    w1, r1, c1, t1 = bench.write_count(), op.reconciles(), op.cpu(), time.perf_counter()
    hours = (t1 - t0) / hour
    window = bench.operator_writes()[w0:w1]
    per_sensor_hour = (w1 - w0) / count / hours
    print(
        f"steady state: devices report every {REPORT_SECONDS}s; one simulated hour = {hour:.0f}s wall "
        f"(every period / {k:.0f}); {w1 - w0} writes in {hours:.2f} h by {count} sensors"
        f"{': ' + breakdown(window) if window else ''}"
    )
    print(f"steady-state writes per sensor per hour: {per_sensor_hour:.2f}")
    print(
        f"  budget: 3600 / WEATHERFLEET_STATUS_REFRESH_SECONDS = {3600 / REFRESH_SECONDS:.0f} per sensor and hour "
        f"(at most {1 + 3600 // REFRESH_SECONDS:.0f} in any one hour), {count / REFRESH_SECONDS:.1f} writes/s "
        f"for this fleet (docs/operator.md)"
    )
    reconciles = r1 - r0
    print(
        f"operator CPU per WeatherSensor reconcile in steady state: {(c1 - c0) / max(reconciles, 1) * 1000:.2f} ms "
        f"({reconciles:.0f} reconciles, {(c1 - c0) / (t1 - t0) * 100:.0f} % of a core)"
    )

    # -- 4. latency of one changed sensor: in the fleet at rest, and while every sensor is refreshed ----
    busy = [probe(bench, i, hour / 20) for i in range(3)]
    stop.set()
    feeder.join(30)
    bench.quiet(op, 2.0, 600)
    total0, n0 = op.reconcile_seconds()
    idle = [probe(bench, 10 + i, 0.2) for i in range(5)]
    total, n = op.reconcile_seconds()
    print(
        f"reconcile latency of one changed sensor in a fleet of {count}: median {statistics.median(idle) * 1000:.0f} ms, "
        f"max {max(idle) * 1000:.0f} ms (spec change to status through the API; the reconcile itself "
        f"{(total - total0) / max(n - n0, 1) * 1000:.1f} ms); while the compressed steady state keeps the "
        f"operator {(c1 - c0) / (t1 - t0) * 100:.0f} % busy, behind a queue of refreshes: median "
        f"{statistics.median(busy) * 1000:.0f} ms"
    )
    peak = op.peak_rss()
    op.stop()
    print(f"peak RSS of the operator: {peak / MIB:.0f} MiB ({peak / count / 1024:.1f} KiB per sensor)")
    ok = len(sensor_writes) / count <= 3 and not resync_writes and per_sensor_hour <= 12
    print(
        f"goals (<= 3 writes/sensor on create, 0 on a no-op resync, <= 12 per sensor and hour): "
        f"{'met' if ok else 'NOT met'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
