"""Rollout time compression: a fleet whose rollout durations (bake times, update timeout, announce window)
are divided by a factor. The operator applies it when WEATHERFLEET_ROLLOUT_TIME_SCALE is above 1 (demos
and the end-to-end tests run the shipped CRs, whose bakes last hours, in seconds); every other decision
is unchanged, so the compressed run takes the same code path as the real one. Pure."""

from __future__ import annotations

from ..durations import parse_duration
from ..models import SensorFleet


def _scaled(text: str, factor: float) -> str:
    milliseconds = max(1, round(parse_duration(text) * 1000 / factor))
    return f"{milliseconds}ms"


def compressed(fleet: SensorFleet, factor: float) -> SensorFleet:
    """The fleet with its rollout's durations divided by `factor` (the same fleet when factor is 1)."""
    if factor == 1:
        return fleet
    rollout = fleet.spec.rollout
    waves = [w.model_copy(update={"bake_time": _scaled(w.bake_time, factor)}) for w in rollout.waves]
    rollout = rollout.model_copy(
        update={
            "waves": waves,
            "update_timeout": _scaled(rollout.update_timeout, factor),
            "announce_window": _scaled(rollout.announce_window, factor),
        }
    )
    return fleet.model_copy(update={"spec": fleet.spec.model_copy(update={"rollout": rollout})})
