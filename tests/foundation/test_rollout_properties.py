"""Property tests of the rollout math (weatherfleet.rollout): membership, plans and wave decisions."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from weatherfleet.models.fleet import RolloutSpec, RolloutStatus
from weatherfleet.rollout import BUCKETS, DeviceObservation, bucket, fleet_plan, in_share, next_status

T0 = datetime(2026, 3, 1, tzinfo=UTC)
ids = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True)
rollout_ids = st.text(min_size=1, max_size=60)
percents = st.floats(min_value=0, max_value=100, allow_nan=False)
fast = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- bucketing -------------------------------------------------------------------------------------------


def test_known_buckets_are_pinned():
    """Values computed once with hashlib (sha256 of rolloutId NUL deviceId, first 8 bytes, mod 10000).
    If these change, every fleet's membership reshuffles mid-rollout: never change the formula."""
    assert bucket("weatherfleet/garden/fw-1-1-0@1.1.0", "balcony-01") == 7872
    assert bucket("weatherfleet/garden/fw-1-1-0@1.1.0", "street-01") == 6497
    assert bucket("a", "b") == 2387
    assert bucket("fleet/x@2.0.0", "dev-00042") == 9535


@fast
@given(rollout_ids, ids)
def test_bucket_is_sha256_based_and_in_range(rid, device):
    digest = hashlib.sha256(rid.encode() + b"\x00" + device.encode()).digest()
    assert bucket(rid, device) == int.from_bytes(digest[:8], "big") % BUCKETS
    assert 0 <= bucket(rid, device) < BUCKETS


def test_bucket_is_the_same_in_another_process_with_another_hash_seed():
    pairs = [("r1", f"dev-{i}") for i in range(50)]
    code = f"from weatherfleet.rollout import bucket\nprint([bucket(r, d) for r, d in {pairs!r}])"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str([bucket(r, d) for r, d in pairs])


@fast
@given(rollout_ids, ids, percents, percents)
def test_inside_at_a_lower_percent_stays_inside_at_a_higher_one(rid, device, a, b):
    low, high = sorted((a, b))
    if in_share(rid, device, low):
        assert in_share(rid, device, high)


@fast
@given(rollout_ids, ids)
def test_inside_at_5_stays_inside_at_25_and_everyone_is_inside_at_100(rid, device):
    if in_share(rid, device, 5):
        assert in_share(rid, device, 25)
    assert in_share(rid, device, 100)
    assert not in_share(rid, device, 0)


@settings(max_examples=25, deadline=None)
@given(rollout_ids, st.sampled_from([1, 5, 10, 25, 50, 75, 90]))
def test_share_of_a_large_fleet_is_close_to_the_percentage(rid, percent):
    devices = [f"sensor-{i:05d}" for i in range(20_000)]
    share = sum(in_share(rid, d, percent) for d in devices) / len(devices)
    # Binomial standard deviation at 20,000 devices is at most 0.35 points; allow 1.5 (over 4 sigma).
    assert abs(share * 100 - percent) < 1.5


# --- plans ----------------------------------------------------------------------------------------------


def _status(phase: str, percent: float = 25.0) -> RolloutStatus:
    return RolloutStatus(
        release="fw-2", version="2.0.0", stableVersion="1.0.0", phase=phase, wave=1, percent=percent
    )


device_lists = st.lists(ids, min_size=1, max_size=60, unique=True)


@fast
@given(device_lists, st.data())
def test_pins_and_exclusions_always_win(devices, data):
    pinned = data.draw(st.lists(st.sampled_from(devices), unique=True))
    excluded = data.draw(st.lists(st.sampled_from(devices), unique=True))
    phase = data.draw(st.sampled_from(["Progressing", "Paused", "Halted", "Complete", "Idle"]))
    pins = {d: "0.9.0" for d in pinned}
    plan = fleet_plan(_status(phase, data.draw(percents)), "ns/f", devices, pins, excluded)
    for device in devices:
        version = plan.version_for(device)
        if device in pins:
            assert version == "0.9.0"
        elif device in excluded and phase != "Complete":
            assert version == "1.0.0"  # never the candidate


@fast
@given(device_lists, percents)
def test_a_halted_rollout_offers_the_candidate_to_nobody(devices, percent):
    plan = fleet_plan(_status("Halted", percent), "ns/f", devices, {}, [])
    assert plan.halted and plan.percent == 0
    assert all(plan.version_for(d) == "1.0.0" for d in devices)


@fast
@given(device_lists, st.data())
def test_a_complete_rollout_makes_the_candidate_stable(devices, data):
    plan = fleet_plan(_status("Complete", 100), "ns/f", devices, {}, [])
    assert plan.stable == "2.0.0" and plan.candidate is None
    assert all(plan.version_for(d) == "2.0.0" for d in devices)


