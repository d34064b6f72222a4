"""A whole fleet through a whole rollout, without I/O: thousands of devices with periodic checks and
jitter, slow downloads, devices offline for good or from time to time, devices that join mid-rollout, a
release that fails on some of them, announcements on or off — driven by the real rollout code
(`next_status`, `fleet_plan`, `FleetPlan.version_for`, `newly_offered`), evaluated every
`evaluate_every` seconds as the operator does.

Deterministic for a seed (the only randomness is `random.Random(seed)`), fast enough for the test suite
at 10,000 devices, and what `bench/rollout.py` prints figures from.

A device's life: every `check_interval` (+ up to `jitter`) — or at once when an announcement reaches it
while online — it asks what it is offered; a version it does not run and never rolled back from is
downloaded (`download_seconds`, or `slow_download_seconds` for slow devices), installed, booted, and
`health_seconds` later either confirmed or rolled back (with probability `failure_rate`, per device and
release). The operator sees what the MQTT view shows: reported version, last OTA event, online.
"""

from __future__ import annotations

import heapq
import random
import statistics
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, Field

from ..durations import parse_duration
from ..models.fleet import RolloutSpec, RolloutStatus
from .devices import DeviceObservation
from .plan import FleetPlan, newly_offered
from .ranks import in_share
from .waves import active_seconds, fleet_plan, next_status, rollout_id, tally

T0 = datetime(2026, 1, 1, tzinfo=UTC)
FLEET = "weatherfleet/sim"
STABLE = "1.0.0"


class DeviceTiming(BaseModel):
    """How long a device's steps take, in seconds."""

    check_interval: float = Field(3600.0, description="between a device's periodic checks")
    jitter: float = Field(600.0, description="up to this much later than check_interval, at random")
    download_seconds: float = Field(90.0, description="download, install and reboot")
    slow_download_seconds: float = Field(600.0, description="the same on a slow device")
    health_seconds: float = Field(60.0, description="from the reboot to confirming or rolling back")


class FleetModel(BaseModel):
    """The simulated fleet: its devices (shares of the fleet), their timing, and the operator's settings."""

    timing: DeviceTiming = Field(default_factory=DeviceTiming)
    devices: int = Field(10_000, description="members when the rollout starts")
    joiners_per_hour: float = Field(30.0, description="devices that join the fleet mid-rollout")
    slow_share: float = Field(0.05, description="devices whose download takes slow_download_seconds")
    offline_share: float = Field(0.02, description="never online in the run (retained status: the stable)")
    flaky_share: float = Field(0.03, description="offline 30 minutes of every 2 hours, at random phases")
    failure_rate: float = Field(0.0, description="devices on which the release fails its health check")
    evaluate_every: float = Field(60.0, description="the operator's rollout tick")
    announce: bool = Field(True, description="OtaFlux notifies the devices newly offered a version")
    seed: int = Field(1, description="of the run's one random.Random")


@dataclass
class Wave:
    index: int
    opened_at: float
    percent: float
    devices: set[str]  # inside the share when it opened, new in this wave
    updated_at: float | None = None  # when every steadily online, healthy one of them ran the release
    waiting: set[str] = field(default_factory=set)  # those steady ones not running it yet

    @property
    def open_to_updated(self) -> float | None:
        return None if self.updated_at is None else self.updated_at - self.opened_at


@dataclass
class Result:
    status: RolloutStatus
    version: str
    exposed: dict[str, float] = field(default_factory=dict)  # device -> when it booted the release
    started: dict[str, tuple[float, int]] = field(default_factory=dict)  # device -> (when, wave) it began
    rolled_back: dict[str, float] = field(default_factory=dict)
    breach_at: float | None = None  # first moment the reported failures reached the threshold
    halted_at: float | None = None
    completed_at: float | None = None
    waves: list[Wave] = field(default_factory=list)
    joined: int = 0
    evaluations: int = 0
    notifications: int = 0

    def wave_times(self) -> list[float]:
        return [w.open_to_updated for w in self.waves if w.open_to_updated is not None]

    def median_wave_time(self) -> float | None:
        times = self.wave_times()
        return statistics.median(times) if times else None


@dataclass
class _Device:
    id: str
    running: str = STABLE
    online: bool = True
    slow: bool = False
    flaky_phase: float | None = None  # flaky: offline while (t + phase) % 7200 < 1800
    fails: bool = False
    busy_until: float = -1.0
    bad: set[str] = field(default_factory=set)
    ota_state: str | None = None
    ota_version: str | None = None
    ota_reason: str | None = None
    joined_at: float | None = None


