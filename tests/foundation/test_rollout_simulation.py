"""The rollout over a simulated fleet of 10,000 devices (weatherfleet.rollout.simulation: the real rollout
code, no I/O): hourly checks with jitter, slow and offline devices, flaky ones, joiners, a release that
fails on some devices, announcements on and off."""

from __future__ import annotations

import pytest

from weatherfleet.models.fleet import RolloutSpec
from weatherfleet.rollout import in_share, rollout_id
from weatherfleet.rollout.simulation import FLEET, FleetModel, simulate

HOURS = 3600.0
SPEC = RolloutSpec(
    release="fw-1-1-0",
    waves=[
        {"percent": 5, "bakeTime": "30m"},
        {"percent": 25, "bakeTime": "30m"},
        {"percent": 100, "bakeTime": "30m"},
    ],
    failureThreshold={"percent": 10},
    updateTimeout="2h",
)
RID = rollout_id(FLEET, "fw-1-1-0", "1.1.0")


@pytest.mark.parametrize("announce", [True, False], ids=["announced", "periodic checks only"])
@pytest.mark.parametrize("failure_rate", [0.3, 0.12])
def test_a_bad_release_is_stopped_in_its_first_wave_within_one_evaluation(failure_rate, announce):
    model = FleetModel(devices=10_000, failure_rate=failure_rate, announce=announce, seed=7)
    result = simulate(SPEC, model, until=12 * HOURS)
    status = result.status
    assert status.phase == "Halted", status.reason
    # halted within one evaluation interval of the breach
    assert result.breach_at is not None and result.halted_at is not None
    assert 0 <= result.halted_at - result.breach_at <= model.evaluate_every
    # exposure: only devices of the share open when they started, nobody starts after the halt
    assert result.exposed and all(t <= result.halted_at for t, _wave in result.started.values())
    first = [d for d, (t, wave) in result.started.items() if wave == 0]
    later = [d for d, (t, wave) in result.started.items() if wave > 0]
    assert all(in_share(RID, d, status.threshold) for d in result.started)
    if later:  # the next wave opened before the breach showed: at most one evaluation interval of it
        opened = result.waves[1].opened_at
        assert all(result.started[d][0] <= opened + model.evaluate_every for d in later)
    else:
        assert status.wave == 0 and len(first) <= status.opened <= 500 + result.joined
    assert "failure threshold reached in wave 1" in status.reason


def test_a_good_release_completes_across_offline_flaky_slow_devices_and_joiners():
    model = FleetModel(devices=10_000, seed=3)
    result = simulate(SPEC, model, until=12 * HOURS)
    status = result.status
    assert status.phase == "Complete", status.reason
    assert status.stable_version == "1.1.0" and result.joined > 0
    assert [w.percent for w in result.waves] == [5.0, 25.0, 100.0]
    assert len(result.waves[0].devices) == 500  # exactly ceil(5% of 10,000)
    assert not result.rolled_back
    # everyone online was updated; the ones offline all along were neither waited for nor failed
    assert status.updated >= 0.93 * status.opened and status.failed < 0.1 * status.opened


def test_announced_waves_reach_their_devices_in_minutes_not_hours():
    """Hourly checks (+10 min jitter): a wave's steadily online devices run the release about an hour after
    it opens without announcements; with them, within the announce window plus a slow download."""
    timings = {}
    for announce in (True, False):
        model = FleetModel(devices=10_000, announce=announce, seed=5)
        result = simulate(SPEC, model, until=2.5 * HOURS)
        first = result.waves[0]
        timings[announce] = first.open_to_updated
    on, off = timings[True], timings[False]
    assert on is not None and on <= 15 * 60  # 1 min window + 10 min slow download + 1 min health check
    assert off is not None and off >= 60 * 60
