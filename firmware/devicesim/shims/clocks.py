"""`time` as MicroPython has it: ticks_ms/us/diff/add, sleep_ms/us, and epoch time (1970 on ESP32 since
MicroPython 1.22-era ports use the Unix epoch for time.time(); gmtime/localtime give 8-tuples)."""

from __future__ import annotations

import asyncio
import time as host_time
import types
from typing import TYPE_CHECKING

from ..clock import TICKS_MAX, ticks_add, ticks_diff

if TYPE_CHECKING:
    from ..device import Boot


def make_time(boot: Boot) -> types.ModuleType:
    clock = boot.device.clock
    module = types.ModuleType("time")
    warned: list[bool] = []

    def _sleep(seconds: float) -> None:
        boot.check()
        if _on_loop_thread():
            clock.advance(seconds)  # never stall the other devices on the shared loop
            if seconds >= 0.1 and not warned:
                warned.append(True)
                boot.device.log(
                    f"devicesim: warning: blocking sleep of {seconds * 1000:.0f} ms inside a coroutine "
                    "(on the board this stalls every task of its asyncio loop)"
                )
            return
        end = host_time.monotonic() + seconds
        while (left := end - host_time.monotonic()) > 0:
            if boot.ended.wait(min(left, 0.2)):
                boot.check()

    def _on_loop_thread() -> bool:
        try:
            asyncio.get_running_loop()
            return True
        except RuntimeError:
            return False

    def _tuple(t: host_time.struct_time) -> tuple[int, ...]:
        return (t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec, t.tm_wday, t.tm_yday)

    module.ticks_ms = lambda: int(clock.monotonic() * 1000) & TICKS_MAX
    module.ticks_us = lambda: int(clock.monotonic() * 1_000_000) & TICKS_MAX
    module.ticks_cpu = module.ticks_us
    module.ticks_diff = ticks_diff
    module.ticks_add = ticks_add
    module.sleep = _sleep
    module.sleep_ms = lambda ms: _sleep(ms / 1000)
    module.sleep_us = lambda us: _sleep(us / 1_000_000)
    module.time = lambda: int(clock.epoch())
    module.time_ns = lambda: int(clock.epoch() * 1e9)
    module.gmtime = lambda secs=None: _tuple(host_time.gmtime(clock.epoch() if secs is None else secs))
    module.localtime = module.gmtime  # the board's RTC runs in UTC
    module.mktime = lambda t: int(host_time.mktime((*t[:6], 0, 0, 0)) - host_time.timezone)
    return module
