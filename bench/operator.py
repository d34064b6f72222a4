"""Operator benchmark against the Kubernetes API double (tests/operator/kubedouble).

Measures, for one fleet of N WeatherSensors created at once:
  - time from the first create to every child present and every sensor status Ready (a stand-in for
    cert-manager marks each Certificate Ready as soon as it appears, as cert-manager would);
  - API writes per sensor made by the operator while creating (goal <= 4), counted in the double;
  - API writes of a no-op resync of everything (goal 0);
  - peak RSS growth of the process (operator + double + client share it).
Ratios are against a baseline in the same run: a small fleet (time per sensor), and the double's raw
write rate (N ConfigMaps created by a client, no operator), so figures compare across machines.

    .venv/bin/python bench/operator.py            # 500 sensors (baseline fleet: 50)
    .venv/bin/python bench/operator.py --quick    # 100 sensors (baseline fleet: 20)
"""

from __future__ import annotations

import argparse
import base64
import os
import resource
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "operator"))
os.environ["KUBECONFIG"] = str(Path(tempfile.mkdtemp(prefix="wf-bench-")) / "config")
os.environ.update(
    {
        "WEATHERFLEET_NAMESPACE": "weatherfleet",
        "WEATHERFLEET_RESYNC_SECONDS": "3600",  # resyncs are triggered explicitly below
        "WEATHERFLEET_ROLLOUT_SECONDS": "5",
        "WEATHERFLEET_METRICS_PORT": "0",
        "WEATHERFLEET_LEADER_SETTLE_SECONDS": "1",
    }
)

from helpers import Cluster, install_crds, wait_for  # noqa: E402
from kubedouble import ApiServerDouble  # noqa: E402

OPERATOR = "weatherfleet-operator"


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def operator_writes(double: ApiServerDouble) -> list:
    return double.call(lambda store: [w for w in store.writes if w.actor == OPERATOR])


def run_fleet(double: ApiServerDouble, cluster: Cluster, ns: str, count: int) -> dict:
    from kopf.testing import KopfRunner

    from weatherfleet.controller import handlers, metrics

    cluster.namespace(ns)
    cluster.broker_deployment(ns)
    runner = KopfRunner(
        ["run", "--standalone", "--all-namespaces", "-m", "weatherfleet.controller.handlers"], timeout=600
    )
    runner.__enter__()
    try:
        wait_for(
            lambda: handlers.RUNTIME is not None and handlers.RUNTIME.active.is_set(), 60, "operator started"
        )
        names = [f"s{i:04d}" for i in range(count)]
        stop = threading.Event()

        def cert_manager() -> None:
            while not stop.wait(0.5):
                try:
                    cluster.mark_certificates_ready(ns)
                except Exception:
                    continue

        marker = threading.Thread(target=cert_manager, daemon=True)
        marker.start()
        writes_before = len(operator_writes(double))
        started = time.perf_counter()
        cluster.create("SensorFleet", ns, "bench", {"selector": {"matchLabels": {"fleet": "bench"}}})
        sensor = {"location": "bench", "sensors": [{"type": "bme280"}]}
        with ThreadPoolExecutor(8) as pool:
            list(
                pool.map(
                    lambda n: cluster.create(
                        "WeatherSensor", ns, n, {"deviceId": n, **sensor}, {"fleet": "bench"}
                    ),
                    names,
                )
            )
        created = time.perf_counter() - started

        def done() -> bool:
            items = cluster.crs.list_namespaced_custom_object(
                "weatherfleet.io", "v1alpha1", ns, "weathersensors"
            )["items"]
            ready = sum(
                1
                for o in items
                if any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in (o.get("status") or {}).get("conditions", [])
                )
            )
            if ready < count:
                return False
            fleet = cluster.get("SensorFleet", ns, "bench")
            if ((fleet.get("status") or {}).get("sensors") or {}).get("total") != count:
                return False
            secrets = cluster.core.list_namespaced_secret(ns, label_selector="weatherfleet.io/device").items
            if len(cluster.certificates(ns)) < count + 1 or len(secrets) < count:
                return False
            # The fleet's children are current too: every device can log in to NanoMQ.
            pwd = cluster.secret(ns, "nanomq-passwords")
            text = base64.b64decode(pwd.data["nanomq_pwd.conf"]).decode() if pwd else ""
            return all(f'"{n}":' in text for n in names)

        deadline = time.monotonic() + 600
        while not done():  # polled once a second: the poll itself must not slow the system down
            assert time.monotonic() < deadline, "timed out waiting for every sensor Ready"
            time.sleep(2.0)
        elapsed = time.perf_counter() - started
        stop.set()
        marker.join(5)
        # Let in-flight work finish, then count what creating the fleet cost.
        rt = handlers.RUNTIME
        wait_for(
            lambda: not rt.queue._queued and not rt.queue._processing and not rt.queue._due,
            120,
            "the queue drained",
        )
        create_writes = operator_writes(double)[writes_before:]

        # A no-op resync: every sensor, the fleet, everything requeued, as the resync timer does.
        before = len(operator_writes(double))
        sensors_done = metrics.RECONCILES.labels(kind="WeatherSensor", outcome="ok")._value.get()
        resync_started = time.perf_counter()
        for name in names:
            rt.enqueue_threadsafe(("WeatherSensor", ns, name))
        rt.enqueue_threadsafe(("SensorFleet", ns, "bench"))
        wait_for(
            lambda: (
                metrics.RECONCILES.labels(kind="WeatherSensor", outcome="ok")._value.get()
                >= sensors_done + count
            ),
            300,
            "the resync",
        )
        wait_for(
            lambda: not rt.queue._queued and not rt.queue._processing and not rt.queue._due,
            120,
            "the queue drained",
        )
        resync_seconds = time.perf_counter() - resync_started
        resync_writes = operator_writes(double)[before:]
    finally:
        runner.__exit__(None, None, None)
    seconds = {
        kind: (
            metrics.RECONCILE_SECONDS.labels(kind=kind)._sum.get(),
            metrics.RECONCILES.labels(kind=kind, outcome="ok")._value.get(),
        )
        for kind in ("WeatherSensor", "SensorFleet")
    }
    kinds = Counter(
        f"{w.verb} {w.resource}{'/' + w.subresource if w.subresource else ''}" for w in create_writes
    )
    return {
        "count": count,
        "create_seconds": created,
        "ready_seconds": elapsed,
        "writes": len(create_writes),
        "writes_per_sensor": len(create_writes) / count,
        "breakdown": kinds,
        "resync_writes": len(resync_writes),
        "resync_detail": [
            f"{w.verb} {w.resource}/{w.name}{'/' + w.subresource if w.subresource else ''}"
            for w in resync_writes
        ],
        "resync_seconds": resync_seconds,
        "reconcile_seconds": seconds,
    }


