"""The status write budget: lastSeen and lastReading (the heartbeat) move in a sensor's status at most once
per status_refresh_seconds when nothing else changed; real changes go out at once and carry them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from weatherfleet.controller.sensors import coarse_heartbeat
from weatherfleet.models.common import set_condition
from weatherfleet.models.sensor import LastReading, WeatherSensorStatus

T0 = datetime(2026, 1, 1, tzinfo=UTC)
REFRESH = 300.0


def status(seen: datetime | None, reading: float | None = 20.0, online: bool = True) -> WeatherSensorStatus:
    conds = set_condition(
        [], "Online", "True" if online else "False", "Reporting" if online else "NoData", "m", T0, 1
    )
    return WeatherSensorStatus(
        observedGeneration=1,
        conditions=conds,
        online=online,
        lastSeen=seen,
        lastReading=LastReading(time=seen, values={"temperature": reading}) if seen and reading else None,
    )


def writes_in_one_hour(report_every: float) -> int:
    """A device heard every `report_every` seconds, reconciled at every report: how many status writes."""
    written = status(T0)
    writes = 0
    t = 0.0
    while t < 3600:
        t += report_every
        seen = T0 + timedelta(seconds=t)
        new = coarse_heartbeat(written, status(seen, 20.0 + t), REFRESH)
        if new != written:
            writes += 1
            written = new
    return writes


def test_a_steady_sensor_costs_at_most_3600_over_refresh_writes_an_hour() -> None:
    for every in (1.0, 10.0, 60.0, 61.0, 299.0):
        assert writes_in_one_hour(every) <= 3600 / REFRESH, every


def test_heartbeat_is_held_between_refreshes() -> None:
    old = status(T0)
    held = coarse_heartbeat(old, status(T0 + timedelta(seconds=120), 21.0), REFRESH)
    assert held == old
    moved = coarse_heartbeat(old, status(T0 + timedelta(seconds=300), 21.0), REFRESH)
    assert moved.last_seen == T0 + timedelta(seconds=300)
    assert moved.last_reading and moved.last_reading.values == {"temperature": 21.0}


def test_a_real_change_goes_out_at_once_with_the_fresh_heartbeat() -> None:
    old = status(T0)
    offline = status(T0 + timedelta(seconds=30), online=False)
    assert coarse_heartbeat(old, offline, REFRESH) == offline


def test_the_first_heartbeat_and_the_first_reading_go_out_at_once() -> None:
    never = status(None)
    first = status(T0)
    assert coarse_heartbeat(never, first, REFRESH) == first
    no_reading = status(T0, reading=None)
    with_reading = status(T0 + timedelta(seconds=5))
    assert coarse_heartbeat(no_reading, with_reading, REFRESH) == with_reading
