"""The physical world one device sits in: smooth daily cycles plus slow random drift, deterministic per seed.

Values are functions of time, so every sensor that looks at the same moment sees the same air, and a test
can ask the model what a correct driver should have reported."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

# What every emulated sensor is given: the device's clock (seconds) and the true values at a moment
Clock = Callable[[], float]
World = Callable[[float], dict[str, float]]


@dataclass
class Environment:
    seed: int = 0
    temperature: float = 21.0  # degC, daily mean
    temperature_swing: float = 3.0
    humidity: float = 45.0  # %RH
    pressure: float = 1013.25  # hPa
    co2: float = 600.0  # ppm
    pm25: float = 8.0  # ug/m3
    pm10: float = 14.0
    day_seconds: float = 86400.0
    overrides: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)
        self._phase = rng.uniform(0, 2 * math.pi)
        self._wobble = [rng.uniform(0.5, 1.5) for _ in range(6)]

    def _wave(self, t: float, index: int, period: float) -> float:
        return math.sin(2 * math.pi * t / period * self._wobble[index] + self._phase + index)

    def at(self, t: float) -> dict[str, float]:
        """The true values at device time `t` (seconds)."""
        day = self._wave(t, 0, self.day_seconds)
        values = {
            "temperature": self.temperature + self.temperature_swing * day + 0.2 * self._wave(t, 1, 600),
            "humidity": min(100.0, max(0.0, self.humidity - 8.0 * day + 1.5 * self._wave(t, 2, 900))),
            "pressure": self.pressure + 2.0 * self._wave(t, 3, 6 * 3600),
            "co2": max(400.0, self.co2 + 250.0 * self._wave(t, 4, 3600)),
            "pm25": max(0.0, self.pm25 + 4.0 * self._wave(t, 5, 1800)),
        }
        values["pm10"] = max(values["pm25"], self.pm10 + 6.0 * self._wave(t, 5, 1800))
        values.update(self.overrides)
        return values
