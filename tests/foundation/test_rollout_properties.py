"""Property tests of the rollout (weatherfleet.rollout): exact, stable waves; the plan OtaFlux follows;
success gates, clocks, abort and rollback; the events a person reads in `kubectl describe`."""

from __future__ import annotations

import hashlib
import math
import os
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from weatherfleet.models.fleet import RolloutSpec, RolloutStatus
from weatherfleet.rollout import (
    DeviceObservation,
    FleetPlan,
    RolloutPlan,
    fleet_plan,
    in_share,
    next_status,
    open_share,
    rank,
    rollout_id,
    share_of,
    share_size,
    transitions,
)
from weatherfleet.rollout.waves import started_floor

T0 = datetime(2026, 3, 1, tzinfo=UTC)
RID = "weatherfleet/garden/firmware-1-1-0@1.1.0"
RID_F2 = "ns/f/fw-2@2.0.0"
ids = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True)
rollout_ids = st.text(min_size=1, max_size=60)
wave_percents = st.one_of(
    st.sampled_from([1, 5, 10, 20, 25, 33.3, 50, 66.7, 75, 99.9, 100]), st.floats(0.01, 100, allow_nan=False)
)
# Fleet sizes from 1 to 100,000, most of them small (where rounding matters most).
fleet_sizes = st.one_of(st.integers(1, 60), st.integers(1, 2_000), st.integers(1, 100_000))
fast = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
big = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def fleet(n: int, prefix: str = "sensor") -> list[str]:
    return [f"{prefix}-{i:06d}" for i in range(n)]


def inside(rid: str, devices: list[str], threshold: str | None) -> set[str]:
    return {d for d in devices if in_share(rid, d, threshold)}


# --- the order and the size of a wave --------------------------------------------------------------------


def test_known_ranks_are_pinned():
    """sha256(rolloutId NUL deviceId) in hex. If these change, every fleet's order reshuffles mid-rollout:
    never change the formula."""
    assert rank("weatherfleet/garden/fw-1-1-0@1.1.0", "balcony-01").startswith("e5b97c133be3d290")
    assert rank("a", "b") == hashlib.sha256(b"a\x00b").hexdigest()


@fast
@given(rollout_ids, ids)
def test_rank_is_sha256_of_the_rollout_and_the_device(rid, device):
    assert rank(rid, device) == hashlib.sha256(rid.encode() + b"\x00" + device.encode()).hexdigest()


def test_ranks_are_the_same_in_another_process_with_another_hash_seed():
    pairs = [("r1", f"dev-{i}") for i in range(50)]
    code = f"from weatherfleet.rollout import rank\nprint([rank(r, d) for r, d in {pairs!r}])"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str([rank(r, d) for r, d in pairs])


@fast
@given(wave_percents, fleet_sizes)
def test_a_wave_holds_exactly_ceil_p_n_over_100_and_at_least_one(percent, n):
    """The percentage as written (33.3 means 33.3, not the float just below it), in exact arithmetic."""
    exact = Fraction(repr(percent)) * n / 100
    assert share_size(percent, n) == min(n, max(1, math.ceil(exact)))
    assert 1 <= share_size(percent, n) <= n


@pytest.mark.parametrize(
    ("percent", "n", "expected"),
    [(5, 3, 1), (25, 3, 1), (20, 10, 2), (50, 10, 5), (34, 7, 3), (20, 5, 1), (33.3, 3, 1), (100, 7, 7),
     (5, 20, 1), (25, 20, 5), (5, 40, 2), (25, 40, 10), (20, 7, 2), (50, 7, 4), (10, 100_000, 10_000)],
)  # fmt: skip
def test_wave_sizes_users_would_compute_by_hand(percent, n, expected):
    assert share_size(percent, n) == expected
    assert len(share_of(RID, fleet(n), percent)) == expected


@big
@given(rollout_ids, wave_percents, fleet_sizes)
def test_a_fresh_wave_opens_to_exactly_that_many_members_of_any_fleet(rid, percent, n):
    devices = fleet(n)
    threshold = open_share(rid, devices, percent)
    assert len(inside(rid, devices, threshold)) == share_size(percent, n)


@fast
@given(rollout_ids, st.lists(ids, min_size=1, max_size=80, unique=True), wave_percents, st.randoms())
def test_the_order_does_not_depend_on_how_the_fleet_is_listed(rid, devices, percent, rnd):
    shuffled = list(devices)
    rnd.shuffle(shuffled)
    assert open_share(rid, devices, percent) == open_share(rid, shuffled, percent)


