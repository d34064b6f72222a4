"""The local equivalent of the operator's rollout controller: the fleet reconciler the operator runs
(`weatherfleet.reconcilers.fleet.reconcile_fleet`, which decides waves with `weatherfleet.rollout`) fed
with the CR folder and the fleet view, and its plan written as the single-file RolloutPlan that OtaFlux
re-reads on change."""

from __future__ import annotations

from datetime import datetime

from ..models.fleet import RolloutStatus, SensorFleet
from ..reconcilers.fleet import FleetObservation, reconcile_fleet
from ..rollout import DeviceObservation, RolloutPlan
from .resources import Resources
from .timeline import Timeline, TimelineEvent
from .workdir import LocalState, write_atomically


def fleet_key(fleet: SensorFleet) -> str:
    return f"{fleet.metadata.namespace}/{fleet.metadata.name}"


def status_events(
    key: str, before: RolloutStatus, after: RolloutStatus, now: datetime
) -> list[TimelineEvent]:
    """What a person would want on the timeline when a fleet's rollout status moves."""
    common = {"time": now, "fleet": key, "release": after.release, "version": after.version}
    new_release = (before.release, before.version) != (after.release, after.version)
    events = []
    if after.phase in ("Progressing", "Halted", "Paused", "Complete") and (
        new_release or after.wave != before.wave
    ):
        events.append(
            TimelineEvent(
                kind="wave",
                wave=after.wave,
                percent=after.percent if after.phase == "Progressing" else None,
                message=f"{after.release} {after.version}: {after.reason}",
                **common,
            )
        )
    if after.phase != before.phase or new_release:
        kind = {"Halted": "halted", "Complete": "complete", "Paused": "paused"}.get(after.phase)
        if kind:
            events.append(
                TimelineEvent(
                    kind=kind,
                    wave=after.wave,
                    percent=after.percent,
                    message=f"{after.release} {after.version}: {after.reason}",
                    **common,
                )
            )
    return events


def device_events(
    before: dict[str, DeviceObservation], after: dict[str, DeviceObservation], now: datetime
) -> list[TimelineEvent]:
    """Firmware changes per device ('running' a version) and failed or rolled-back updates."""
    events = []
    for device, obs in sorted(after.items()):
        old = before.get(device)
        if obs.reported_version and (old is None or old.reported_version != obs.reported_version):
            events.append(
                TimelineEvent(
                    time=now,
                    kind="ota",
                    state="running",
                    device=device,
                    version=obs.reported_version,
                    message=f"{device} runs {obs.reported_version}",
                )
            )
        failed = obs.ota_state in ("rolled_back", "failed")
        if failed and (old is None or (old.ota_state, old.ota_version) != (obs.ota_state, obs.ota_version)):
            events.append(
                TimelineEvent(
                    time=now,
                    kind="ota",
                    state=obs.ota_state,
                    device=device,
                    version=obs.ota_version,
                    message=f"{device} {obs.ota_state.replace('_', ' ')} {obs.ota_version or ''}: "
                    f"{obs.ota_reason or ''}".rstrip(": "),
                )
            )
    return events


class RolloutLoop:
    """One step per tick: decide each fleet's rollout status, write the plan when it changed."""

    def __init__(
        self, state: LocalState, plan_path, timeline: Timeline, factory_version: str | None = None
    ) -> None:
        self.state = state
        # what provisioning put on the boards is the stable release until a rollout completes: without
        # it the plan would offer no version, and OtaFlux would fall back to the highest tag
        self.factory_version = factory_version
        self.plan_path = plan_path
        self.timeline = timeline
        self._written: str | None = None
        self._seen: dict[str, DeviceObservation] = {}

    def step(
        self, resources: Resources, observations: dict[str, DeviceObservation], now: datetime
    ) -> RolloutPlan:
        plan = RolloutPlan()
        for fleet in resources.fleets:
            key = fleet_key(fleet)
            namespace = fleet.metadata.namespace
            before = self.state.rollouts.get(key) or RolloutStatus(stableVersion=self.factory_version)
            current = fleet.model_copy(deep=True)
            current.status.rollout = before
            result = reconcile_fleet(
                current,
                FleetObservation(
                    now=now,
                    sensors=[s for s in resources.sensors if s.metadata.namespace == namespace],
                    releases={
                        r.metadata.name: r for r in resources.releases if r.metadata.namespace == namespace
                    },
                    devices=observations,
                    # no registry resolution writes FirmwareRelease status here; OtaFlux verifies every
                    # signature before serving and the devices verify again before installing
                    trust_unverified_releases=True,
                ),
            )
            after = result.status.rollout
            for event in status_events(key, before, after, now):
                self.timeline.append(event)
            self.state.rollouts[key] = after
            plan.fleets[key] = result.plan
        for event in device_events(self._seen, observations, now):
            self.timeline.append(event)
        self._seen = {k: v.model_copy() for k, v in observations.items()}
        text = plan.to_json()
        if text != self._written:
            write_atomically(self.plan_path, text)
            self._written = text
        return plan