# --- wave decisions -------------------------------------------------------------------------------------

specs = st.builds(
    lambda waves, bake, threshold, paused: RolloutSpec(
        release="fw-2",
        waves=[{"percent": p, "bakeTime": bake} for p in waves],
        failureThreshold=threshold,
        paused=paused,
    ),
    st.lists(st.integers(1, 99), max_size=3, unique=True).map(lambda ps: [*sorted(ps), 100]),
    st.sampled_from(["0s", "30s", "10m", "1h"]),
    st.one_of(
        st.integers(1, 5).map(lambda c: {"count": c}), st.integers(1, 50).map(lambda p: {"percent": p})
    ),
    st.booleans(),
)


def observations(device_ids):
    return st.lists(
        st.builds(
            DeviceObservation,
            device_id=st.sampled_from(device_ids),
            online=st.booleans(),
            reported_version=st.sampled_from([None, "1.0.0", "2.0.0"]),
            ota_state=st.sampled_from([None, "downloading", "confirmed", "failed", "rolled_back"]),
            ota_version=st.sampled_from([None, "2.0.0"]),
        ),
        max_size=len(device_ids),
        unique_by=lambda o: o.device_id,
    )


fleet_devices = [f"dev-{i:03d}" for i in range(40)]


@fast
@given(specs, observations(fleet_devices), st.integers(0, 7200))
def test_next_status_is_idempotent(spec, devices, elapsed):
    """Looking twice at the same fleet at the same moment decides nothing new (no double advance)."""
    first = next_status(spec, RolloutStatus(), "2.0.0", devices, "ns/f", T0)
    now = T0 + timedelta(seconds=elapsed)
    once = next_status(spec, first, "2.0.0", devices, "ns/f", now)
    twice = next_status(spec, once, "2.0.0", devices, "ns/f", now)
    assert twice == once


@fast
@given(specs, observations(fleet_devices), st.lists(st.integers(0, 7200), min_size=1, max_size=6))
def test_a_halted_rollout_never_opens_to_more_devices(spec, devices, steps):
    status = next_status(spec, RolloutStatus(), "2.0.0", devices, "ns/f", T0)
    now = T0
    halted_at = None
    for step in steps:
        now += timedelta(seconds=step)
        status = next_status(spec, status, "2.0.0", devices, "ns/f", now)
        if status.phase == "Halted" and halted_at is None:
            halted_at = status.percent
        if halted_at is not None:
            assert status.phase == "Halted" and status.percent <= halted_at
            plan = fleet_plan(status, "ns/f", fleet_devices, {}, [])
            assert all(plan.version_for(d) != "2.0.0" for d in fleet_devices)


@fast
@given(specs, observations(fleet_devices), st.lists(st.integers(0, 7200), min_size=1, max_size=6))
def test_percent_only_grows_and_waves_advance_one_at_a_time(spec, devices, steps):
    status = next_status(spec, RolloutStatus(), "2.0.0", devices, "ns/f", T0)
    now = T0
    for step in steps:
        now += timedelta(seconds=step)
        nxt = next_status(spec, status, "2.0.0", devices, "ns/f", now)
        assert nxt.percent >= status.percent or nxt.phase == "Halted"
        assert nxt.wave - status.wave in (0, 1)
        status = nxt


def test_breach_halts_and_names_the_devices():
    spec = RolloutSpec(
        release="fw-2", waves=[{"percent": 100, "bakeTime": "1m"}], failureThreshold={"count": 1}
    )
    bad = DeviceObservation(
        device_id="dev-007", ota_state="rolled_back", ota_version="2.0.0", ota_reason="boot loop"
    )
    status = next_status(spec, RolloutStatus(), "2.0.0", [bad], "ns/f", T0)
    assert status.phase == "Halted"
    assert "dev-007 (boot loop)" in status.reason
    assert [f.device_id for f in status.failed_devices] == ["dev-007"]


def test_healthy_fleet_walks_through_every_wave_to_complete():
    spec = RolloutSpec(
        release="fw-2",
        waves=[
            {"percent": 5, "bakeTime": "10m"},
            {"percent": 25, "bakeTime": "10m"},
            {"percent": 100, "bakeTime": "10m"},
        ],
        failureThreshold={"percent": 10},
    )
    devices = [DeviceObservation(device_id=d, reported_version="2.0.0") for d in fleet_devices]
    status, now, seen = RolloutStatus(), T0, []
    for _ in range(6):
        status = next_status(spec, status, "2.0.0", devices, "ns/f", now)
        seen.append((status.phase, status.percent))
        now += timedelta(minutes=11)
    assert seen[:3] == [("Progressing", 5.0), ("Progressing", 25.0), ("Progressing", 100.0)]
    assert seen[3] == ("Complete", 100.0)
    assert status.updated == len(fleet_devices)
