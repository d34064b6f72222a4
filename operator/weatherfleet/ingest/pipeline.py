"""The ingest pipeline, independent of MQTT: messages in, batches made durable, then acknowledged.

A message is acknowledged (through the `ack` callback) only after its batch is committed to the store,
or to the spool when the store fails; rejected messages are committed as dead letters first. While the
spool holds batches, new batches are appended behind them so the store sees them in arrival order.

Only `StoreUnavailable` means "the store is down, try again later". Any other write failure is a content
problem of some message (issue 14: one lone surrogate stopped ingest for the whole fleet while the same
batch was retried forever): the batch is split in halves until the message(s) the store refuses are
found; those become dead letters with the store's reason, the rest is stored in the same commit. A
poison message therefore costs no retry cycle at all, and about 2·log2(batch) extra writes."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from .batching import BatchPolicy
from .deadletters import DeadLetterStore
from .metrics import IngestMetrics
from .parsing import MessageParser, Rejected
from .records import TABLES, DeadLetter, Point, to_line_protocol
from .spool import Spool
from .store import Store, StoreUnavailable, WriteResult

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Delivery:
    """One received message; `token` is whatever the acknowledger needs (paho: generation, mid, qos)."""

    topic: str
    payload: bytes
    received_ns: int
    token: object = None


Acknowledger = Callable[[list[Delivery]], None]


class Ingestor:
    def __init__(
        self,
        store: Store,
        spool: Spool,
        dead_letters: DeadLetterStore,
        *,
        parser: MessageParser | None = None,
        policy: BatchPolicy | None = None,
        metrics: IngestMetrics | None = None,
        ack: Acknowledger | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store, self.spool, self.dead_letters = store, spool, dead_letters
        self.parser = parser or MessageParser()
        self.policy = policy or BatchPolicy()
        self.metrics = metrics or IngestMetrics()
        self.ack: Acknowledger = ack or (lambda deliveries: None)
        self.clock = clock
        self._inbox: deque[Delivery] = deque()
        self._wake = threading.Event()
        self._idle = True
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_replay = 0.0
        self._kinds = {
            k: self.metrics.messages_in.labels(k) for k in ("measurements", "status", "ota", "other")
        }
        self._kind_counts = dict.fromkeys(self._kinds, 0)  # added to the metric per batch, not per message
        self._rows = {t: self.metrics.rows_written.labels(t) for t in TABLES}
        self.failed = threading.Event()  # the writer died: the process must exit (and be restarted)
        self.committed = 0  # messages made durable and handed to `ack` (for tests and benchmarks)
        self._update_spool_gauges()

    # -- input (any thread) -------------------------------------------------------------------------

    def submit(self, delivery: Delivery) -> None:
        inbox = self._inbox
        inbox.append(delivery)
        # wake the writer only when it waits for a first message or a batch is full: waking it for every
        # message would cost a thread switch each (it polls at the linger interval while a batch fills)
        if self._idle or len(inbox) >= self.policy.max_rows:
            self._wake.set()

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> Ingestor:
        self._thread = threading.Thread(target=self.run, name="ingest-writer", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Commit and acknowledge what was received, then end the writer thread."""
        self._stopping.set()
        self._wake.set()  # (a stop is always noticed: the writer re-checks at least every max_delay)
        if self._thread:
            self._thread.join(timeout)

    # -- the writer loop ----------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._run()
        except BaseException:
            # nothing more would be acknowledged: the broker would just stop sending. Say so loudly and
            # let the command exit, so that the supervisor restarts ingest (unacked messages are redelivered)
            log.critical("the ingest writer failed; exiting", exc_info=True)
            self.failed.set()

    def _run(self) -> None:
        deliveries: list[Delivery] = []
        points: list[Point] = []
        origins: list[Delivery] = []  # the message each point came from (same length as points)
        dead: list[DeadLetter] = []
        first_at = last_at = None
        policy, inbox = self.policy, self._inbox
        while True:
            if inbox:
                while inbox and len(deliveries) < policy.max_rows:
                    delivery = inbox.popleft()
                    deliveries.append(delivery)
                    self._parse(delivery, points, origins, dead)
                last_at = self.clock()
                if first_at is None:
                    first_at = last_at
            now = self.clock()
            stopping = self._stopping.is_set()
            if deliveries and (stopping or policy.due(len(deliveries), first_at, last_at, now)):
                if self._commit(deliveries, points, origins, dead):
                    deliveries, points, origins, dead = [], [], [], []
                    first_at = last_at = None
                else:
                    self._stopping.wait(policy.retry_interval)
                    if stopping:
                        return  # not acknowledged: the broker redelivers after restart
                continue
            if self.spool and now >= self._next_replay:
                self._replay()
            if stopping and not inbox and not deliveries:
                return
            if not inbox:
                self._idle = not deliveries
                timeout = policy.wait_time(first_at, last_at, now) if deliveries else policy.max_delay
                if self.spool:
                    timeout = min(timeout, max(0.0, self._next_replay - now))
                self._wake.clear()
                if not inbox:
                    self._wake.wait(timeout)
                self._idle = False

    def _parse(
        self, delivery: Delivery, points: list[Point], origins: list[Delivery], dead: list[DeadLetter]
    ) -> None:
        topic = delivery.topic
        kind = topic[topic.rfind("/") + 1 :]
        self._kind_counts[kind if kind in self._kinds else "other"] += 1
        try:
            parsed = self.parser.parse(delivery.topic, delivery.payload, delivery.received_ns)
        except Rejected as error:
            dead.append(DeadLetter(delivery.topic, delivery.payload, error.reason, delivery.received_ns))
            return
        except Exception as error:  # a parser bug must not stop ingest; keep the message to look at
            log.exception("parser failed on %s", delivery.topic)
            dead.append(
                DeadLetter(
                    delivery.topic, delivery.payload, f"internal error: {error!r}", delivery.received_ns
                )
            )
            return
        for point in parsed:
            if "flagged" in point.fields:
                self.metrics.flagged_values.inc()
            origins.append(delivery)
        points.extend(parsed)

    def _commit(
        self,
        deliveries: list[Delivery],
        points: list[Point],
        origins: list[Delivery],
        dead: list[DeadLetter],
    ) -> bool:
        """Make the batch durable, then acknowledge it. False when even that failed (retry later)."""
        started = time.perf_counter()
        for kind, count in self._kind_counts.items():
            if count:
                self._kinds[kind].inc(count)
                self._kind_counts[kind] = 0
        try:
            if dead:
                self.dead_letters.add_many(dead)
                self.metrics.dead_letters.labels("parse").inc(len(dead))
            if points:
                if self.spool:
                    self.spool.append(points)  # behind older batches: keep the order
                else:
                    try:
                        self._write(points, origins)
                    except StoreUnavailable as error:
                        log.warning("store unavailable, spooling %d points: %s", len(points), error)
                        self.metrics.store_errors.inc()
                        self.spool.append(points)
                        self._next_replay = self.clock() + self.policy.retry_interval
        except Exception:
            log.exception("could not make a batch of %d messages durable; retrying", len(deliveries))
            return False
        finally:
            self._update_spool_gauges()
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        self.ack(deliveries)
        self.committed += len(deliveries)
        return True

    def _replay(self, budget_s: float = 0.5) -> None:
        """Write spooled batches, oldest first, for up to `budget_s` (so new messages keep flowing)."""
        deadline = time.perf_counter() + budget_s
        while self.spool and time.perf_counter() < deadline:
            points = self.spool.oldest() or []
            try:
                self._write(points, None)
            except StoreUnavailable as error:
                log.info("store still unavailable (%d batches spooled): %s", self.spool.depth, error)
                self._next_replay = self.clock() + self.policy.retry_interval
                return
            self.spool.pop_oldest()
            self._update_spool_gauges()
        if self.spool:
            self._next_replay = self.clock()

    def _write(self, points: list[Point], origins: list[Delivery] | None) -> None:
        """Write points; a failure other than StoreUnavailable isolates the refused messages (bisection)
        and dead-letters them. `origins` (the message of each point) is None for spooled points, which
        are then isolated one by one."""
        try:
            result = self.store.write(points)
        except StoreUnavailable:
            raise
        except Exception as error:
            groups = _groups(origins) if origins is not None else [(i, i + 1) for i in range(len(points))]
            if len(groups) == 1:
                reason = f"the store refused it: {type(error).__name__}: {error}"[:500]
                self._dead_from_store([(p, reason) for p in points], _origin_map(points, origins))
                return
            log.warning(
                "store refused a batch of %d messages (%s); isolating the culprit", len(groups), error
            )
            middle = groups[len(groups) // 2][0]
            for part in (slice(0, middle), slice(middle, None)):
                self._write(points[part], origins[part] if origins is not None else None)
            return
        self._account(points, result, origins)

    def _dead_from_store(self, rejected: list[tuple[Point, str]], origin_of: dict[int, Delivery]) -> None:
        """Dead letters for points the store refused: the original message when known (one letter per
        message, `origin_of` maps id(point) to it), else the point itself (a spooled batch)."""
        now = time.time_ns()
        letters: dict[int, DeadLetter] = {}
        for point, reason in rejected:
            origin = origin_of.get(id(point))
            if origin is not None:
                letters.setdefault(
                    id(origin), DeadLetter(origin.topic, origin.payload, reason, now, source="store")
                )
            else:
                letters[id(point)] = DeadLetter(
                    f"store:{point.table}", _describe(point), reason, now, "store"
                )
        self.dead_letters.add_many(list(letters.values()))
        self.metrics.dead_letters.labels("store").inc(len(letters))

    def _account(
        self, points: list[Point], result: WriteResult, origins: list[Delivery] | None = None
    ) -> None:
        """Count rows per table; keep lines the store refused for good (partial writes) as dead letters."""
        if result.rejected:
            self._dead_from_store(result.rejected, _origin_map(points, origins))
        counts = dict.fromkeys(TABLES, 0)
        for point in points:
            counts[point.table] += 1
        for point, _reason in result.rejected:
            counts[point.table] -= 1
        for table, count in counts.items():
            if count:
                self._rows[table].inc(count)

    def _update_spool_gauges(self) -> None:
        self.metrics.spool_batches.set(self.spool.depth)
        self.metrics.spool_points.set(self.spool.points)


def _groups(origins: list[Delivery]) -> list[tuple[int, int]]:
    """[start, end) of each message's points (a message's points are adjacent)."""
    groups, start = [], 0
    for index in range(1, len(origins) + 1):
        if index == len(origins) or origins[index] is not origins[start]:
            groups.append((start, index))
            start = index
    return groups


def _origin_map(points: list[Point], origins: list[Delivery] | None) -> dict[int, Delivery]:
    return {id(p): o for p, o in zip(points, origins, strict=True)} if origins is not None else {}


def _describe(point: Point) -> bytes:
    """A refused point as bytes for its dead letter: line protocol when it can be written, else JSON."""
    try:
        text = to_line_protocol(point)
    except Exception:
        text = point.to_json()
    return text.encode("utf-8", "backslashreplace")