@big
@given(rollout_ids, fleet_sizes, st.lists(wave_percents, min_size=2, max_size=5))
def test_waves_are_monotone_a_device_inside_stays_inside(rid, n, percents):
    devices = fleet(n)
    threshold, before = None, set()
    for percent in sorted(percents):
        threshold = open_share(rid, devices, percent, threshold)
        now = inside(rid, devices, threshold)
        assert before <= now
        assert len(now) == share_size(percent, n)  # no churn: exact at every wave
        before = now


@big
@given(
    st.integers(1, 3_000),
    st.sampled_from([1, 5, 20, 50]),
    st.lists(st.tuples(st.integers(0, 40), st.integers(0, 40), st.floats(0, 1)), min_size=1, max_size=8),
    st.integers(),
)
def test_joiners_take_their_place_leavers_free_theirs_and_updated_devices_are_never_pulled_back(
    n, percent, steps, seed
):
    """Each step some members leave, some join, and some devices of the share start on the release; the
    operator looks again. The wave is exactly ceil(p·N/100) of the members now, except that a device that
    started on the release is never left out (only devices merely offered it give their place)."""
    rnd = random.Random(seed)
    spec = RolloutSpec(release="fw-2", waves=[{"percent": percent, "bakeTime": "1h"}, {"percent": 100}])
    members = fleet(n)
    started: set[str] = set()
    status, now, joined = RolloutStatus(stableVersion="1.0.0"), T0, 0
    for leaving, joining, starting in steps:
        for _ in range(min(leaving, len(members) - 1)):
            gone = rnd.choice(members)
            members.remove(gone)
            started.discard(gone)
        members += [f"joiner-{joined + i:05d}" for i in range(joining)]
        joined += joining
        devices = [
            DeviceObservation(device_id=d, reported_version="2.0.0" if d in started else "1.0.0")
            for d in members
        ]
        status = next_status(spec, status, "2.0.0", devices, "ns/f", now)
        inside = {d for d in members if rank(RID_F2, d) <= status.threshold}
        assert started <= inside  # updated devices are never pulled back
        floor = max((rank(RID_F2, d) for d in started), default="")
        expected = max(share_size(percent, len(members)), sum(rank(RID_F2, d) <= floor for d in members))
        assert len(inside) == expected == status.opened  # exact, but for the ones that started
        started |= {d for d in inside if rnd.random() < starting}
        now += timedelta(seconds=30)


# --- the plan OtaFlux follows ----------------------------------------------------------------------------


def status_of(phase: str, **kw) -> RolloutStatus:
    values = {"release": "fw-2", "version": "2.0.0", "stableVersion": "1.0.0", "phase": phase, "wave": 0,
              "percent": 25.0, **kw}  # fmt: skip
    return RolloutStatus.model_validate(values)


phases = st.sampled_from(["Idle", "Progressing", "Paused", "Halted", "Aborted", "RolledBack", "Complete"])
device_lists = st.lists(ids, min_size=1, max_size=60, unique=True)


@fast
@given(device_lists, st.data())
def test_the_plan_never_offers_the_candidate_outside_its_open_share(devices, data):
    rid = rollout_id("ns/f", "fw-2", "2.0.0")
    phase = data.draw(phases)
    stable = data.draw(st.sampled_from([None, "1.0.0"]))
    threshold = open_share(rid, devices, data.draw(wave_percents))
    pinned = data.draw(st.lists(st.sampled_from(devices), unique=True))
    excluded = data.draw(st.lists(st.sampled_from(devices), unique=True))
    status = status_of(phase, stableVersion=stable, threshold=threshold)
    plan = fleet_plan(status, "ns/f", devices, {d: "0.9.0" for d in pinned}, excluded)
    share = inside(rid, devices, threshold)
    for device in devices:
        offered = plan.version_for(device)
        if device in pinned:
            assert offered == "0.9.0"  # pins win
        elif offered == "2.0.0" and phase != "Complete":
            assert phase == "Progressing" and device in share and device not in excluded
        if phase in ("Halted", "Paused", "Aborted", "RolledBack", "Idle") and device not in pinned:
            assert offered != "2.0.0"  # closed or on hold: no device is newly offered the candidate
        if stable is None and device not in share and device not in pinned and phase != "Complete":
            assert offered is None  # never told a stable version: no update
    assert plan.version_for("not-a-member") is None
    assert RolloutPlan(fleets={"ns/f": plan}).version_for("not-a-member") is None


