"""A rate-limited work queue of resource keys, as controller-runtime has: a key is queued at most once,
never processed by two workers at a time, and retried with exponential backoff while it keeps failing.
A failing resource therefore never blocks the others and never spins."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import Awaitable, Callable, Hashable


class WorkQueue:
    def __init__(self, base_delay: float = 1.0, max_delay: float = 300.0) -> None:
        self.base_delay, self.max_delay = base_delay, max_delay
        self._ready: asyncio.Queue[Hashable] = asyncio.Queue()
        self._queued: set[Hashable] = set()
        self._processing: set[Hashable] = set()
        self._dirty: set[Hashable] = set()
        self._failures: dict[Hashable, int] = {}
        self._delayed: list[tuple[float, int, Hashable]] = []
        self._due: dict[Hashable, float] = {}
        self._seq = itertools.count()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    def add(self, key: Hashable) -> None:
        if key in self._processing:
            self._dirty.add(key)
            return
        if key not in self._queued:
            self._queued.add(key)
            self._idle.clear()
            self._ready.put_nowait(key)

    def add_after(self, key: Hashable, delay: float) -> None:
        """Queue `key` in `delay` seconds; a key already waiting keeps its earlier time (debouncing a burst
        of events into one reconcile)."""
        loop = asyncio.get_running_loop()
        due = loop.time() + delay
        if self._due.get(key, float("inf")) <= due:
            return
        self._due[key] = due
        heapq.heappush(self._delayed, (due, next(self._seq), key))
        self._idle.clear()
        self._wakeup.set()

    def retry_delay(self, key: Hashable) -> float:
        """Record a failure; the delay before the next try: base * 2^(failures-1), capped."""
        count = self._failures.get(key, 0) + 1
        self._failures[key] = count
        return min(self.base_delay * 2 ** (count - 1), self.max_delay)

    def forget(self, key: Hashable) -> None:
        self._failures.pop(key, None)

    def failures(self, key: Hashable) -> int:
        return self._failures.get(key, 0)

    @property
    def depth(self) -> int:
        """Keys waiting for a worker now (delayed ones do not count)."""
        return len(self._queued)

    async def _promote_delayed(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._wakeup.clear()
            now = loop.time()
            while self._delayed and self._delayed[0][0] <= now:
                due, _, key = heapq.heappop(self._delayed)
                if self._due.get(key) == due:  # else superseded by an earlier time
                    del self._due[key]
                    self.add(key)
            timeout = self._delayed[0][0] - now if self._delayed else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout)

    async def run(self, workers: int, handle: Callable[[Hashable], Awaitable[float | None]]) -> None:
        """Process keys until cancelled. `handle` returns None when done, or seconds after which to look
        again (e.g. a rollout's next bake deadline); it raises to be retried with backoff."""

        async def worker() -> None:
            while True:
                key = await self._ready.get()
                self._queued.discard(key)
                self._processing.add(key)
                try:
                    again = await handle(key)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    self.add_after(key, self.retry_delay(key))
                else:
                    self.forget(key)
                    if again is not None:
                        self.add_after(key, again)
                finally:
                    self._processing.discard(key)
                    if key in self._dirty:
                        self._dirty.discard(key)
                        self.add(key)
                    if not self._queued and not self._processing and not self._delayed:
                        self._idle.set()

        tasks = [asyncio.create_task(self._promote_delayed())]
        tasks += [asyncio.create_task(worker()) for _ in range(workers)]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def drained(self, timeout: float) -> bool:
        """Wait until nothing is queued or in progress (delayed retries are dropped at shutdown)."""
        try:
            await asyncio.wait_for(self._wait_processing(), timeout)
            return True
        except TimeoutError:
            return False

    async def _wait_processing(self) -> None:
        while self._processing:
            await asyncio.sleep(0.05)
