"""The spool on disk: whole batches or nothing, order kept across restarts."""

from __future__ import annotations

from pathlib import Path

from weatherfleet.ingest.records import Point
from weatherfleet.ingest.spool import Spool


def batch(start: int, size: int) -> list[Point]:
    return [Point("weather", {"device": "dev-01"}, {"temperature": 1.5}, start + i) for i in range(size)]


def test_order_and_counts_survive_a_restart(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append(batch(0, 3))
    spool.append(batch(100, 2))
    assert (spool.depth, spool.points) == (2, 5)
    again = Spool(tmp_path)
    assert (again.depth, again.points) == (2, 5)
    assert [p.time_ns for p in again.oldest()] == [0, 1, 2]
    again.pop_oldest()
    again.append(batch(200, 1))  # numbered after the existing batches
    assert [p.time_ns for p in again.oldest()] == [100, 101]
    again.pop_oldest()
    assert [p.time_ns for p in again.oldest()] == [200]
    again.pop_oldest()
    assert not again and again.oldest() is None and again.points == 0


def test_a_torn_write_is_dropped_at_start(tmp_path: Path) -> None:
    """A crash between write and rename leaves a .tmp file: that batch was never acknowledged (the broker
    still has it), so it is removed rather than replayed half-written."""
    Spool(tmp_path).append(batch(0, 2))
    (tmp_path / "000000000002.tmp").write_text('["weather", {"device": "dev-01"}, {"temper')
    spool = Spool(tmp_path)
    assert spool.depth == 1 and not list(tmp_path.glob("*.tmp"))


def test_points_round_trip_with_every_field_type(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    point = Point("device_status", {"device": "dev-02"}, {"online": True, "heap": 4096, "firmware": "1.0"}, 7)
    spool.append([point])
    assert spool.oldest() == [point]
    assert oct((tmp_path / "000000000001.jsonl").stat().st_mode & 0o777) == "0o600"