def test_a_plan_is_a_few_hundred_bytes_plus_the_roster():
    devices = fleet(20_000)
    rid = rollout_id("ns/f", "fw-2", "2.0.0")
    status = status_of("Progressing", threshold=open_share(rid, devices, 25))
    small = fleet_plan(status, "ns/f", [], {}, []).model_dump_json(by_alias=True)
    whole = fleet_plan(status, "ns/f", devices, {}, []).model_dump_json(by_alias=True)
    assert len(small) < 400  # the decision: one threshold, whatever the fleet size
    assert len(whole) - len(small) <= 17 * len(devices)  # the roster: quoted ids and commas, nothing more


def test_halted_offers_stable_to_everyone_paused_holds_the_share():
    devices = fleet(40)
    rid = rollout_id("ns/f", "fw-2", "2.0.0")
    threshold = open_share(rid, devices, 25)
    share = inside(rid, devices, threshold)
    halted = fleet_plan(status_of("Halted", threshold=threshold), "ns/f", devices, {}, [])
    assert {halted.version_for(d) for d in devices} == {"1.0.0"}
    assert {halted.decide(d).why for d in share} == {"halted"}
    paused = fleet_plan(status_of("Paused", threshold=threshold), "ns/f", devices, {}, [])
    assert {paused.version_for(d) for d in share} == {None}  # who took it keeps it, who did not waits
    assert {paused.version_for(d) for d in set(devices) - share} == {"1.0.0"}
    complete = fleet_plan(status_of("Complete", stableVersion="2.0.0"), "ns/f", devices, {}, [])
    assert complete.candidate is None and {complete.version_for(d) for d in devices} == {"2.0.0"}


# --- wave decisions ----------------------------------------------------------------------------------------

specs = st.builds(
    lambda waves, bake, threshold, success, paused: RolloutSpec(
        release="fw-2",
        waves=[{"percent": p, "bakeTime": bake} for p in waves],
        failureThreshold=threshold,
        successThreshold=success,
        updateTimeout="30m",
        paused=paused,
    ),
    st.lists(st.integers(1, 99), max_size=3, unique=True).map(lambda ps: [*sorted(ps), 100]),
    st.sampled_from(["0s", "30s", "10m", "1h"]),
    st.one_of(
        st.integers(1, 5).map(lambda c: {"count": c}), st.integers(1, 50).map(lambda p: {"percent": p})
    ),
    st.sampled_from([50, 90, 100]),
    st.booleans(),
)
fleet_devices = fleet(40, "dev")


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


def everyone(observed: list[DeviceObservation], devices=fleet_devices) -> list[DeviceObservation]:
    """Every member, with what was observed of it (a member nothing was heard from is offline)."""
    known = {o.device_id: o for o in observed}
    return [known.get(d) or DeviceObservation(device_id=d, online=False) for d in devices]


@fast
@given(specs, observations(fleet_devices), st.integers(0, 7200))
def test_next_status_is_idempotent(spec, observed, elapsed):
    """Looking twice at the same fleet at the same moment decides nothing new (no double advance)."""
    devices = everyone(observed)
    first = next_status(spec, RolloutStatus(), "2.0.0", devices, "ns/f", T0)
    now = T0 + timedelta(seconds=elapsed)
    once = next_status(spec, first, "2.0.0", devices, "ns/f", now)
    twice = next_status(spec, once, "2.0.0", devices, "ns/f", now)
    assert twice == once


@fast
@given(specs, observations(fleet_devices), st.lists(st.integers(0, 7200), min_size=1, max_size=6))
def test_a_halted_rollout_never_opens_to_more_devices(spec, observed, steps):
    devices = everyone(observed)
    status = next_status(spec, RolloutStatus(), "2.0.0", devices, "ns/f", T0)
    now, halted_at = T0, None
    for step in steps:
        now += timedelta(seconds=step)
        status = next_status(spec, status, "2.0.0", devices, "ns/f", now)
        if status.phase == "Halted" and halted_at is None:
            halted_at = status.threshold
        if halted_at is not None:
            assert status.phase == "Halted" and status.threshold == halted_at
            plan = fleet_plan(status, "ns/f", fleet_devices, {}, [])
            assert all(plan.version_for(d) != "2.0.0" for d in fleet_devices)


