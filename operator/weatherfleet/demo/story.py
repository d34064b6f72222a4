"""`weatherfleet demo`: a scripted, time-compressed story on top of the local system.

    1. a fleet of emulated devices comes up on the factory firmware and publishes;
    2. release 1.1.0 is built, signed and pushed, its FirmwareRelease and the fleet's new rollout are
       committed, and the operator rolls it out in three waves: while the first wave is open only its
       devices update, and no device outside the open share ever fetches the candidate;
    3. release 1.2.0 crashes on boot: the failure threshold halts it in its first wave, the devices that
       took it roll back and stay on 1.1.0, while the rest never see it;
    4. a summary table and an HTML report; every step is a check, and the demo fails if one does not hold.

The story changes the fleet only the GitOps way: by editing the CR file the local mode applies. Every
decision (release verification, waves, halts, the plan OtaFlux serves) is the operator's, running on
the local API server exactly as in a cluster; the story only pushes firmware and watches."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import yaml
from pydantic import BaseModel, Field
from rich.console import Console
from rich.table import Table

from ..local.options import REPOSITORY_PREFIX, UpOptions
from ..local.system import LocalSystem
from ..local.table import device_table, rollout_table
from ..local.timeline import TimelineEvent
from ..provisioning.bundles import DEVICE_SOURCE, build_bundles, push_release
from ..provisioning.deviceconfig import Timing
from ..rollout import in_share, rollout_id, share_of
from .report import Check, write_report
from .reportdata import collect

NAMESPACE, FLEET = "weatherfleet", "demo"
FLEET_KEY = f"{NAMESPACE}/{FLEET}"
FACTORY, GOOD, BAD = "1.0.0", "1.1.0", "1.2.0"
LOCATIONS = [
    ("balcony", ("bme280",)),
    ("greenhouse", ("bme280", "scd30")),
    ("street", ("bme280", "sds011")),
    ("roof", ("bme280", "scd30", "sds011")),
]
FAULT = 'raise RuntimeError("release 1.2.0: crashes on boot (the demo\'s bad release)")\n'


class StoryConfig(BaseModel):
    """The story's scale and its compressed time."""

    devices: int = Field(20, description="emulated boards in the fleet (the demo's --devices)")
    measurement_interval: int = Field(5, description="seconds between a board's readings")
    # the firmware's minimum is 10 s; a wave's bake time must leave a device of the wave time to check,
    # update, fail and report before the next wave opens
    check_interval: int = Field(10, description="seconds between a board's checks with OtaFlux")
    jitter: int = Field(3, description="up to this many seconds later than check_interval, at random")
    bake_seconds: int = Field(30, description="each wave's bakeTime")
    settle_seconds: int = Field(20, description="how long the story watches the fleet after the halt")
    day_seconds: float = Field(180.0, description="the emulated weather's day")
    timeout: float = Field(180.0, description="the longest any one step may take")


FULL = StoryConfig()
FAST = StoryConfig(devices=10, measurement_interval=3, jitter=2, settle_seconds=10, day_seconds=90)


def release_name(version: str) -> str:
    return "firmware-" + version.replace(".", "-")


