"""Rollout math: which devices a release is open to, and when a rollout advances, halts or completes.

Pure: no I/O, no clock (the caller passes `now`). Shared by the operator, OtaFlux and the local mode.

A device belongs to the candidate's share when `bucket(rolloutId, deviceId) < percent * 100`. The bucket
is derived from SHA-256, so it is the same in every process, on every Python, on every replica; and since
the comparison is monotone in `percent`, a device inside at 5 % stays inside at 25 %.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .durations import parse_duration
from .models.fleet import FailedDevice, RolloutSpec, RolloutStatus

BUCKETS = 10_000
OtaState = Literal[
    "idle",
    "checking",
    "downloading",
    "verifying",
    "installed",
    "booted",
    "confirmed",
    "rolled_back",
    "failed",
]
FAILED_STATES = ("failed", "rolled_back")


def bucket(rollout_id: str, device_id: str) -> int:
    """A stable number in 0..9999 for the device within this rollout."""
    digest = hashlib.sha256(f"{rollout_id}\x00{device_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def in_share(rollout_id: str, device_id: str, percent: float) -> bool:
    return bucket(rollout_id, device_id) < round(percent * 100)


# --- the plan: the contract between the operator (writer) and OtaFlux (reader) -------------------------


class PlanModel(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class FleetPlan(PlanModel):
    """What one fleet's devices are offered. Versions are tags in each device's own repository."""

    rollout_id: str = Field(default="", alias="rolloutId")
    stable: str | None = None
    candidate: str | None = None
    percent: float = 0.0
    halted: bool = False
    pins: dict[str, str] = Field(default_factory=dict)
    exclusions: list[str] = Field(default_factory=list)
    devices: list[str] = Field(default_factory=list)

    def version_for(self, device_id: str) -> str | None:
        """The version this device should run: pin, else candidate if inside the open share, else stable."""
        if device_id in self.pins:
            return self.pins[device_id]
        if (
            self.candidate
            and not self.halted
            and device_id not in self.exclusions
            and in_share(self.rollout_id, device_id, self.percent)
        ):
            return self.candidate
        return self.stable


class RolloutPlan(PlanModel):
    api_version: Literal["weatherfleet.io/v1alpha1"] = Field(
        default="weatherfleet.io/v1alpha1", alias="apiVersion"
    )
    kind: Literal["RolloutPlan"] = "RolloutPlan"
    fleets: dict[str, FleetPlan] = Field(default_factory=dict, description="keyed by namespace/name")

    def fleet_of(self, device_id: str) -> FleetPlan | None:
        for key in sorted(self.fleets):
            if device_id in self.fleets[key].devices:
                return self.fleets[key]
        return None

    def version_for(self, device_id: str) -> str | None:
        """None when no fleet of the plan covers the device (OtaFlux then serves the latest tag)."""
        fleet = self.fleet_of(device_id)
        return fleet.version_for(device_id) if fleet else None

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, indent=2)


# --- observations and wave decisions --------------------------------------------------------------------


class DeviceObservation(BaseModel):
    """What the operator knows of one device, from its retained status and its OTA events."""

    device_id: str
    online: bool = True
    reported_version: str | None = None
    ota_state: OtaState | None = None
    ota_version: str | None = None
    ota_reason: str | None = None
    pinned_version: str | None = None


def rollout_id(fleet_key: str, release: str, version: str) -> str:
    return f"{fleet_key}/{release}@{version}"


def _tally(
    spec_devices: list[DeviceObservation], rid: str, version: str, percent: float
) -> tuple[int, int, int, list[FailedDevice]]:
    updated = pending = 0
    failures: list[FailedDevice] = []
    for device in spec_devices:
        if device.pinned_version or not in_share(rid, device.device_id, percent):
            continue
        if device.ota_version == version and device.ota_state in FAILED_STATES:
            failures.append(
                FailedDevice(deviceId=device.device_id, reason=device.ota_reason or device.ota_state)
            )
        elif device.reported_version == version and not device.online:
            failures.append(FailedDevice(deviceId=device.device_id, reason="offline after updating"))
        elif device.reported_version == version:
            updated += 1
        else:
            pending += 1
    failures.sort(key=lambda f: f.device_id)
    return updated, len(failures), pending, failures


def next_status(
    spec: RolloutSpec,
    status: RolloutStatus,
    release_version: str | None,
    devices: list[DeviceObservation],
    fleet_key: str,
    now: datetime,
) -> RolloutStatus:
    """The rollout status after looking at the fleet once. Idempotent: calling it again with the same
    inputs returns the same status, so a restarted operator never advances a wave twice."""
    if spec.release is None or release_version is None:
        return status.model_copy(update={"phase": "Idle", "percent": 0.0, "reason": "no release selected"})

    current = status
    if status.release != spec.release or status.version != release_version:
        # A new release starts at wave 0; the one that completed before becomes the stable one.
        stable = status.version if status.phase == "Complete" else status.stable_version
        current = RolloutStatus(
            release=spec.release,
            version=release_version,
            stableVersion=stable,
            phase="Progressing",
            wave=0,
            percent=spec.waves[0].percent,
            waveStartedAt=now,
            reason=f"wave 1 of {len(spec.waves)} opened to {spec.waves[0].percent:g}%",
        )
    if current.phase in ("Halted", "Complete"):
        return current

    rid = rollout_id(fleet_key, spec.release, release_version)
    wave = min(current.wave, len(spec.waves) - 1)
    percent = spec.waves[wave].percent
    updated, failed, pending, failures = _tally(devices, rid, release_version, percent)
    opened = updated + failed + pending
    counts = {"updated": updated, "failed": failed, "pending": pending, "failed_devices": failures}

    if spec.failure_threshold.breached(failed, opened):
        names = ", ".join(f"{f.device_id} ({f.reason})" for f in failures)
        return current.model_copy(
            update={
                **counts,
                "phase": "Halted",
                "percent": percent,
                "reason": f"failure threshold reached: {names}",
            }
        )
    if spec.paused:
        return current.model_copy(
            update={**counts, "phase": "Paused", "percent": percent, "reason": "paused"}
        )

    # A wave bakes for at least an instant: with a "0s" bake time, a second look at the same moment must not
    # open the next wave too (next_status is idempotent; a restarted operator never advances twice).
    elapsed = (now - current.wave_started_at).total_seconds() if current.wave_started_at is not None else -1.0
    baked = elapsed > 0 and elapsed >= parse_duration(spec.waves[wave].bake_time)
    if baked and wave == len(spec.waves) - 1 and pending == 0:
        return current.model_copy(
            update={**counts, "phase": "Complete", "percent": 100.0, "reason": f"{updated} devices updated"}
        )
    if baked and wave < len(spec.waves) - 1:
        nxt = spec.waves[wave + 1].percent
        updated, failed, pending, failures = _tally(devices, rid, release_version, nxt)
        if spec.failure_threshold.breached(failed, updated + failed + pending):
            # Devices of the next share already failed this version (from an earlier attempt or a pin
            # lifted since): halt here rather than open to them, so a second look decides the same.
            names = ", ".join(f"{f.device_id} ({f.reason})" for f in failures)
            return current.model_copy(
                update={
                    "updated": updated,
                    "failed": failed,
                    "pending": pending,
                    "failed_devices": failures,
                    "phase": "Halted",
                    "percent": percent,
                    "reason": f"failure threshold reached before opening {nxt:g}%: {names}",
                }
            )
        return current.model_copy(
            update={
                "updated": updated,
                "failed": failed,
                "pending": pending,
                "failed_devices": failures,
                "phase": "Progressing",
                "wave": wave + 1,
                "percent": nxt,
                "wave_started_at": now,
                "reason": f"wave {wave + 2} of {len(spec.waves)} opened to {nxt:g}%",
            }
        )
    return current.model_copy(update={**counts, "phase": "Progressing", "percent": percent})


def fleet_plan(
    status: RolloutStatus,
    fleet_key: str,
    device_ids: list[str],
    pins: dict[str, str],
    exclusions: list[str],
) -> FleetPlan:
    """The plan entry OtaFlux serves for a fleet in this rollout state. A halted rollout closes the
    candidate at once; a complete one makes it the stable release."""
    complete = status.phase == "Complete"
    return FleetPlan(
        rolloutId=rollout_id(fleet_key, status.release, status.version)
        if status.release and status.version
        else "",
        stable=status.version if complete else status.stable_version,
        candidate=None if complete or status.phase == "Idle" else status.version,
        percent=0.0 if status.phase in ("Halted", "Idle") else status.percent,
        halted=status.phase == "Halted",
        pins=dict(sorted(pins.items())),
        exclusions=sorted(exclusions),
        devices=sorted(device_ids),
    )