@fast
@given(specs, observations(fleet_devices), st.lists(st.integers(0, 7200), min_size=1, max_size=6))
def test_the_share_only_grows_and_waves_advance_one_at_a_time_on_success(spec, observed, steps):
    devices = everyone(observed)
    status = next_status(spec, RolloutStatus(), "2.0.0", devices, "ns/f", T0)
    rid = rollout_id("ns/f", "fw-2", "2.0.0")
    floor = started_floor(devices, rid, "2.0.0")  # devices already on it (from before) stay inside
    assert status.threshold == open_share(rid, fleet_devices, spec.waves[0].percent, floor)
    assert status.opened == max(
        share_size(spec.waves[0].percent, len(devices)),
        sum(rank(rid, d) <= (floor or "") for d in fleet_devices),
    )
    now = T0
    for step in steps:
        now += timedelta(seconds=step)
        nxt = next_status(spec, status, "2.0.0", devices, "ns/f", now)
        assert (nxt.threshold or "") >= (status.threshold or "")
        assert nxt.wave - status.wave in (0, 1)
        if nxt.wave > status.wave or (nxt.phase == "Complete" and status.phase != "Complete"):
            # the gate: the wave that was left behind had enough of its online devices on 2.0.0
            assert status.phase in ("Progressing", "Paused") and not spec.paused
            assert status.updated >= 1
        status = nxt


def test_a_wave_waits_for_its_devices_and_advances_when_they_confirm():
    spec = RolloutSpec(
        release="fw-2", waves=[{"percent": 25, "bakeTime": "10m"}, {"percent": 100, "bakeTime": "10m"}]
    )
    running = dict.fromkeys(fleet_devices, "1.0.0")

    def seen():
        return [DeviceObservation(device_id=d, reported_version=v) for d, v in running.items()]

    status = next_status(spec, RolloutStatus(), "2.0.0", seen(), "ns/f", T0)
    assert (status.phase, status.opened, status.stable_version) == ("Progressing", 10, "1.0.0")
    share = inside(rollout_id("ns/f", "fw-2", "2.0.0"), fleet_devices, status.threshold)
    later = T0 + timedelta(minutes=20)
    status = next_status(spec, status, "2.0.0", seen(), "ns/f", later)
    assert status.wave == 0 and "0 of 10 devices needed run 2.0.0" in status.reason  # baked, nobody updated
    running.update(dict.fromkeys(sorted(share)[:9], "2.0.0"))
    status = next_status(spec, status, "2.0.0", seen(), "ns/f", later)
    assert status.wave == 0 and status.updated == 9 and status.pending == 1
    running.update(dict.fromkeys(share, "2.0.0"))
    status = next_status(spec, status, "2.0.0", seen(), "ns/f", later)
    assert status.wave == 1 and status.opened == 40 and status.reason.startswith("wave 2 of 2 open to 100%")


def test_offline_devices_are_not_waited_for_and_a_silent_online_one_times_out():
    spec = RolloutSpec(
        release="fw-2",
        waves=[{"percent": 20, "bakeTime": "1m"}, {"percent": 100, "bakeTime": "1m"}],
        failureThreshold={"count": 2},
        updateTimeout="30m",
    )
    devices = fleet(10, "dev")
    rid = rollout_id("ns/f", "fw-2", "2.0.0")
    first, second = sorted(share_of(rid, devices, 20))

    def seen(states):
        return [
            DeviceObservation(device_id=d, **{"reported_version": "1.0.0", **states.get(d, {})})
            for d in devices
        ]

    status = next_status(spec, RolloutStatus(), "2.0.0", seen({}), "ns/f", T0)
    views = seen({first: {"reported_version": "2.0.0"}, second: {"online": False}})
    status = next_status(spec, status, "2.0.0", views, "ns/f", T0 + timedelta(minutes=5))
    assert status.wave == 1 and status.offline == 1  # 1 of 1 online device confirmed; the offline one
    assert status.pending == 8 and status.failed == 0  # is neither waited for nor failed
    views = seen({first: {"reported_version": "2.0.0"}, second: {"online": False}})
    status = next_status(spec, status, "2.0.0", views, "ns/f", T0 + timedelta(minutes=40))
    assert status.phase == "Halted" and status.failed == 8  # 8 online devices silent for 35 min
    assert {f.reason for f in status.failed_devices} == {"timed out"}
    assert second not in {f.device_id for f in status.failed_devices} and status.offline == 1


