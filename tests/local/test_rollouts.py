"""The local rollout loop: the shared rollout math over the fleet view, the plan file OtaFlux reads, and
the timeline of waves and halts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import yaml

from weatherfleet.local.resources import load_resources
from weatherfleet.local.rollouts import RolloutLoop
from weatherfleet.local.timeline import Timeline
from weatherfleet.local.workdir import LocalState, Workdir
from weatherfleet.rollout import DeviceObservation, RolloutPlan, rollout_id, share_of

from .conftest import FLEET, release, sensor, write_crs

DEVICES = [f"dev-{i:02d}" for i in range(1, 21)]
KEY = "weatherfleet/garden"


def folder(tmp_path, release_name: str | None):
    fleet = yaml.safe_load(yaml.safe_dump(FLEET))
    fleet["spec"]["rollout"]["release"] = release_name
    docs = [fleet, release("1.1.0"), release("1.2.0")] + [sensor(d, "garden") for d in DEVICES]
    write_crs(tmp_path / "crs", docs)
    return load_resources(tmp_path / "crs")


def test_waves_open_in_order_and_the_plan_follows(tmp_path):
    workdir = Workdir(tmp_path / "wd")
    loop = RolloutLoop(LocalState(), workdir.plan_path, Timeline(workdir.timeline_path))
    resources = folder(tmp_path, "firmware-1-1-0")
    now = datetime(2026, 1, 1, tzinfo=UTC)
    running = dict.fromkeys(DEVICES, "1.0.0")

    def observe():
        return {d: DeviceObservation(device_id=d, reported_version=v) for d, v in running.items()}

    percents = []
    for _ in range(40):
        plan = loop.step(resources, observe(), now)
        on_disk = RolloutPlan.model_validate_json(workdir.plan_path.read_text())
        assert on_disk == plan
        fleet = plan.fleets[KEY]
        percents.append(fleet.percent)
        # devices do what OtaFlux tells them
        running.update({d: plan.version_for(d) for d in DEVICES})
        now += timedelta(seconds=4)
    status = loop.state.rollouts[KEY]
    assert status.phase == "Complete" and status.updated == 20
    assert sorted(set(percents)) == [20.0, 50.0, 100.0]
    assert set(running.values()) == {"1.1.0"}
    waves = [e for e in loop.timeline.events() if e.kind == "wave"]
    assert [(e.wave, e.percent) for e in waves] == [(0, 20.0), (1, 50.0), (2, 100.0)]
    assert [e.kind for e in loop.timeline.events() if e.kind in ("complete", "halted")] == ["complete"]


def test_a_failure_in_wave_one_halts_and_closes_the_candidate(tmp_path):
    workdir = Workdir(tmp_path / "wd")
    loop = RolloutLoop(LocalState(), workdir.plan_path, Timeline(workdir.timeline_path))
    now = datetime(2026, 1, 1, tzinfo=UTC)
    stable = {d: DeviceObservation(device_id=d, reported_version="1.1.0") for d in DEVICES}
    # 1.1.0 completes first
    resources = folder(tmp_path, "firmware-1-1-0")
    for _ in range(12):
        loop.step(resources, stable, now)
        now += timedelta(seconds=11)
    assert loop.state.rollouts[KEY].phase == "Complete"
    resources = folder(tmp_path, "firmware-1-2-0")
    plan = loop.step(resources, stable, now)
    rid = rollout_id(KEY, "firmware-1-2-0", "1.2.0")
    wave1 = sorted(share_of(rid, DEVICES, 20))
    assert wave1 and all(plan.version_for(d) == "1.2.0" for d in wave1)
    victim = wave1[0]
    seen = dict(stable)
    seen[victim] = DeviceObservation(
        device_id=victim,
        reported_version="1.1.0",
        ota_state="rolled_back",
        ota_version="1.2.0",
        ota_reason="boot",
    )
    plan = loop.step(resources, seen, now + timedelta(seconds=1))
    status = loop.state.rollouts[KEY]
    assert status.phase == "Halted" and status.wave == 0
    assert [f.device_id for f in status.failed_devices] == [victim]
    assert {plan.version_for(d) for d in DEVICES} == {"1.1.0"}  # the candidate is closed for everyone
    kinds = [(e.kind, e.version) for e in loop.timeline.events() if e.kind in ("halted", "complete")]
    assert kinds == [("complete", "1.1.0"), ("halted", "1.2.0")]
    rolled = [e for e in loop.timeline.events() if e.kind == "ota" and e.state == "rolled_back"]
    assert [(e.device, e.version) for e in rolled] == [(victim, "1.2.0")]
