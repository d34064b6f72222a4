"""Wave decisions: when a rollout opens the next wave, completes, halts, pauses, aborts or rolls back.

Pure: no I/O, no clock (the caller passes `now`). `next_status` is idempotent — looking twice at the same
fleet at the same moment decides nothing new — so a restarted operator never advances a wave twice.

A wave advances when its bake time has passed (paused time not counted) *and* the success gate holds: at
least `successThreshold` % of the share's online devices that have not failed run the release (and at
least one does). An online device of the share that does not run the release `updateTimeout` after its
wave opened counts as failed ("timed out"), so a silent device cannot hold a wave forever: it either
updates, or fails and may halt the rollout. Offline devices are neither waited for nor counted as failed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .. import semver
from ..durations import parse_duration
from ..models.fleet import FailedDevice, RolloutSpec, RolloutStatus
from .authorisation import sign
from .devices import FAILED_STATES, DeviceObservation
from .plan import FleetPlan
from .ranks import open_share, rank

TERMINAL = ("Halted", "Complete")


def rollout_id(fleet_key: str, release: str, version: str) -> str:
    return f"{fleet_key}/{release}@{version}"


# --- clocks --------------------------------------------------------------------------------------------


def active_seconds(status: RolloutStatus, now: datetime) -> float:
    """How long the open wave has run, paused time not counted."""
    if status.wave_started_at is None:
        return 0.0
    total = (now - status.wave_started_at).total_seconds() - status.paused_seconds
    if status.paused_at is not None:
        total -= (now - status.paused_at).total_seconds()
    return max(0.0, total)


def _frozen(status: RolloutStatus, now: datetime) -> dict:
    return {} if status.paused_at is not None else {"paused_at": now}


def _thawed(status: RolloutStatus, now: datetime) -> dict:
    if status.paused_at is None:
        return {}
    stood = max(0.0, (now - status.paused_at).total_seconds())
    return {"paused_at": None, "paused_seconds": status.paused_seconds + stood}


# --- counting a share ----------------------------------------------------------------------------------


@dataclass
class Tally:
    opened: int = 0
    updated: int = 0
    pending: int = 0
    offline: int = 0
    joined: int = 0  # of the pending: members that joined after the wave opened (they do not hold it)
    failures: list[FailedDevice] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.failures)

    def counts(self) -> dict:
        return {
            "opened": self.opened,
            "updated": self.updated,
            "failed": self.failed,
            "pending": self.pending,
            "offline": self.offline,
            "failed_devices": self.failures,
        }


def tally(
    devices: list[DeviceObservation],
    rid: str,
    version: str,
    threshold: str | None,
    elapsed: float,
    timeout: float,
    wave_started_at: datetime | None,
    now: datetime,
) -> Tally:
    """Count the share the threshold opens: updated, failed (with reasons), pending, offline."""
    out = Tally()
    if threshold is None:
        return out
    for device in devices:
        if device.pinned_version or rank(rid, device.device_id) > threshold:
            continue
        out.opened += 1
        reason = None
        if device.ota_version == version and device.ota_state in FAILED_STATES:
            reason = device.ota_reason or device.ota_state
        elif device.reported_version == version:
            if device.online:
                out.updated += 1
                continue
            reason = "offline after updating"
        elif not device.online:
            out.offline += 1
            continue
        else:
            waited = elapsed
            late = (
                device.member_since is not None
                and wave_started_at is not None
                and device.member_since > wave_started_at
            )
            if late:
                waited = min(elapsed, (now - device.member_since).total_seconds())
            if waited < timeout:
                out.pending += 1
                out.joined += late
                continue
            reason = "timed out"
        out.failures.append(FailedDevice(deviceId=device.device_id, reason=reason))
    out.failures.sort(key=lambda f: f.device_id)
    return out


STARTED = ("downloading", "verifying", "installed", "booted", "confirmed", "failed", "rolled_back")


def started_floor(devices: list[DeviceObservation], rid: str, version: str) -> str | None:
    """The highest rank of a device that started on the release (downloading it or later, running it,
    failed on it): the share never leaves one out, so an updated device is never pulled back and a
    failure keeps counting. Devices only offered it may give their place to a joiner ranked before them."""
    ranks = [
        rank(rid, d.device_id)
        for d in devices
        if not d.pinned_version
        and (d.reported_version == version or (d.ota_version == version and d.ota_state in STARTED))
    ]
    return max(ranks) if ranks else None


def success_needed(spec: RolloutSpec, counted: Tally) -> int:
    """Devices that must run the release before the wave may advance: successThreshold % of the online
    devices of the share that have not failed, and at least one while the share is not empty. A member
    that joined after the wave opened and has not updated yet does not hold the wave (in a fleet that
    keeps growing, a 100 % gate would otherwise never hold); it still counts once it updated or failed."""
    base = counted.updated + counted.pending - counted.joined
    need = math.ceil(spec.success_threshold * base / 100 - 1e-9)
    return max(need, 1 if counted.opened else 0)


def _names(failures: list[FailedDevice], limit: int = 10) -> str:
    shown = ", ".join(f"{f.device_id} ({f.reason})" for f in failures[:limit])
    return shown + (f" and {len(failures) - limit} more" if len(failures) > limit else "")


def _wave_text(spec: RolloutSpec, wave: int, opened: int, eligible: int) -> str:
    return (
        f"wave {wave + 1} of {len(spec.waves)} open to {spec.waves[wave].percent:g}% "
        f"({opened} of {eligible} devices)"
    )


# --- the stable version ---------------------------------------------------------------------------------


def settled_version(status: RolloutStatus) -> str | None:
    """The version the fleet is settled on: what a new rollout offers outside its share."""
    if status.phase == "Complete" and status.version:
        return status.version
    return status.stable_version


def reported_stable(devices: list[DeviceObservation], candidate: str | None) -> str | None:
    """The version every device that reported one runs (the candidate aside), when they agree."""
    versions = {
        d.reported_version
        for d in devices
        if d.reported_version and d.reported_version != candidate and not d.pinned_version
    }
    return versions.pop() if len(versions) == 1 else None


def older_than_stable(version: str, stable: str | None) -> bool:
    if not stable or not semver.is_semver(version) or not semver.is_semver(stable):
        return False
    return semver.Version(version) < semver.Version(stable)


def downgrade_refusal(spec: RolloutSpec, status: RolloutStatus, version: str | None) -> str | None:
    """Why a new release is not rolled out: it is older than the fleet's stable version (a downgrade is a
    rollback, and must be asked for as one). None when it may start."""
    if version is None or spec.rollback or (status.release, status.version) == (spec.release, version):
        return None
    stable = settled_version(status)
    if older_than_stable(version, stable):
        return (
            f"{spec.release} ({version}) is older than the fleet's stable {stable}: waves only go forward; "
            "set spec.rollout.rollback to go back to the previous stable release"
        )
    return None


# --- the decision ---------------------------------------------------------------------------------------


def _start(
    spec: RolloutSpec,
    status: RolloutStatus,
    version: str,
    devices: list[DeviceObservation],
    fleet_key: str,
    now: datetime,
) -> RolloutStatus:
    """A new rollout of spec.release at its first wave; the settled version becomes its stable one."""
    stable = settled_version(status) or reported_stable(devices, version)
    rid = rollout_id(fleet_key, spec.release, version)
    eligible = [d.device_id for d in devices if not d.pinned_version]
    threshold = open_share(rid, eligible, spec.waves[0].percent, started_floor(devices, rid, version))
    opened = sum(1 for d in eligible if threshold is not None and rank(rid, d) <= threshold)
    return RolloutStatus(
        release=spec.release,
        version=version,
        stableVersion=stable,
        rollbackVersion=stable,
        phase="Progressing",
        wave=0,
        percent=spec.waves[0].percent,
        threshold=threshold,
        eligible=len(eligible),
        opened=opened,
        waveStartedAt=now,
        reason=f"{_wave_text(spec, 0, opened, len(eligible))} of a fleet on {stable or 'unknown versions'}",
    )


def _with_reported_stable(status: RolloutStatus, devices: list[DeviceObservation]) -> RolloutStatus:
    """A rollout that started without a known stable version learns it from the devices: the version
    they all report (the candidate aside). Until then, devices outside the share are offered nothing."""
    if status.stable_version is not None or status.phase in ("Complete", "Idle"):
        return status
    stable = reported_stable(devices, status.version)
    if stable is None:
        return status
    return status.model_copy(update={"stable_version": stable, "rollback_version": stable})


def _rolled_back(status: RolloutStatus, devices: list[DeviceObservation], now: datetime) -> RolloutStatus:
    if status.phase == "RolledBack":
        return status
    if status.version is None:
        return status.model_copy(update={"reason": "rollback asked for, but nothing was rolled out"})
    current = _with_reported_stable(status, devices)
    target = current.rollback_version
    if target is None:
        return current.model_copy(
            update={
                "phase": "Aborted",
                **_frozen(current, now),
                "reason": "rollback asked for, but no earlier stable release is known: the candidate is "
                "closed and every device keeps what it runs",
            }
        )
    return current.model_copy(
        update={
            "phase": "RolledBack",
            "stable_version": target,
            "rollback_version": None,
            "percent": 0.0,
            "paused_at": None,
            "reason": f"rolled back to {target} (spec.rollout.rollback): every device is offered it at once; "
            f"devices on {current.version} are authorised to go back",
        }
    )


def next_status(
    spec: RolloutSpec,
    status: RolloutStatus,
    release_version: str | None,
    devices: list[DeviceObservation],
    fleet_key: str,
    now: datetime,
) -> RolloutStatus:
    """The rollout status after looking at the fleet once.

    `devices`: every member the release may go to (exclusions left out; pinned ones marked by
    `pinned_version`, which keeps them out of the share and of the counts). `release_version`: the
    version of spec.release, None while it is not available (not found, signature not verified yet)."""
    if spec.release is None:
        return RolloutStatus(
            stableVersion=settled_version(status),
            rollbackVersion=status.rollback_version if status.phase != "RolledBack" else None,
            reason="no release selected",
        )
    if release_version is None:
        if status.phase in (*TERMINAL, "RolledBack", "Aborted", "Idle"):
            return status
        # The release went away mid-rollout (deleted, or its signature no longer verifies): offer it to
        # nobody, stop the clocks, and continue where it stood when it is back.
        return status.model_copy(
            update={"phase": "Idle", "reason": "release not available", **_frozen(status, now)}
        )

    same = (status.release, status.version) == (spec.release, release_version)
    if spec.rollback:
        # A rollback acts on the rollout as it stands, whatever release names now.
        return _rolled_back(status, devices, now)
    refusal = None if same else downgrade_refusal(spec, status, release_version)
    if refusal:
        return status.model_copy(update={"reason": refusal})

    current = status
    if not same:
        current = _start(spec, status, release_version, devices, fleet_key, now)
    elif status.phase in ("Aborted", "RolledBack") and not spec.abort:
        # The flag was cleared without a new release: this release starts over from its first wave.
        # Devices that kept it after an abort stay inside (started_floor).
        restart = RolloutStatus(stableVersion=status.stable_version, phase="Idle")
        current = _start(spec, restart, release_version, devices, fleet_key, now)
    current = _with_reported_stable(current, devices)

    rid = rollout_id(fleet_key, spec.release, release_version)
    eligible = [d.device_id for d in devices if not d.pinned_version]

    if current.phase in TERMINAL:
        return current
    if spec.abort:
        if current.phase == "Aborted":
            return current
        return current.model_copy(
            update={
                "phase": "Aborted",
                **_frozen(current, now),
                "reason": f"aborted (spec.rollout.abort) in wave {current.wave + 1}: {release_version} is "
                f"offered to no device any more; the {current.updated} that installed it keep it",
            }
        )

    wave = min(current.wave, len(spec.waves) - 1)
    percent = spec.waves[wave].percent
    threshold = current.threshold
    floor = started_floor(devices, rid, release_version)
    if not spec.paused:
        # The share is ceil(p·N/100) of the members now (a joiner takes its place, a member that left
        # frees its own), but never leaves out a device that started on the release.
        threshold = open_share(rid, eligible, percent, floor)
    thawed = {} if spec.paused else _thawed(current, now)
    clock = current.model_copy(update=thawed)
    elapsed = active_seconds(clock, now)
    timeout = parse_duration(spec.update_timeout)
    counted = tally(devices, rid, release_version, threshold, elapsed, timeout, clock.wave_started_at, now)
    base = {**counted.counts(), "threshold": threshold, "eligible": len(eligible), "percent": percent}

    if spec.failure_threshold.breached(counted.failed, counted.opened):
        return current.model_copy(
            update={
                **base,
                "phase": "Halted",
                "reason": f"failure threshold reached in wave {wave + 1}: {_names(counted.failures)}",
            }
        )
    if spec.paused:
        return current.model_copy(
            update={
                **base,
                **_frozen(current, now),
                "phase": "Paused",
                "reason": f"paused in {_wave_text(spec, wave, counted.opened, len(eligible))}: no device is "
                "newly offered the release and every clock stands still",
            }
        )

    bake = parse_duration(spec.waves[wave].bake_time)
    baked = elapsed > 0 and elapsed >= bake
    need = success_needed(spec, counted)
    succeeded = counted.updated >= need
    last = wave == len(spec.waves) - 1
    if baked and succeeded and last:
        return clock.model_copy(
            update={
                **base,
                "phase": "Complete",
                "stable_version": release_version,
                "rollback_version": current.stable_version,
                "reason": f"{counted.updated} devices updated",
            }
        )
    if baked and succeeded:
        nxt = spec.waves[wave + 1].percent
        wider = open_share(rid, eligible, nxt, floor)
        ahead = tally(devices, rid, release_version, wider, 0.0, timeout, now, now)
        if spec.failure_threshold.breached(ahead.failed, ahead.opened):
            # Devices of the next share already failed this version (an earlier attempt, a pin lifted
            # since): halt here rather than open to them, so a second look decides the same.
            return current.model_copy(
                update={
                    **base,
                    "phase": "Halted",
                    "reason": f"failure threshold reached before opening {nxt:g}%: {_names(ahead.failures)}",
                }
            )
        opened = clock.model_copy(
            update={
                **ahead.counts(),
                "threshold": wider,
                "eligible": len(eligible),
                "phase": "Progressing",
                "wave": wave + 1,
                "percent": nxt,
                "wave_started_at": now,
                "paused_at": None,
                "paused_seconds": 0.0,
                "reason": _wave_text(spec, wave + 1, ahead.opened, len(eligible)),
            }
        )
        # Look at the new wave once more at the same moment: what a second look would decide anyway.
        return next_status(spec, opened, release_version, devices, fleet_key, now)
    waiting = []
    if not baked and clock.wave_started_at is not None:
        ends = clock.wave_started_at.timestamp() + clock.paused_seconds + bake
        waiting.append(
            f"bakes until {datetime.fromtimestamp(ends, now.tzinfo).isoformat(timespec='seconds')}"
        )
    if not succeeded:
        waiting.append(
            f"{counted.updated} of {need} devices needed run {release_version} "
            f"(successThreshold {spec.success_threshold:g}% of "
            f"{counted.updated + counted.pending - counted.joined} online)"
        )
    text = _wave_text(spec, wave, counted.opened, len(eligible))
    return clock.model_copy(
        update={**base, "phase": "Progressing", "reason": f"{text}: {'; '.join(waiting) or 'advancing'}"}
    )


# --- the plan entry -------------------------------------------------------------------------------------


def fleet_plan(
    status: RolloutStatus,
    fleet_key: str,
    device_ids: list[str],
    pins: dict[str, str],
    exclusions: list[str],
    rollout_key: Ed25519PrivateKey | None = None,
    spec: RolloutSpec | None = None,
) -> FleetPlan:
    """The plan entry OtaFlux serves for a fleet in this rollout state.

    Progressing: the candidate inside the share, stable outside. Paused or aborted: nothing new inside the
    share (`hold`), stable outside. Halted: the candidate is closed, everyone is offered stable (devices
    that installed it go back). Rolled back or complete: no candidate, everyone is offered the stable
    version. No stable version known: devices that are offered nothing keep what they run.

    Halted or rolled back, with a stable version and `rollout_key`: the plan carries the signed
    authorisation for devices on the candidate to go back to it (rollout.authorisation); without the key
    such devices keep the candidate (they refuse an unauthorised downgrade). `spec`: announcements."""
    phase = status.phase
    open_ = phase in ("Progressing", "Paused", "Aborted", "Halted") and status.version is not None
    stable = settled_version(status)
    rid = rollout_id(fleet_key, status.release, status.version) if status.release and status.version else ""
    authorisation = None
    if rollout_key is not None and phase in ("Halted", "RolledBack") and stable and status.version != stable:
        authorisation = sign(rollout_key, rid, [status.version], stable)
    return FleetPlan(
        rolloutId=rid,
        stable=stable,
        candidate=status.version if open_ else None,
        percent=status.percent if phase in ("Progressing", "Paused", "Aborted", "Complete") else 0.0,
        threshold=status.threshold if open_ else None,
        halted=phase == "Halted",
        hold=phase in ("Paused", "Aborted"),
        pins=dict(sorted(pins.items())),
        exclusions=sorted(exclusions),
        devices=sorted(device_ids),
        authorisation=authorisation,
        announce=spec.announce if spec is not None else True,
        announceWindow=parse_duration(spec.announce_window) if spec is not None else 0.0,
    )