def test_timeouts_make_a_silent_wave_halt_with_the_reason_a_user_reads():
    spec = RolloutSpec(release="fw-2", waves=[{"percent": 100, "bakeTime": "1m"}], updateTimeout="15m")
    devices = [DeviceObservation(device_id="dev-001", reported_version="1.0.0")]
    status = next_status(spec, RolloutStatus(), "2.0.0", devices, "ns/f", T0)
    status = next_status(spec, status, "2.0.0", devices, "ns/f", T0 + timedelta(minutes=16))
    assert status.phase == "Halted"
    assert status.reason == "failure threshold reached in wave 1: dev-001 (timed out)"
    [event] = transitions(RolloutStatus(), status)[1:]
    assert (event.type, event.reason) == ("Warning", "RolloutHalted")
    assert "dev-001 (timed out)" in event.message


def test_pause_stops_every_clock_and_resume_continues_where_it_stopped():
    spec = RolloutSpec(
        release="fw-2",
        waves=[{"percent": 50, "bakeTime": "12s"}, {"percent": 100, "bakeTime": "12s"}],
        updateTimeout="10s",
    )
    paused = spec.model_copy(update={"paused": True})
    devices = [DeviceObservation(device_id=d, reported_version="1.0.0") for d in fleet(4, "dev")]
    at = lambda s: T0 + timedelta(seconds=s)  # noqa: E731
    status = next_status(spec, RolloutStatus(), "2.0.0", devices, "ns/f", at(0))
    status = next_status(spec, status, "2.0.0", devices, "ns/f", at(4))
    status = next_status(paused, status, "2.0.0", devices, "ns/f", at(5))  # the 16 s pause of the issue
    assert status.phase == "Paused" and status.paused_at == at(5)
    status = next_status(paused, status, "2.0.0", devices, "ns/f", at(21))
    assert status.phase == "Paused" and status.failed == 0  # no timeout while the clocks stand still
    status = next_status(spec, status, "2.0.0", devices, "ns/f", at(21))
    assert status.phase == "Progressing" and status.paused_seconds == 16 and status.wave == 0
    assert status.failed == 0  # 5 s of 10 s have run
    status = next_status(spec, status, "2.0.0", devices, "ns/f", at(27))
    assert status.failed == 2 and status.wave == 0  # 11 s of wave time: the two silent devices time out
    events = [t.reason for t in transitions(status_of("Paused"), status_of("Progressing"))]
    assert events == ["RolloutResumed"]


def test_abort_closes_the_candidate_and_clearing_it_starts_over_keeping_who_took_it():
    spec = RolloutSpec(release="fw-2", waves=[{"percent": 25, "bakeTime": "1m"}, {"percent": 100}])
    devices = [DeviceObservation(device_id=d, reported_version="1.0.0") for d in fleet_devices]
    status = next_status(spec, RolloutStatus(), "2.0.0", devices, "ns/f", T0)
    aborted = next_status(spec.model_copy(update={"abort": True}), status, "2.0.0", devices, "ns/f", T0)
    assert aborted.phase == "Aborted" and "spec.rollout.abort" in aborted.reason
    plan = fleet_plan(aborted, "ns/f", fleet_devices, {}, [])
    assert "2.0.0" not in {plan.version_for(d) for d in fleet_devices}
    assert [(t.type, t.reason) for t in transitions(status, aborted)] == [("Warning", "RolloutAborted")]
    again = next_status(spec, aborted, "2.0.0", devices, "ns/f", T0 + timedelta(minutes=5))
    assert again.phase == "Progressing" and again.wave == 0 and again.threshold >= aborted.threshold
    assert [t.reason for t in transitions(aborted, again)] == ["RolloutStarted"]


