"""Time and memory a client can hold on the HTTP server (otaflux.http), all bounded:
- a request (head and body) must arrive within `request_timeout` (10 s) of its first byte: a total
  deadline, not reset by each byte, so a head trickled a byte at a time is closed (408);
- a keep-alive connection between requests is closed after `idle_timeout` (75 s, nginx's default),
  counted from the last response, also not reset by stray bytes (e.g. endless empty lines);
- at most `max_unfinished` (4096) connections per worker may hold an unfinished request at once; the
  next one closes the oldest of them (a legitimate client finishes its head in one packet, so the
  oldest is the slowest);
- none of these apply while a response is being sent (a slow download is paced by TCP).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .http import HttpProtocol

log = logging.getLogger("otaflux.http")

IDLE_TIMEOUT = 75.0  # seconds, as nginx's keepalive_timeout default
REQUEST_TIMEOUT = 10.0  # seconds from the first byte of a request to its last
MAX_UNFINISHED = 4096  # connections with an unfinished request, per worker (a wave connects at once)


class Limits:
    """What the connections of one server share: the connection set, the deadlines, and the connections
    with an unfinished request in the order their requests began (oldest first)."""

    def __init__(
        self,
        idle_timeout: float = IDLE_TIMEOUT,
        request_timeout: float = REQUEST_TIMEOUT,
        max_unfinished: int = MAX_UNFINISHED,
    ) -> None:
        self.idle_timeout, self.request_timeout, self.max_unfinished = (
            idle_timeout,
            request_timeout,
            max_unfinished,
        )
        self.connections: set[HttpProtocol] = set()
        self.unfinished: OrderedDict[HttpProtocol, None] = OrderedDict()
        self.evicted = 0  # connections closed to make room for a new unfinished request
        self.timed_out = 0  # requests that missed their deadline
        self._reported = (0, 0)

    def begin(self, connection: HttpProtocol) -> None:
        unfinished = self.unfinished
        while len(unfinished) >= self.max_unfinished:
            oldest, _ = unfinished.popitem(last=False)
            self.evicted += 1
            oldest._abort()
        unfinished[connection] = None

    def sweep(self, now: float) -> None:
        """Close what missed a deadline: unfinished requests (oldest first, so this stops early) and
        connections idle between requests."""
        request_deadline = now - self.request_timeout
        unfinished = self.unfinished
        while unfinished:
            connection = next(iter(unfinished))
            if connection.request_since is not None and connection.request_since > request_deadline:
                break
            self.timed_out += 1
            unfinished.pop(connection)
            connection._timeout()
        idle_deadline = now - self.idle_timeout
        for connection in [c for c in self.connections if c.idle(idle_deadline)]:
            connection._close()
        if (self.evicted, self.timed_out) != self._reported:
            evicted, timed_out = self.evicted - self._reported[0], self.timed_out - self._reported[1]
            self._reported = (self.evicted, self.timed_out)
            log.warning(
                "closed %d connections whose request missed its %gs deadline and %d beyond %d unfinished",
                timed_out,
                self.request_timeout,
                evicted,
                self.max_unfinished,
            )
