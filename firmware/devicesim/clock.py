"""A device's clock: real monotonic time plus the time the device spent in blocking sleeps.

Blocking `time.sleep_ms()` on the shared event loop would stall every other emulated device, so on the
loop thread it advances this device's clock instead of waiting (each real device has its own CPU; the
emulation keeps that independence). The sensors read the same clock, so a driver that waits 10 ms for a
conversion still sees the conversion finished. The epoch (time.time) stays wall-clock time.

The one divergence: on the board, a blocking sleep inside a coroutine stalls that board's whole loop for
real; here it returns at once. The time shim logs it (once per boot) so firmware authors see the stall."""

from __future__ import annotations

import time

TICKS_PERIOD = 1 << 30  # MicroPython's ticks wrap at 2**30
TICKS_MAX = TICKS_PERIOD - 1


class DeviceClock:
    def __init__(self) -> None:
        self._origin = time.monotonic()
        self.skew = 0.0  # seconds of virtual sleep

    def monotonic(self) -> float:
        """Seconds since the device was created (never goes back, survives resets like an RTC would)."""
        return time.monotonic() - self._origin + self.skew

    def epoch(self) -> float:
        """Wall-clock time, without the skew: a board's RTC (set by NTP) never runs ahead of the world,
        and payload timestamps must stay true for ingest."""
        return time.time()

    def advance(self, seconds: float) -> None:
        if seconds > 0:
            self.skew += seconds


def ticks_diff(end: int, start: int) -> int:
    half = TICKS_PERIOD // 2
    return ((end - start + half) & TICKS_MAX) - half


def ticks_add(ticks: int, delta: int) -> int:
    return (ticks + delta) & TICKS_MAX
