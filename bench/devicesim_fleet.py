"""How many emulated devices one process runs: the REAL device firmware (firmware/device, built by the
real pipeline) on N emulated boards in one process and one asyncio loop, publishing measurements every
5 s over mutual TLS to a real Mosquitto; a paho subscriber counts what arrives.

Figures (each against a baseline run in this same script with BASELINE devices):
- delivered/expected measurement rate (goal: 1.00 at N = 500);
- event-loop lag p50/p99 (how late a 100 ms timer fires) versus the baseline;
- resident memory per device.

    .venv/bin/python bench/devicesim_fleet.py            # 500 devices
    .venv/bin/python bench/devicesim_fleet.py --quick    # 50 devices, shorter
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

from devicesim import Device
from devicesim.provision import build_bundle, device_config, provision
from weatherfleet import identities
from weatherfleet.mqtt import MqttSettings, make_client
from weatherfleet.pki import LocalCA
from weatherfleet.reconcilers.broker import mosquitto_acl
from weatherfleet.services.mosquitto import MosquittoBroker
from weatherfleet.services.process import free_port

FEATURES = ("bme280", "scd30", "sds011", "tls", "mtls", "influx")
INTERVAL = 5
BASELINE = 5


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Counter:
    def __init__(self, broker: MosquittoBroker, ca: LocalCA) -> None:
        issued = ca.issue(identities.INGEST)
        settings = MqttSettings(
            host=broker.host, port=broker.port, ca=issued.ca, cert=issued.cert, key=issued.key
        )
        self.client = make_client(settings, f"bench-{os.getpid()}")
        self.lock = threading.Lock()
        self.times: list[float] = []
        ready = threading.Event()
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *_a: c.subscribe("sensors/+/measurements", qos=1)
        self.client.on_subscribe = lambda *_a: ready.set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert ready.wait(15), "subscriber could not subscribe"

    def _on_message(self, _client, _userdata, message) -> None:
        with self.lock:
            self.times.append(time.monotonic())

    def count_between(self, start: float, end: float) -> int:
        with self.lock:
            return sum(start <= t < end for t in self.times)

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


async def loop_lag(samples: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        before = time.monotonic()
        await asyncio.sleep(0.1)
        samples.append(time.monotonic() - before - 0.1)


async def run_fleet(
    count: int,
    seconds: float,
    ca: LocalCA,
    broker: MosquittoBroker,
    counter: Counter,
    bundle: dict[str, bytes],
    workdir: Path,
    first_id: int,
) -> dict[str, float]:
    rss_before = rss_bytes()
    devices = []
    for i in range(first_id, first_id + count):
        device_id = f"bench-{i:04d}"
        issued = ca.issue(device_id)
        config = device_config(
            device_id,
            broker=(broker.host, broker.port),
            version="1.0.0",
            features=FEATURES,
            interval=INTERVAL,
            watchdogSeconds=0,
        )
        device = Device(device_id, workdir / device_id)
        provision(device, config, bundle, ca=issued.ca, cert=issued.cert, key=issued.key)
        devices.append(device)
    started = time.monotonic()
    for device in devices:
        device.start()
    # steady state: every device has published once
    topics_seen = 0
    deadline = started + 120
    while time.monotonic() < deadline:
        topics_seen = counter.count_between(started, time.monotonic())
        if topics_seen >= count:
            break
        await asyncio.sleep(0.5)
    warm = time.monotonic() - started
    lag: list[float] = []
    stop = asyncio.Event()
    probe = asyncio.create_task(loop_lag(lag, stop))
    window_start = time.monotonic()
    await asyncio.sleep(seconds)
    window_end = time.monotonic()
    stop.set()
    await probe
    delivered = counter.count_between(window_start, window_end)
    rss_after = rss_bytes()
    await asyncio.gather(*(d.stop() for d in devices))
    expected = count * (window_end - window_start) / INTERVAL
    lag.sort()
    return {
        "devices": count,
        "warmup_s": warm,
        "rate_ratio": delivered / expected,
        "lag_p50_ms": 1000 * statistics.median(lag),
        "lag_p99_ms": 1000 * lag[int(len(lag) * 0.99) - 1],
        "rss_per_device_kib": (rss_after - rss_before) / count / 1024,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="50 devices, 20 s window")
    parser.add_argument("--devices", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=None)
    args = parser.parse_args()
    count = args.devices or (50 if args.quick else 500)
    seconds = args.seconds or (20 if args.quick else 40)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ca = LocalCA(work / "pki")
        names = [f"bench-{i:04d}" for i in range(count + BASELINE)]
        broker = MosquittoBroker(
            work / "mosquitto", ca, free_port(), mosquitto_acl("bench/fleet", names)
        ).start()
        counter = Counter(broker, ca)
        bundle = build_bundle("1.0.0", FEATURES)
        try:
            base = await run_fleet(BASELINE, seconds / 2, ca, broker, counter, bundle, work / "base", 0)
            fleet = await run_fleet(count, seconds, ca, broker, counter, bundle, work / "fleet", BASELINE)
        finally:
            counter.stop()
            broker.stop()
    print(f"devicesim fleet: real firmware, one process, one loop, publishing every {INTERVAL} s over mTLS")
    for label, r in (("baseline", base), ("fleet", fleet)):
        print(
            f"  {label:<8} {r['devices']:>4} devices: warm-up {r['warmup_s']:5.1f} s, delivered/expected "
            f"{r['rate_ratio']:.3f}, loop lag p50 {r['lag_p50_ms']:.1f} ms p99 {r['lag_p99_ms']:.1f} ms, "
            f"{r['rss_per_device_kib']:.0f} KiB/device"
        )
    print(
        f"  ratios fleet/baseline: rate {fleet['rate_ratio'] / base['rate_ratio']:.3f}, "
        f"loop lag p99 x{fleet['lag_p99_ms'] / max(base['lag_p99_ms'], 0.1):.1f}"
    )


if __name__ == "__main__":
    asyncio.run(main())
