"""How `weatherfleet render` scales: fleets of 1,000 and 10,000 generated sensors.

Prints, per size, the seconds for each stage (parse the YAML files, validate into models, reconcile,
write YAML) and in total, the peak RSS of a child process that renders only that size, and the
10k/1k time ratio (linear would be 10; goal <= 11, and 10,000 sensors in under 1 s of reconcile+write).

    .venv/bin/python bench/render_scale.py            # 1,000 and 10,000 sensors
    .venv/bin/python bench/render_scale.py --quick    # 100 and 1,000
"""

from __future__ import annotations

import argparse
import gc
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml

from weatherfleet.crfiles import load_resources
from weatherfleet.reconcilers.hydrate import hydrate
from weatherfleet.reconcilers.yamltext import dump_all

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SENSOR_SETS = (
    [{"type": "bme280"}],
    [{"type": "bme280"}, {"type": "scd30"}],
    [{"type": "bme280"}, {"type": "sds011", "uart": {"id": 2, "tx": 17, "rx": 16}}],
)


def write_fleet(folder: Path, sensors: int) -> None:
    """One fleet, two releases and `sensors` WeatherSensors over 50 locations, like gitops/examples."""
    fleet = {
        "apiVersion": "weatherfleet.io/v1alpha1",
        "kind": "SensorFleet",
        "metadata": {"name": "city", "namespace": "weatherfleet"},
        "spec": {
            "selector": {"matchLabels": {"weatherfleet.io/fleet": "city"}},
            "alerting": {
                "noDataAfter": "15m",
                "telegram": {
                    "botTokenSecretRef": {"name": "telegram-bot", "key": "token"},
                    "chatId": "-100123",
                },
            },
            "rollout": {
                "release": "fw-1-1-0",
                "waves": [{"percent": 5}, {"percent": 25}, {"percent": 100}],
                "failureThreshold": {"percent": 5},
            },
        },
    }
    releases = [
        {
            "apiVersion": "weatherfleet.io/v1alpha1",
            "kind": "FirmwareRelease",
            "metadata": {"name": f"fw-1-{minor}-0", "namespace": "weatherfleet"},
            "spec": {
                "version": f"1.{minor}.0",
                "artifact": {
                    "repository": "registry.example:5000/firmware/{deviceId}",
                    "tag": f"1.{minor}.0",
                },
            },
        }
        for minor in (0, 1)
    ]
    docs = [
        {
            "apiVersion": "weatherfleet.io/v1alpha1",
            "kind": "WeatherSensor",
            "metadata": {
                "name": f"s-{i:05d}",
                "namespace": "weatherfleet",
                "labels": {"weatherfleet.io/fleet": "city"},
            },
            "spec": {
                "deviceId": f"dev-{i:05d}",
                "location": f"district-{i % 50:02d}",
                "sensors": SENSOR_SETS[i % 3],
                "firmware": {"pinnedVersion": "1.0.0"} if i % 97 == 0 else {},
            },
        }
        for i in range(sensors)
    ]
    (folder / "fleet.yaml").write_text(yaml.safe_dump_all([fleet, *releases]))
    # Block-style YAML as people write it (through the project's fast writer: PyYAML's would dominate
    # the set-up time).
    (folder / "sensors.yaml").write_text(dump_all(docs))


def measure(sensors: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_fleet(folder, sensors)
        gc.collect()
        gc.disable()  # as `weatherfleet render` does (commands/render.py: render)
        try:
            t0 = time.perf_counter()
            resources, _ = load_resources(folder)
            t1 = time.perf_counter()
            children = hydrate(resources, NOW)
            t2 = time.perf_counter()
            text = dump_all(children)
            t3 = time.perf_counter()
        finally:
            gc.enable()
    return {
        "sensors": sensors,
        "load": t1 - t0,
        "reconcile": t2 - t1,
        "write": t3 - t2,
        "total": t3 - t0,
        "objects": len(children),
        "megabytes": len(text) / 1e6,
    }


def peak_rss_mb(sensors: int) -> float:
    """Peak RSS of a fresh process rendering one size (ru_maxrss of this process would mix both runs)."""
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(sensors)], check=True, capture_output=True, text=True
    )
    return float(out.stdout.strip())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 and 1,000 sensors")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs per size (default 3)")
    args = parser.parse_args()
    if args.child:
        measure(args.child)
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        return 0
    small, large = (100, 1000) if args.quick else (1000, 10000)
    rows = []
    for n in (small, large):
        runs = [measure(n) for _ in range(args.repeat)]
        best = min(runs, key=lambda r: r["total"])
        best["rss"] = peak_rss_mb(n)
        rows.append(best)
    print(f"{'sensors':>8} {'objects':>8} {'MB out':>7} {'load s':>7} {'reconcile s':>11} {'write s':>8} "
          f"{'total s':>8} {'peak RSS MB':>11}")  # fmt: skip
    for r in rows:
        print(f"{r['sensors']:>8} {r['objects']:>8} {r['megabytes']:>7.2f} {r['load']:>7.3f} {r['reconcile']:>11.3f} "
              f"{r['write']:>8.3f} {r['total']:>8.3f} {r['rss']:>11.1f}")  # fmt: skip
    ratio = rows[1]["total"] / rows[0]["total"]
    core = rows[1]["reconcile"] + rows[1]["write"]
    print(f"ratio {large}/{small} (total): {ratio:.2f}  (linear = 10, goal <= 11)")
    print(f"{large} sensors: reconcile + write {core:.3f} s, total with parsing and validation {rows[1]['total']:.3f} s "
          f"(goal < 1 s)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