def test_rollback_is_immediate_to_the_previous_stable_and_authorised():
    spec = RolloutSpec(release="fw-2", waves=[{"percent": 100, "bakeTime": "1m"}])
    devices = [DeviceObservation(device_id=d, reported_version="2.0.0") for d in fleet_devices]
    status = next_status(spec, RolloutStatus(stableVersion="1.0.0"), "2.0.0", devices, "ns/f", T0)
    status = next_status(spec, status, "2.0.0", devices, "ns/f", T0 + timedelta(minutes=2))
    assert status.phase == "Complete" and status.stable_version == "2.0.0"
    assert status.rollback_version == "1.0.0"
    back = next_status(spec.model_copy(update={"rollback": True}), status, "2.0.0", devices, "ns/f", T0)
    assert back.phase == "RolledBack" and back.stable_version == "1.0.0"
    plan = fleet_plan(back, "ns/f", fleet_devices, {}, [])
    assert {plan.version_for(d) for d in fleet_devices} == {"1.0.0"}  # everyone, at once: no waves
    [event] = transitions(status, back)
    assert (event.type, event.reason) == ("Warning", "RolloutRolledBack")
    assert "rolled back to 1.0.0" in event.message


def test_a_downgrade_is_not_rolled_out_in_waves():
    spec = RolloutSpec(release="fw-1", waves=[{"percent": 100, "bakeTime": "1m"}])
    done = status_of("Complete", stableVersion="2.0.0", rollbackVersion="1.0.0")
    status = next_status(spec, done, "1.0.0", [], "ns/f", T0)
    assert status.phase == "Complete" and status.version == "2.0.0"
    assert "older than the fleet's stable 2.0.0" in status.reason and "rollback" in status.reason


def test_the_first_rollout_learns_the_stable_version_from_the_devices():
    spec = RolloutSpec(release="fw-2", waves=[{"percent": 5, "bakeTime": "1m"}, {"percent": 100}])
    silent = next_status(spec, RolloutStatus(), "2.0.0", everyone([]), "ns/f", T0)
    assert silent.stable_version is None  # render: nothing observed, so outside the share: no update
    assert {fleet_plan(silent, "ns/f", fleet_devices, {}, []).version_for(d) for d in fleet_devices} == {
        None,
        "2.0.0",
    }
    reports = [DeviceObservation(device_id=d, reported_version="1.0.0") for d in fleet_devices]
    learnt = next_status(spec, silent, "2.0.0", reports, "ns/f", T0)
    assert learnt.stable_version == "1.0.0" and learnt.rollback_version == "1.0.0"
    mixed = [*reports[:-1], DeviceObservation(device_id=fleet_devices[-1], reported_version="0.9.0")]
    assert next_status(spec, RolloutStatus(), "2.0.0", mixed, "ns/f", T0).stable_version is None


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
    running = dict.fromkeys(fleet_devices, "1.0.0")
    status, now, seen = RolloutStatus(), T0, []
    for _ in range(6):
        devices = [DeviceObservation(device_id=d, reported_version=v) for d, v in running.items()]
        status = next_status(spec, status, "2.0.0", devices, "ns/f", now)
        seen.append((status.phase, status.percent, status.opened))
        plan = fleet_plan(status, "ns/f", fleet_devices, {}, [])
        running.update({d: v for d in fleet_devices if (v := plan.version_for(d))})
        now += timedelta(minutes=11)
    assert seen[:3] == [("Progressing", 5.0, 2), ("Progressing", 25.0, 10), ("Progressing", 100.0, 40)]
    assert seen[3][0] == "Complete"
    assert status.updated == len(fleet_devices)


@settings(max_examples=50, deadline=None)
@given(
    st.integers(1, 400), st.sampled_from([[5, 25, 100], [20, 50, 100], [1, 10, 100], [100]]), st.integers()
)
def test_updated_devices_are_never_pulled_back_while_a_rollout_goes_forward(n, percents, seed):
    """Devices join and leave, some run the candidate: while the rollout progresses, pauses or aborts, a
    device running the candidate is offered the candidate or nothing, never the old version."""
    rnd = random.Random(seed)
    spec = RolloutSpec(release="fw-2", waves=[{"percent": p, "bakeTime": "1m"} for p in percents])
    members = fleet(n)
    running = dict.fromkeys(members, "1.0.0")
    status, now = RolloutStatus(), T0
    for step in range(12):
        if step % 3 == 2 and len(members) > 1:
            gone = rnd.choice(members)
            members.remove(gone)
            running.pop(gone)
        for i in range(rnd.randint(0, 3)):
            members.append(f"joiner-{step}-{i}")
            running[members[-1]] = "1.0.0"
        flags = rnd.choice([{}, {}, {"paused": True}, {"abort": True}])
        current = spec.model_copy(update=flags)
        devices = [DeviceObservation(device_id=d, reported_version=running[d]) for d in members]
        status = next_status(current, status, "2.0.0", devices, "ns/f", now)
        assume(status.phase != "Halted")
        plan = fleet_plan(status, "ns/f", members, {}, [])
        for device in members:
            if running[device] == "2.0.0" and status.phase != "Complete":
                assert plan.version_for(device) in ("2.0.0", None), (device, status.phase)
            if rnd.random() < 0.7 and plan.version_for(device):
                running[device] = plan.version_for(device)
        now += timedelta(seconds=rnd.choice([10, 70]))


