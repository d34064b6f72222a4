"""Rollouts at fleet scale, on the pure fleet simulation (weatherfleet.rollout.simulation: the operator's
rollout code, OtaFlux's plan decisions and announcements, no I/O).

Prints, for a fleet of 10,000 devices with hourly checks (+10 min jitter), 5 % slow, 2 % offline, 3 %
flaky devices and 30 joiners an hour, waves 5/25/100 % baked 30 min each, failure threshold 10 %:

- a bad release (it fails its health check on 30 % and on 12 % of devices): exposure (devices that
  installed it), the first wave's size, and the time from the breach of the failure threshold to the
  halt, with announcements on and off;
- a good release: the time from a wave opening to every steadily online device of that wave running it,
  with announcements on and off, and the time to complete.

Then the rollout plan ConfigMap's size at 10,000 and 100,000 devices and its ratio to the 1 MiB limit
(`plan_sizes`).

    .venv/bin/python bench/rollout.py            # 10,000 devices
    .venv/bin/python bench/rollout.py --quick    # 2,000 devices
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import statistics
import time

from weatherfleet.models.fleet import RolloutSpec
from weatherfleet.reconcilers.plan import plan_key, rollout_plan_configmap
from weatherfleet.rollout import open_share
from weatherfleet.rollout.plan import FleetPlan
from weatherfleet.rollout.simulation import FleetModel, simulate

HOUR = 3600.0


def minutes(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds / 60:.1f} min"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="2,000 devices instead of 10,000")
    parser.add_argument("--devices", type=int, default=None)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    devices = args.devices or (2_000 if args.quick else 10_000)
    spec = RolloutSpec(
        release="firmware-1-1-0",
        waves=[
            {"percent": 5, "bakeTime": "30m"},
            {"percent": 25, "bakeTime": "30m"},
            {"percent": 100, "bakeTime": "30m"},
        ],
        failureThreshold={"percent": 10},
        updateTimeout="2h",
        announceWindow="1m",
    )
    print(
        f"fleet: {devices} devices, checks every 60 min + up to 10 min jitter; waves 5/25/100 %, 30 min bake"
    )
    started = time.perf_counter()

    print("\nbad release (fails its health check and rolls back on some devices):")
    print(
        f"  {'fails on':>8}  {'announced':>9}  {'exposed':>7}  {'wave 1':>6}  {'breach -> halt':>14}  {'halted after':>12}"
    )
    for rate in (0.3, 0.12):
        for announce in (True, False):
            result = simulate(
                spec,
                FleetModel(devices=devices, failure_rate=rate, announce=announce, seed=args.seed),
                12 * HOUR,
            )
            wave_1 = len(result.waves[0].devices) if result.waves else 0
            lag = (
                result.halted_at - result.breach_at
                if result.halted_at is not None and result.breach_at is not None
                else None
            )
            print(
                f"  {rate:>8.0%}  {'on' if announce else 'off':>9}  {len(result.exposed):>7}  {wave_1:>6}  "
                f"{'-' if lag is None else f'{lag:.0f} s':>14}  {minutes(result.halted_at):>12}"
            )
    print(
        "  exposure of a bad release (devices that installed it), announced: "
        f"{len(simulate(spec, FleetModel(devices=devices, failure_rate=0.3, seed=args.seed), 12 * HOUR).exposed)}"
    )

    print("\ngood release:")
    figures = {}
    for announce in (True, False):
        result = simulate(spec, FleetModel(devices=devices, announce=announce, seed=args.seed), 12 * HOUR)
        times = result.wave_times()
        figures[announce] = statistics.median(times) if times else None
        waves = ", ".join(f"wave {w.index + 1}: {minutes(w.open_to_updated)}" for w in result.waves)
        print(
            f"  announcements {'on ' if announce else 'off'}: wave open -> its online devices updated: {waves}; "
            f"{result.status.phase.lower()} after {minutes(result.completed_at)} ({result.notifications} notifications)"
        )
    print(f"wave open -> updated, median, announcements on: {minutes(figures[True])}")
    print(f"wave open -> updated, median, announcements off: {minutes(figures[False])}")
    print(f"(simulated in {time.perf_counter() - started:.1f} s)")
    plan_sizes()


def plan_sizes() -> None:
    """The rollout plan ConfigMap as the operator writes it (reconcilers.plan), for one fleet mid-rollout,
    at 10,000 and 100,000 devices: each fleet's JSON plus its member list, exact, front-coded and gzipped
    in binaryData (rollout.members). Two id shapes: sequential names, and random MAC-derived ids (48 random
    bits each, the hard case: the blob cannot beat the ids' own entropy).

    Printed: the whole object as the API stores it (etcd keeps binaryData as raw bytes) and its ratio to
    the 1 MiB limit, the same object as JSON (`kubectl get -o json`: binaryData as base64), and the bytes
    per device; then the fleet size at which one fleet's plan would reach the limit. The ConfigMap holds
    every fleet's plan, so these are also the sizes of 10,000 or 100,000 devices spread over fleets."""
    limit = 1 << 20
    key = plan_key("weatherfleet", "garden")
    rid = "weatherfleet/garden/firmware-1-1-0@1.1.0"
    per_device = {}
    for shape, make in (
        ("sequential ids (sensor-000123)", lambda i, rng: f"sensor-{i:06d}"),
        ("random MAC ids (esp32-<12 hex>)", lambda i, rng: f"esp32-{rng.getrandbits(48):012x}"),
    ):
        for count in (10_000, 100_000):
            rng = random.Random(count)
            members = sorted({make(i, rng) for i in range(count)})
            plan = FleetPlan(
                rolloutId=rid,
                stable="1.0.0",
                candidate="1.1.0",
                percent=25.0,
                threshold=open_share(rid, members, 25),
                devices=members,
            )
            configmap = rollout_plan_configmap({key: plan}, "weatherfleet")
            as_json = len(json.dumps(configmap, separators=(",", ":")).encode())
            encoded = configmap["binaryData"].values()
            stored = as_json - sum(len(v) for v in encoded) + sum(len(base64.b64decode(v)) for v in encoded)
            per_device[shape] = stored / count
            print(
                f"rollout plan ConfigMap, {count} devices, {shape}: {stored / 1024:.0f} KiB stored, "
                f"{stored / limit:.3f} of the 1 MiB limit ({as_json / 1024:.0f} KiB as JSON, "
                f"{stored / count:.2f} bytes per device)"
            )
    worst = per_device["random MAC ids (esp32-<12 hex>)"]
    print(
        f"the plan ConfigMap reaches 1 MiB near {limit / worst:,.0f} random MAC ids "
        "(the JSON member list it replaces: near 50,000 ids of any shape)"
    )


if __name__ == "__main__":
    main()