def demo_resources(config: StoryConfig, release: str | None, published: tuple[str, ...] = ()) -> list[dict]:
    """The demo's CR folder: the fleet (rolling out `release`), its sensors, and a signed FirmwareRelease
    per version already `published` (built, signed and pushed: CI commits the release after the push)."""
    fleet = {
        "apiVersion": "weatherfleet.io/v1alpha1",
        "kind": "SensorFleet",
        "metadata": {"name": FLEET, "namespace": NAMESPACE},
        "spec": {
            "selector": {"matchLabels": {"weatherfleet.io/fleet": FLEET}},
            "broker": {
                "kind": "mosquitto",
                "host": "mosquitto",
                "aclConfigMap": "mosquitto-acl",
                "deployment": None,
            },
            "alerting": {"noDataAfter": "1m"},
            "rollout": {
                "release": release,
                "waves": [
                    {"percent": 20, "bakeTime": f"{config.bake_seconds}s"},
                    {"percent": 50, "bakeTime": f"{config.bake_seconds}s"},
                    {"percent": 100, "bakeTime": f"{config.bake_seconds}s"},
                ],
                "failureThreshold": {"count": 1},
            },
        },
    }
    sensors = []
    for i in range(1, config.devices + 1):
        location, types = LOCATIONS[(i - 1) % len(LOCATIONS)]
        device = f"dev-{i:02d}"
        sensors.append(
            {
                "apiVersion": "weatherfleet.io/v1alpha1",
                "kind": "WeatherSensor",
                "metadata": {
                    "name": device,
                    "namespace": NAMESPACE,
                    "labels": {"weatherfleet.io/fleet": FLEET},
                },
                "spec": {
                    "deviceId": device,
                    "location": location,
                    "sensors": [{"type": t} for t in types],
                    "measurementIntervalSeconds": max(5, config.measurement_interval),
                    "firmware": {"checkIntervalSeconds": 60, "jitterSeconds": 0},
                },
            }
        )
    releases = [
        {
            "apiVersion": "weatherfleet.io/v1alpha1",
            "kind": "FirmwareRelease",
            "metadata": {"name": release_name(v), "namespace": NAMESPACE},
            "spec": {
                "version": v,
                "artifact": {
                    "repository": f"registry.weatherfleet.svc:5000/{REPOSITORY_PREFIX}{{deviceId}}",
                    "tag": v,
                    "kind": "bundle",
                },
                "features": [],
                "signature": {
                    "required": True,
                    "publicKeyRef": {"name": "firmware-signing-key", "key": "ed25519.pub"},
                },
            },
        }
        for v in published
    ]
    return [fleet, *sensors, *releases]