def test_transition_table_names_every_event_a_user_sees():
    start = next_status(
        RolloutSpec(release="fw-2", waves=[{"percent": 50}, {"percent": 100}]),
        RolloutStatus(stableVersion="1.0.0"),
        "2.0.0",
        [DeviceObservation(device_id="d1", reported_version="1.0.0")],
        "ns/f",
        T0,
    )
    [started] = transitions(RolloutStatus(), start)
    assert (started.type, started.reason) == ("Normal", "RolloutStarted")
    assert started.message == (
        "release fw-2 (2.0.0): wave 1 open to 50% (1 of 1 devices); the others are offered 1.0.0"
    )
    cases = {
        ("Progressing", "Paused"): ("Normal", "RolloutPaused"),
        ("Paused", "Progressing"): ("Normal", "RolloutResumed"),
        ("Progressing", "Halted"): ("Warning", "RolloutHalted"),
        ("Progressing", "Aborted"): ("Warning", "RolloutAborted"),
        ("Complete", "RolledBack"): ("Warning", "RolloutRolledBack"),
        ("Progressing", "Complete"): ("Normal", "RolloutComplete"),
    }
    for (before, after), expected in cases.items():
        events = transitions(status_of(before), status_of(after))
        assert [(e.type, e.reason) for e in events] == [expected], (before, after)
    assert transitions(status_of("Progressing"), status_of("Progressing")) == []
    advanced = transitions(status_of("Progressing"), status_of("Progressing", wave=1))
    assert [e.reason for e in advanced] == ["RolloutAdvanced"]


def test_share_sizes_are_what_random_fleets_get():
    rnd = random.Random(7)
    for _ in range(200):
        n = rnd.randint(1, 500)
        p = rnd.choice([5, 10, 20, 25, 33, 50, 100])
        rid = f"r{rnd.random()}"
        assert len(share_of(rid, fleet(n), p)) == max(1, math.ceil(p * n / 100))


def test_plan_model_of_older_operators_still_reads():
    """A plan written before thresholds existed (percent, no threshold) offers the candidate to nobody."""
    plan = FleetPlan.model_validate({"rolloutId": "x", "stable": "1.0.0", "candidate": "2.0.0", "percent": 50,
                                     "devices": ["a", "b"]})  # fmt: skip
    assert {plan.version_for("a"), plan.version_for("b")} == {"1.0.0"}


# --- one membership rule ---------------------------------------------------------------------------------


def test_a_sensor_two_fleets_select_is_a_member_of_the_first_only_everywhere(build):
    """The operator (reconcile_fleet with the namespace's fleets), render and the local mode
    (Resources.members) agree: the second fleet neither configures nor waits for a sensor the first one
    claims, so its rollout completes."""
    from weatherfleet.models import FirmwareRelease, SensorFleet, WeatherSensor
    from weatherfleet.reconcilers.fleet import FleetObservation, members_of, reconcile_fleet
    from weatherfleet.reconcilers.hydrate import Resources

    wide = {"matchExpressions": [{"key": "weatherfleet.io/fleet", "operator": "Exists"}]}
    a = SensorFleet.model_validate(build.fleet("a"))
    b = SensorFleet.model_validate(
        build.fleet(
            "b", selector=wide, rollout={"release": "fw-2", "waves": [{"percent": 100, "bakeTime": "1s"}]}
        )
    )
    sensors = [
        WeatherSensor.model_validate(build.sensor("dev-01", "a")),
        WeatherSensor.model_validate(build.sensor("dev-02", "b")),
    ]
    release = FirmwareRelease.model_validate(build.release("fw-2", "2.0.0"))
    assert [s.spec.device_id for s in members_of(b, sensors, [a, b])] == ["dev-02"]
    assert [s.spec.device_id for s in Resources(sensors=sensors, fleets=[a, b]).members(b)] == ["dev-02"]
    assert [s.spec.device_id for s in members_of(b, sensors)] == ["dev-01", "dev-02"]  # alone: its selector
    seen = {"dev-02": DeviceObservation(device_id="dev-02", reported_version="2.0.0")}
    status = b
    for step in range(3):
        observation = FleetObservation(
            now=T0 + timedelta(seconds=5 * step),
            sensors=sensors,
            fleets=[a, b],
            releases={"fw-2": release},
            devices=seen,
            last_seen={"dev-02": T0 + timedelta(seconds=5 * step)},
        )
        result = reconcile_fleet(status, observation)
        status = status.model_copy(update={"status": result.status})
    assert result.members == ["dev-02"] and result.plan.devices == ["dev-02"]
    assert result.status.rollout.phase == "Complete"  # not waiting for dev-01, which fleet a updates


