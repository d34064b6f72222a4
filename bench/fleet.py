"""How many emulated devices one machine sustains: the local mode's data path at fleet scale.

N boards run the REAL device firmware (firmware/device, the .mpy bundle built by `weatherfleet.firmware`)
as the local mode runs them (weatherfleet.local.devices): each board is its own `micropython` VM process,
its hardware played by a device runner (one host process per 250 boards); they publish a measurement every
5 s over mutual TLS to a real Mosquitto with the fleet's ACL, and `weatherfleet ingest` writes them to
SQLite, exactly as `weatherfleet up` wires it. bench/board.py measures the boards alone (heap, allocations,
boards per machine publishing to a broker); this benchmark adds what they feed: ingest and its store. A paho subscriber
(the ingest identity) measures, per step:

- delivered / expected measurements in the window (1.00 = every board published every 5 s);
- lag = arrival time - the reading's own timestamp, relative to each board's first reading (the emulated
  clock may be offset by a constant), p50 and p95 in the first and the last third of the window: a lag that
  grows from the first third to the last means the machine does not keep up;
- CPU per board (% of one core): the board's own VM process plus its share of the device runner, from
  /proc; and the CPU of the broker and ingest;
- rows ingest stored in the window / expected (the whole local data path keeps up, not just the broker).

N is sustained when delivered >= 0.98, stored >= 0.98 and the lag's p95 did not grow by more than 1 s.
The first step (BASELINE boards) is the reference every later step's CPU per board is compared with.

    .venv/bin/python bench/fleet.py --quick     # 25 and 100 boards, 30 s windows (~1.5 minutes)
    .venv/bin/python bench/fleet.py             # 50, 250, 500, 750 boards, 60 s windows
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import cpu_seconds

from weatherfleet import identities
from weatherfleet.ingest.sqlite_store import SQLiteStore
from weatherfleet.local.devices import DeviceFleet
from weatherfleet.local.resources import Resources, with_sensor_count
from weatherfleet.local.services import ingest_command
from weatherfleet.local.supervisor import Supervisor
from weatherfleet.local.workdir import Workdir
from weatherfleet.models import SensorFleet, WeatherSensor
from weatherfleet.mqtt import MqttSettings, make_client
from weatherfleet.pki import LocalCA
from weatherfleet.provisioning.bundles import build_bundles, bundle_files
from weatherfleet.provisioning.deviceconfig import (
    Credentials,
    Endpoints,
    Timing,
    device_config,
    device_files,
)
from weatherfleet.provisioning.signing import device_key, ensure_signing_key
from weatherfleet.reconcilers.broker import mosquitto_acl
from weatherfleet.services.mosquitto import MosquittoBroker
from weatherfleet.services.process import free_port

INTERVAL = 5
INGEST_DELAY = 2.5  # > ingest's batch delay (0.5 s) plus a commit


def board_pids(runner: int) -> list[int]:
    """The board VM processes of a device runner: its direct children (setpriv execs micropython, so the
    child is the VM itself)."""
    pids: list[int] = []
    for task in Path(f"/proc/{runner}/task").iterdir():
        pids.extend(int(p) for p in (task / "children").read_text().split())
    return pids


def cpu_of(pids: list[int]) -> dict[int, float]:
    """CPU seconds per pid; a process that is gone (a board that rebooted) is left out."""
    result = {}
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            result[pid] = cpu_seconds(pid)
    return result


def fleet_resources(count: int) -> Resources:
    fleet = SensorFleet.model_validate(
        {"metadata": {"name": "bench", "namespace": "bench"},
         "spec": {"selector": {"matchLabels": {"fleet": "bench"}}, "broker": {"kind": "mosquitto"}}}
    )  # fmt: skip
    template = WeatherSensor.model_validate(
        {"metadata": {"name": "b-0001", "namespace": "bench", "labels": {"fleet": "bench"}},
         "spec": {"deviceId": "b-0001", "location": "bench", "measurementIntervalSeconds": INTERVAL,
                  "sensors": [{"type": "bme280"}, {"type": "scd30"}, {"type": "sds011"}],
                  "features": {"payload": "influx", "ota": False}}}
    )  # fmt: skip
    return with_sensor_count(Resources(sensors=[template], fleets=[fleet]), count)


class Probe:
    """Counts measurements and their lag per board, as the ingest identity."""

    def __init__(self, settings: MqttSettings) -> None:
        self.lock = threading.Lock()
        self.samples: list[tuple[float, str, float]] = []  # (arrival, device, arrival - reading time)
        self.client = make_client(settings, f"bench-probe-{os.getpid()}")
        ready = threading.Event()
        self.client.on_connect = lambda c, *_a: c.subscribe("sensors/+/measurements", qos=0)
        self.client.on_subscribe = lambda *_a: ready.set()
        self.client.on_message = self._on_message
        self.client.connect(settings.host, settings.port)
        self.client.loop_start()
        if not ready.wait(20):
            raise RuntimeError("the probe could not subscribe")

    def _on_message(self, _client, _userdata, message) -> None:
        now = time.time()
        try:
            stamp = int(message.payload.rsplit(b" ", 1)[1]) / 1e9
        except (IndexError, ValueError):
            return
        with self.lock:
            self.samples.append((now, message.topic.split("/")[1], now - stamp))

    def take(self) -> list[tuple[float, str, float]]:
        with self.lock:
            samples, self.samples = self.samples, []
        return samples

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_step(count: int, window: float, warmup: float, root: Path) -> dict:
    workdir = Workdir(root / f"n{count}")
    supervisor = Supervisor(workdir)
    ca = LocalCA(root / "pki")
    _private, public = ensure_signing_key(root / "signing")
    resources = fleet_resources(count)
    ids = [s.spec.device_id for s in resources.sensors]
    broker = MosquittoBroker(workdir.mosquitto, ca, free_port(), mosquitto_acl("bench/bench", ids))
    broker.start()
    supervisor.adopt("mosquitto", broker.process)
    probe = None
    try:
        # ingest and the probe share the ingest identity: the services' listener, with its login
        ingest = ca.issue(identities.INGEST)
        username, password = broker.login(identities.INGEST)
        settings = MqttSettings(host=broker.host, port=broker.services_port, ca=ingest.ca, cert=ingest.cert,
                                key=ingest.key, username=username, password=password)  # fmt: skip
        # ingest reads its client certificate from a mounted folder, as the local mode mounts the Secret
        mqtt = root / f"ingest-mqtt-{count}"
        mqtt.mkdir()
        for name, path in (("ca.crt", ingest.ca), ("tls.crt", ingest.cert), ("tls.key", ingest.key)):
            (mqtt / name).write_bytes(path.read_bytes())
        argv, ready = ingest_command(broker.host, broker.services_port, mqtt, workdir, free_port(), username)
        supervisor.start("ingest", argv, ready, env={"MQTT_PASSWORD": password})
        endpoints = Endpoints(
            broker_host=broker.host, broker_port=broker.port, ota_host="127.0.0.1", ota_port=1
        )
        timing = Timing(measurement_interval=INTERVAL, keepalive=60)
        factory = build_bundles(resources.sensors[:1], "1.0.0", root / f"firmware-{count}")
        files = bundle_files(next(iter(factory.values())))
        devices = DeviceFleet(supervisor, workdir)
        devices.echo = False  # 750 consoles would measure the log, not the fleet
        key = device_key(public)
        for sensor in resources.sensors:
            config = device_config(
                sensor, resources.fleets[0], endpoints, [key], timing, firmware_version="1.0.0"
            )
            issued = ca.issue(sensor.spec.device_id)
            credentials = Credentials(
                ca=issued.ca.read_bytes(), cert=issued.cert.read_bytes(), key=issued.key.read_bytes()
            )
            devices.install(sensor, device_files(config, credentials), files)
        probe = Probe(settings)
        started = time.monotonic()
        devices.start(resources.sensors)
        # warm-up: every board connected and publishing, then a clean window
        deadline = time.monotonic() + warmup + count * 0.1
        seen: set[str] = set()
        while time.monotonic() < deadline and len(seen) < count:
            seen.update(d for _t, d, _l in probe.take())
            time.sleep(0.5)
        boot_seconds = time.monotonic() - started
        time.sleep(INTERVAL)
        probe.take()
        runners = [supervisor.processes[n].pid for n in devices.running]
        boards = [pid for runner in runners for pid in board_pids(runner)]
        others = {"mosquitto": broker.process.pid, "ingest": supervisor.processes["ingest"].pid}
        store = SQLiteStore(workdir.store_path)
        cpu0 = cpu_of([*runners, *boards, *others.values()])
        t0 = time.monotonic()
        # rows are counted over a window of the same length, shifted by ingest's batch delay
        time.sleep(INGEST_DELAY)
        rows0 = store.count("weather")
        time.sleep(window - INGEST_DELAY)
        elapsed = time.monotonic() - t0
        cpu1 = cpu_of(list(cpu0))
        samples = probe.take()
        time.sleep(INGEST_DELAY)
        rows = store.count("weather") - rows0
        store.close()
    finally:
        if probe:
            probe.stop()
        supervisor.stop_all()
    expected = count * elapsed / INTERVAL
    base: dict[str, float] = {}
    relative: list[tuple[float, float]] = []
    for arrival, device, lag in sorted(samples):
        base[device] = min(base.get(device, lag), lag)
        relative.append((arrival, lag - base[device]))
    third = len(relative) // 3 or 1
    first = [lag for _t, lag in relative[:third]]
    last = [lag for _t, lag in relative[-third:]]
    runner_cpu = sum(cpu1[p] - cpu0[p] for p in runners) / elapsed
    # a board that rebooted in the window is a new process: its CPU is missing, so it is counted and shown
    alive = [p for p in boards if p in cpu1]
    board_cpu = sum(cpu1[p] - cpu0[p] for p in alive) / elapsed
    return {
        "boards": count,
        "runners": len(runners),
        "boot_s": boot_seconds,
        "booted": len(seen),
        "delivered": len(samples) / expected,
        "stored": rows / expected,
        "lag_first": (percentile(first, 0.5), percentile(first, 0.95)),
        "lag_last": (percentile(last, 0.5), percentile(last, 0.95)),
        "board_processes": len(boards),
        "boards_measured": len(alive),
        "cpu_per_board": 100 * (runner_cpu + board_cpu) / count,
        "cpu_boards": 100 * board_cpu,
        "cpu_runners": 100 * runner_cpu,
        "cpu_broker": 100 * (cpu1[others["mosquitto"]] - cpu0[others["mosquitto"]]) / elapsed,
        "cpu_ingest": 100 * (cpu1[others["ingest"]] - cpu0[others["ingest"]]) / elapsed,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--boards", type=int, nargs="*", help="fleet sizes to try, smallest first")
    parser.add_argument("--window", type=float, help="seconds measured per step")
    args = parser.parse_args()
    sizes = args.boards or ([25, 100] if args.quick else [50, 250, 500, 750])
    window = args.window or (30.0 if args.quick else 60.0)
    print(f"machine: {os.cpu_count()} cores; boards publish every {INTERVAL} s; window {window:g} s per step")
    results = []
    with tempfile.TemporaryDirectory(prefix="wf-bench-fleet-") as tmp:
        for count in sizes:
            r = run_step(count, window, 20.0, Path(tmp))
            results.append(r)
            baseline = results[0]["cpu_per_board"]
            sustained = (
                r["delivered"] >= 0.98 and r["stored"] >= 0.98 and r["lag_last"][1] - r["lag_first"][1] <= 1.0
            )
            r["sustained"] = sustained
            print(
                f"{count:5d} boards ({r['runners']} runner{'s' if r['runners'] > 1 else ''}, "
                f"{r['booted']} up in {r['boot_s']:.0f} s): delivered {r['delivered']:.3f}, "
                f"stored {r['stored']:.3f}, lag p50/p95 {1000 * r['lag_first'][0]:.0f}/{1000 * r['lag_first'][1]:.0f} ms"
                f" -> {1000 * r['lag_last'][0]:.0f}/{1000 * r['lag_last'][1]:.0f} ms; CPU {r['cpu_per_board']:.3f} % of a core "
                f"per board ({r['cpu_per_board'] / baseline:.2f}x the {results[0]['boards']}-board step), "
                f"board VMs {r['cpu_boards']:.0f} % ({r['boards_measured']}/{r['board_processes']} processes "
                f"through the window), runners {r['cpu_runners']:.0f} %, broker {r['cpu_broker']:.0f} %, ingest {r['cpu_ingest']:.0f} %"
                f" -> {'sustained' if sustained else 'NOT sustained'}",
                flush=True,
            )
    best = max((r["boards"] for r in results if r["sustained"]), default=0)
    print(f"largest fleet sustained on this machine: {best} boards (goal >= 500)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