def write_fleet(
    directory: Path, config: StoryConfig, release: str | None, published: tuple[str, ...] = ()
) -> None:
    """The 'git commit' of the story: the CR folder with the fleet's rollout naming `release`."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "fleet.yaml"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump_all(demo_resources(config, release, published), sort_keys=False))
    tmp.replace(path)


class Story:
    def __init__(self, workdir: Path, config: StoryConfig, console: Console, registry: str = "auto") -> None:
        self.config = config
        self.console = console
        self.crs = Path(workdir) / "demo-crs"
        write_fleet(self.crs, config, None)
        self.system = LocalSystem(
            UpOptions(
                directory=self.crs,
                workdir=workdir,
                registry=registry,
                factory_version=FACTORY,
                day_seconds=config.day_seconds,
                timing=Timing(
                    measurement_interval=config.measurement_interval,
                    check_interval=config.check_interval,
                    jitter=config.jitter,
                    keepalive=max(10, config.check_interval * 3),
                ),
            )
        )
        self.checks: list[Check] = []
        self.started = datetime.now(UTC)

    # --- helpers ---------------------------------------------------------------------------------------

    def say(self, text: str) -> None:
        elapsed = (datetime.now(UTC) - self.started).total_seconds()
        self.console.print(f"[dim]{elapsed:6.1f}s[/] {text}")

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.checks.append(Check(name=name, ok=ok, detail=detail))
        mark = "[green]ok[/]" if ok else "[red]FAILED[/]"
        self.say(f"  check: {name}: {mark} {detail}")
        return ok

    def wait(
        self,
        condition: Callable[[], bool],
        timeout: float | None = None,
        every: Callable[[], None] | None = None,
    ) -> bool:
        deadline = time.monotonic() + (timeout or self.config.timeout)
        while time.monotonic() < deadline:
            self.system.tick()
            if every:
                every()
            if condition():
                return True
            time.sleep(0.5)
        return False

    @property
    def devices(self) -> list[str]:
        return [s.spec.device_id for s in self.system.resources.sensors]

    def reported(self) -> dict[str, str | None]:
        obs = self.system.observations()
        return {d: obs[d].reported_version if d in obs else None for d in self.devices}

    def online(self) -> set[str]:
        obs = self.system.observations()
        return {d for d in self.devices if d in obs and obs[d].online}

    def status(self):
        """The fleet's rollout status, as the operator wrote it into the API."""
        return self.system.fleet_statuses().get(FLEET_KEY)

    def publish(self, version: str, source: Path = DEVICE_SOURCE) -> dict[str, str]:
        bundles = build_bundles(
            self.system.resources.sensors, version, self.system.workdir.firmware / version, source=source
        )
        digests = push_release(
            self.system.registry_url,
            bundles,
            version,
            self.system.signing_key,
            self.system.signing_public_key,
            REPOSITORY_PREFIX,
        )
        self.system.timeline.append(
            TimelineEvent(
                kind="push",
                version=version,
                message=f"{version} built, signed, pushed for {len(digests)} devices",
            )
        )
        return digests

    # --- the story -------------------------------------------------------------------------------------

    def run(self) -> bool:
        cfg = self.config
        self.say(f"starting the local system with {cfg.devices} emulated devices ...")
        self.system.start()
        self.say("[bold]1. the fleet comes up[/]")
        everyone = set(self.devices)
        self.wait(lambda: self.online() == everyone and set(self.reported().values()) == {FACTORY})
        online = self.online()
        self.check(
            f"all {cfg.devices} devices online on {FACTORY}",
            online == everyone and set(self.reported().values()) == {FACTORY},
            f"{len(online)} online; versions {sorted({v or '?' for v in self.reported().values()})}",
        )

        def all_in_store() -> bool:
            store = self.system.store()
            return store is not None and set(store.latest_readings()) >= everyone

        self.wait(all_in_store)
        store = self.system.store()
        stored = set(store.latest_readings()) if store else set()
        self.check(
            "readings of every device are in the store",
            stored >= everyone,
            f"{len(stored & everyone)} devices",
        )

        self.say(f"[bold]2. release {GOOD}: build, sign, push, roll out in three waves[/]")
        digests = self.publish(GOOD)
        self.check(f"{GOOD} pushed and its signature verifies for every device", set(digests) == everyone)
        write_fleet(self.crs, cfg, release_name(GOOD), (GOOD,))
        rid = rollout_id(FLEET_KEY, release_name(GOOD), GOOD)
        early: list[str] = []  # reported the candidate while outside the open share
        fetched_outside: list[str] = []  # started downloading it while outside the open share
        first_seen: set[str] = set()
        during_wave_1: set[str] = set()
        looked = [0]

        def open_share() -> str | None:
            """The rank threshold of the open share (weatherfleet.rollout.ranks): everyone once complete."""
            status = self.status()
            ours = status is not None and status.version == GOOD and status.phase in ("Progressing", "Paused")
            return status.threshold if ours else ("f" * 64 if status and status.phase == "Complete" else None)

        def watch_waves() -> None:
            threshold = open_share()
            status = self.status()
            for device, version in self.reported().items():
                if version == GOOD and device not in first_seen:
                    first_seen.add(device)
                    if not in_share(rid, device, threshold):
                        early.append(device)
                    if status is not None and status.version == GOOD and status.wave == 0:
                        during_wave_1.add(device)
            history = self.system.ota_history
            for device, state, version in history[looked[0] :]:
                if version == GOOD and state != "checking" and not in_share(rid, device, threshold):
                    fetched_outside.append(device)
            looked[0] = len(history)

        self.wait(
            lambda: (
                self.status() is not None
                and self.status().version == GOOD
                and self.status().phase in ("Complete", "Halted")
            ),
            timeout=cfg.timeout + 3 * cfg.bake_seconds,
            every=watch_waves,
        )
        status = self.status()
        waves = [e for e in self.system.timeline.events() if e.kind == "wave" and e.version == GOOD]
        self.check(
            f"{GOOD} completed",
            status is not None and status.phase == "Complete" and status.version == GOOD,
            status.reason if status else "no rollout status",
        )
        self.check(
            "it opened in three waves (20%, 50%, 100%)",
            [e.percent for e in waves] == [20.0, 50.0, 100.0],
            ", ".join(f"{e.percent:g}%" for e in waves),
        )
        wave_1 = share_of(rid, self.devices, 20)
        self.check(
            "while wave 1 was open, only its devices updated",
            during_wave_1 <= wave_1,
            f"wave 1: {sorted(wave_1)}; updated then: {sorted(during_wave_1)}",
        )
        self.check(
            f"no device outside the open share fetched {GOOD}",
            not fetched_outside,
            ", ".join(sorted(set(fetched_outside))),
        )
        self.check("no device updated before its wave opened", not early, ", ".join(early))
        self.wait(lambda: set(self.reported().values()) == {GOOD}, timeout=cfg.timeout / 2)
        self.check(
            f"every device runs {GOOD}",
            set(self.reported().values()) == {GOOD},
            str(sorted(set(self.reported().values()), key=str)),
        )

        self.say(f"[bold]3. release {BAD} crashes on boot[/]")
        bad_source = self.system.workdir.root / "demo-src-bad"
        if bad_source.exists():
            shutil.rmtree(bad_source)
        shutil.copytree(DEVICE_SOURCE, bad_source, ignore=shutil.ignore_patterns("__pycache__"))
        # the application module of the slot raises at import: main.py catches it, resets, and boot.py's
        # counter falls back after the release failed to confirm itself
        app = bad_source / "app.py"
        app.write_text(FAULT + app.read_text())
        self.publish(BAD, source=bad_source)
        bad_rid = rollout_id(FLEET_KEY, release_name(BAD), BAD)
        first_wave = share_of(bad_rid, self.devices, 20)
        self.say(f"  wave 1 of {BAD} is open to {sorted(first_wave)}")
        write_fleet(self.crs, cfg, release_name(BAD), (GOOD, BAD))
        self.wait(
            lambda: (
                self.status() is not None
                and self.status().version == BAD
                and self.status().phase in ("Halted", "Complete")
            )
        )
        status = self.status()
        halted_at = datetime.now(UTC)
        failed = {f.device_id for f in status.failed_devices}
        self.check(
            f"{BAD} halted by the failure threshold in wave 1",
            status.version == BAD and status.phase == "Halted" and status.wave == 0,
            status.reason,
        )
        self.check(
            "only wave-1 devices failed", bool(failed) and failed <= first_wave, ", ".join(sorted(failed))
        )
        self.say(f"  watching the fleet for {cfg.settle_seconds}s after the halt ...")
        seen_bad: set[str] = set()

        def watch_bad() -> None:
            seen_bad.update(d for d, v in self.reported().items() if v == BAD)

        deadline = time.monotonic() + cfg.settle_seconds
        self.wait(lambda: time.monotonic() >= deadline, timeout=cfg.settle_seconds + 5, every=watch_bad)
        # affected: every device that got as far as downloading 1.2.0, not only those counted at the halt
        history = self.system.ota_history
        affected = {d for d, state, version in history if version == BAD and state != "checking"}
        self.wait(lambda: all(self.reported()[d] == GOOD for d in affected) and affected <= self.online())
        rolled = {d for d in affected if self.reported()[d] == GOOD}
        rolled_events = {d for d, state, version in history if state == "rolled_back" and version == BAD}
        self.check(
            f"the affected devices rolled back to {GOOD}",
            bool(affected) and rolled == affected and failed <= rolled_events,
            ", ".join(sorted(affected)),
        )
        touched = {d for d, _state, version in history if version == BAD}
        self.check(
            f"devices outside wave 1 never fetched {BAD}",
            touched <= first_wave,
            ", ".join(sorted(touched - first_wave)),
        )
        self.check(
            f"every device stays on {GOOD}",
            not seen_bad and set(self.reported().values()) == {GOOD},
            ", ".join(sorted(seen_bad)),
        )
        self.wait(lambda: self.online() == everyone, timeout=cfg.timeout / 2)
        self.check(
            "every device is online and publishing after the halt",
            self._published_since(halted_at) >= everyone,
        )
        return all(c.ok for c in self.checks)

    def _published_since(self, moment: datetime) -> set[str]:
        deadline = time.monotonic() + max(30, 6 * self.config.measurement_interval)
        while True:
            store = self.system.store()
            latest = store.latest_readings() if store else {}
            fresh = {d for d, r in latest.items() if r.time >= moment}
            if fresh >= set(self.devices) or time.monotonic() > deadline:
                return fresh
            self.system.tick()
            time.sleep(0.5)

    # --- the end ---------------------------------------------------------------------------------------

    def summary(self) -> None:
        self.console.print(device_table(self.system.device_rows()))
        self.console.print(rollout_table(self.system.rollout_rows()))
        table = Table(title="story checks")
        table.add_column("check")
        table.add_column("result")
        for c in self.checks:
            table.add_row(c.name, "[green]passed[/]" if c.ok else f"[red]FAILED[/] {c.detail}")
        self.console.print(table)

    def report(self, path: Path) -> Path:
        data = collect(
            self.system,
            "weatherfleet demo",
            self.checks,
            self.started,
            min_bucket=2 * self.config.measurement_interval,
        )
        return write_report(path, data)
