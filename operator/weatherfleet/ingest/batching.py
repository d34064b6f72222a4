"""When a batch is written: the size and time bounds, and the moment the input goes quiet."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BatchPolicy:
    max_rows: int = 1000
    """Flush at this many messages (also bounds the unacknowledged messages ingest holds)."""
    max_delay: float = 1.0
    """Flush when the oldest message in the batch has waited this long (seconds)."""
    linger: float = 0.005
    """Flush when nothing new arrived for this long: the broker sends at most its in-flight window of
    unacknowledged messages and then waits for acks, so waiting for more would only add latency."""
    retry_interval: float = 2.0
    """Seconds between attempts to replay the spool while the store is failing."""

    def __post_init__(self) -> None:
        if self.max_rows < 1 or self.max_delay <= 0 or self.linger < 0 or self.retry_interval <= 0:
            raise ValueError(f"invalid batch policy {self}")

    def due(self, size: int, first_at: float | None, last_at: float | None, now: float) -> bool:
        if size == 0 or first_at is None or last_at is None:
            return False
        return size >= self.max_rows or now - first_at >= self.max_delay or now - last_at >= self.linger

    def wait_time(self, first_at: float | None, last_at: float | None, now: float) -> float:
        """How long the writer may sleep before the batch becomes due."""
        if first_at is None or last_at is None:
            return self.max_delay
        return max(0.0, min(first_at + self.max_delay, last_at + self.linger) - now)