def simulate(spec: RolloutSpec, model: FleetModel, until: float, version: str = "1.1.0") -> Result:
    """Run the rollout of `spec.release` (version `version`) over a fleet on 1.0.0 for `until` seconds."""
    rnd = random.Random(model.seed)
    devices: dict[str, _Device] = {}
    events: list[tuple[float, int, str, str]] = []
    seq = [0]

    def push(t: float, kind: str, device: str = "") -> None:
        seq[0] += 1
        heapq.heappush(events, (t, seq[0], kind, device))

    def add(device_id: str, t: float, joined: bool) -> None:
        d = _Device(device_id, slow=rnd.random() < model.slow_share, fails=rnd.random() < model.failure_rate)
        draw = rnd.random()
        if draw < model.offline_share:
            d.online = False
        elif draw < model.offline_share + model.flaky_share:
            d.flaky_phase = rnd.uniform(0, 7200)
        d.joined_at = t if joined else None
        devices[device_id] = d
        push(t + rnd.uniform(0, model.timing.check_interval + model.timing.jitter), "check", device_id)

    for i in range(model.devices):
        add(f"sensor-{i:05d}", 0.0, False)
    if model.joiners_per_hour > 0:
        push(rnd.expovariate(model.joiners_per_hour / 3600), "join")
    push(0.0, "evaluate")

    result = Result(status=RolloutStatus(), version=version)
    rid = rollout_id(FLEET, spec.release or "", version)
    # before the release is set, the fleet's plan offers the stable version: OtaFlux's baseline
    plan: FleetPlan | None = fleet_plan(RolloutStatus(stableVersion=STABLE), FLEET, list(devices), {}, [])
    observed: dict[str, DeviceObservation] = {}
    previous_threshold: str | None = None
    timeout = parse_duration(spec.update_timeout)

    def online(d: _Device, t: float) -> bool:
        if not d.online:
            return False
        return d.flaky_phase is None or (t + d.flaky_phase) % 7200 >= 1800

    def observe(d: _Device, t: float) -> None:
        observed[d.id] = DeviceObservation(
            device_id=d.id,
            online=online(d, t),
            reported_version=d.running,
            ota_state=d.ota_state,
            ota_version=d.ota_version,
            ota_reason=d.ota_reason,
            member_since=T0 + timedelta(seconds=d.joined_at) if d.joined_at is not None else None,
        )

    def check(d: _Device, t: float) -> None:
        if plan is None or not online(d, t) or t < d.busy_until:
            return
        offered = plan.version_for(d.id)
        if offered is None or offered == d.running or offered in d.bad:
            return
        took = model.timing.slow_download_seconds if d.slow else model.timing.download_seconds
        d.busy_until = t + took + model.timing.health_seconds
        d.ota_state, d.ota_version, d.ota_reason = "downloading", offered, None
        if offered == version:
            result.started.setdefault(d.id, (t, result.status.wave))
        push(t + took, "booted", d.id)

    def breached(t: float) -> None:
        """The first moment the failures as the operator counts them reach the threshold."""
        status = result.status
        if result.breach_at is not None or status.threshold is None or status.phase != "Progressing":
            return
        now = T0 + timedelta(seconds=t)
        counted = tally(
            list(observed.values()),
            rid,
            version,
            status.threshold,
            active_seconds(status, now),
            timeout,
            status.wave_started_at,
            now,
        )
        if spec.failure_threshold.breached(counted.failed, counted.opened):
            result.breach_at = t

    while events:
        t, _, kind, device_id = heapq.heappop(events)
        if t > until:
            break
        if kind == "check":
            d = devices[device_id]
            check(d, t)
            push(t + model.timing.check_interval + rnd.uniform(0, model.timing.jitter), "check", device_id)
        elif kind == "notify":
            check(devices[device_id], t)
        elif kind == "booted":
            d = devices[device_id]
            target = d.ota_version
            d.ota_state = "booted"
            if target == version:
                result.exposed.setdefault(d.id, t)
            push(t + model.timing.health_seconds, "healthy", device_id)
        elif kind == "healthy":
            d = devices[device_id]
            target = d.ota_version
            if target == version and d.fails:
                d.ota_state, d.ota_reason = "rolled_back", "health check failed after boot"
                d.bad.add(target)
                result.rolled_back.setdefault(d.id, t)
                observe(d, t)
                breached(t)
            else:
                d.running, d.ota_state = target, "confirmed"
                observe(d, t)
                for wave in result.waves:
                    if d.id in wave.waiting:
                        wave.waiting.discard(d.id)
                        if not wave.waiting:
                            wave.updated_at = t
        elif kind == "join":
            add(f"joiner-{result.joined:05d}", t, True)
            observe(devices[f"joiner-{result.joined:05d}"], t)
            result.joined += 1
            push(t + rnd.expovariate(model.joiners_per_hour / 3600), "join")
        elif kind == "evaluate":
            result.evaluations += 1
            for d in devices.values():
                # online flips of flaky devices, and every device's first observation
                if d.id not in observed or observed[d.id].online != online(d, t):
                    observe(d, t)
            before = result.status
            now = T0 + timedelta(seconds=t)
            status = next_status(spec, before, version, list(observed.values()), FLEET, now)
            result.status = status
            new_plan = fleet_plan(status, FLEET, list(devices), {}, [], None, spec)
            if status.phase == "Halted" and result.halted_at is None:
                result.halted_at = t
                if result.breach_at is None:
                    result.breach_at = t  # a breach only this evaluation could see (offline, timed out)
            if status.phase == "Complete" and result.completed_at is None:
                result.completed_at = t
            if status.threshold != previous_threshold and status.phase == "Progressing":
                inside = {d for d in devices if in_share(rid, d, status.threshold)}
                earlier = set().union(*(w.devices for w in result.waves)) if result.waves else set()
                if status.wave >= len(result.waves):
                    wave = Wave(status.wave, t, status.percent, inside - earlier)
                    wave.waiting = {
                        d
                        for d in wave.devices
                        if devices[d].online
                        and devices[d].flaky_phase is None
                        and not devices[d].fails
                        and devices[d].running != version
                    }
                    if not wave.waiting:
                        wave.updated_at = t
                    result.waves.append(wave)
                previous_threshold = status.threshold
            if model.announce and spec.announce:
                changed = newly_offered(plan, new_plan)
                window = new_plan.announce_window
                step = window / len(changed) if changed else 0.0
                for i, (device, _version) in enumerate(changed):
                    push(t + i * step, "notify", device)
                result.notifications += len(changed)
            plan = new_plan
            if (
                status.phase in ("Halted", "Complete")
                and result.waves
                and _settled(result, devices, version, t)
            ):
                break
            push(t + model.evaluate_every, "evaluate")
    return result


def _settled(result: Result, devices: dict[str, _Device], version: str, t: float) -> bool:
    """Nothing more will change: no update under way."""
    return all(d.busy_until <= t for d in devices.values())