# --- downgrade authorisations ----------------------------------------------------------------------------


def test_halted_and_rolled_back_plans_carry_a_signed_downgrade_authorisation():
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from weatherfleet.rollout import authorisation

    key = ed25519.Ed25519PrivateKey.generate()
    devices = fleet(10, "dev")
    threshold = open_share(rollout_id("ns/f", "fw-2", "2.0.0"), devices, 50)
    progressing = fleet_plan(status_of("Progressing", threshold=threshold), "ns/f", devices, {}, [], key)
    assert progressing.authorisation is None  # going forward needs no permission
    halted = fleet_plan(status_of("Halted", threshold=threshold), "ns/f", devices, {}, [], key)
    auth = halted.authorisation
    assert auth.text == "weatherfleet downgrade to=1.0.0 from=2.0.0 rollout=ns/f/fw-2@2.0.0"
    assert authorisation.verify([key.public_key()], auth)
    assert not authorisation.verify([ed25519.Ed25519PrivateKey.generate().public_key()], auth)
    forged = auth.model_copy(update={"text": auth.text.replace("to=1.0.0", "to=0.1.0")})
    assert not authorisation.verify([key.public_key()], forged)
    assert authorisation.permits(auth, "2.0.0", "1.0.0")
    assert not authorisation.permits(auth, "1.5.0", "1.0.0") and not authorisation.permits(
        auth, "2.0.0", "0.9.0"
    )
    assert halted.authorisation_for(devices[0], "1.0.0") == auth
    # Ed25519 signs deterministically: the same decision is the same plan text (no rewrite per reconcile)
    again = fleet_plan(status_of("Halted", threshold=threshold), "ns/f", devices, {}, [], key)
    assert again.model_dump_json() == halted.model_dump_json()
    back = fleet_plan(status_of("RolledBack", stableVersion="1.0.0"), "ns/f", devices, {}, [], key)
    assert back.authorisation.to == "1.0.0" and back.authorisation.from_versions == ["2.0.0"]
    without = fleet_plan(status_of("Halted", threshold=threshold), "ns/f", devices, {}, [])
    assert without.authorisation is None  # no rollout key (render): devices that took 2.0.0 keep it
    unknown = fleet_plan(status_of("Halted", stableVersion=None), "ns/f", devices, {}, [], key)
    assert unknown.authorisation is None  # nothing known to go back to


def test_naming_an_older_release_is_refused_with_a_condition_a_user_reads(build):
    from weatherfleet.models import FirmwareRelease, SensorFleet, WeatherSensor
    from weatherfleet.reconcilers.fleet import FleetObservation, reconcile_fleet

    fleet = SensorFleet.model_validate(build.fleet("garden", rollout={"release": "fw-1"}))
    done = status_of("Complete", release="fw-2", stableVersion="2.0.0", rollbackVersion="1.0.0")
    fleet = fleet.model_copy(update={"status": fleet.status.model_copy(update={"rollout": done})})
    result = reconcile_fleet(
        fleet,
        FleetObservation(
            now=T0,
            sensors=[WeatherSensor.model_validate(build.sensor("dev-01", "garden"))],
            releases={"fw-1": FirmwareRelease.model_validate(build.release("fw-1", "1.0.0"))},
        ),
    )
    available = next(c for c in result.status.conditions if c.type == "ReleaseAvailable")
    assert (available.status, available.reason) == ("False", "OlderThanStable")
    assert "set spec.rollout.rollback" in available.message
    assert result.status.rollout.phase == "Complete" and result.plan.version_for("dev-01") == "2.0.0"
    assert ("Warning", "ReleaseUnavailable") in [(e.type, e.reason) for e in result.events]