def raw_write_rate(cluster: Cluster, ns: str, count: int) -> float:
    """Writes per second the double takes from a plain client (8 threads), no operator involved."""
    cluster.namespace(ns)
    started = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda i: cluster.core.create_namespaced_config_map(ns, {"metadata": {"name": f"cm{i}"}}),
                range(count),
            )
        )
    return count / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="100 sensors instead of 500 (under a minute)")
    parser.add_argument("--sensors", type=int, default=None)
    args = parser.parse_args()
    count = args.sensors or (100 if args.quick else 500)
    small = max(10, count // 10 if not args.quick else 20)

    double = ApiServerDouble().start()
    double.write_kubeconfig(Path(os.environ["KUBECONFIG"]))
    install_crds(double)
    cluster = Cluster()
    rss0 = rss_mib()
    rate = raw_write_rate(cluster, "bench-raw", count)
    base = run_fleet(double, cluster, "bench-small", small)
    big = run_fleet(double, cluster, "bench-big", count)
    rss1 = rss_mib()
    double.stop()

    print(f"API double raw write rate (baseline): {rate:,.0f} writes/s")
    for r in (base, big):
        print(
            f"fleet of {r['count']:>4}: creates sent in {r['create_seconds']:.2f}s, all children + Ready in "
            f"{r['ready_seconds']:.2f}s ({r['ready_seconds'] / r['count'] * 1000:.1f} ms/sensor); "
            f"operator writes {r['writes']} = {r['writes_per_sensor']:.2f}/sensor; "
            f"no-op resync: {r['resync_writes']} writes in {r['resync_seconds']:.2f}s"
        )
    for r in (base, big):
        if r["resync_writes"]:
            print(f"  no-op resync writes of the {r['count']} fleet: {r['resync_detail'][:10]}")
    print(
        f"  writes while creating {count} sensors, by kind: "
        + ", ".join(f"{k}: {v}" for k, v in sorted(big["breakdown"].items()))
    )
    for kind, (total, n) in big["reconcile_seconds"].items():
        print(f"  {kind} reconciles so far in this process: {n:.0f}, {total / max(n, 1) * 1000:.1f} ms each")
    per_sensor_small = base["ready_seconds"] / base["count"]
    per_sensor_big = big["ready_seconds"] / big["count"]
    print(
        f"time per sensor, {count} vs {small} sensors: x{per_sensor_big / per_sensor_small:.2f} (1.0 = linear)"
    )
    writes_time = big["writes"] / rate
    print(
        f"time to Ready vs the double merely absorbing those writes: x{big['ready_seconds'] / writes_time:.1f}"
    )
    print(f"peak RSS growth: {rss1 - rss0:.0f} MiB")
    ok = big["writes_per_sensor"] <= 4 and big["resync_writes"] == 0
    print(f"goals (<= 4 writes/sensor on create, 0 on no-op resync): {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
