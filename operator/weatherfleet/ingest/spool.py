"""The spool: batches that the store could not take, on disk, replayed in order when it is back.

One file per batch (`<sequence>.jsonl`, one point per line), written to a temporary name, fsynced and
renamed, so a crash leaves either the whole batch or nothing; the directory is fsynced too. The sequence
number orders replay. Replaying a batch twice is harmless because writes are idempotent."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from .records import Point

SUFFIX = ".jsonl"


class Spool:
    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        for leftover in self.directory.glob("*.tmp"):
            leftover.unlink()  # a batch whose write did not complete was never acknowledged
        self._lock = threading.Lock()
        self._segments = sorted(self.directory.glob(f"*{SUFFIX}"), key=_sequence)
        self._next = _sequence(self._segments[-1]) + 1 if self._segments else 1
        self._points = sum(_count_lines(p) for p in self._segments)

    @property
    def depth(self) -> int:
        """Batches waiting."""
        return len(self._segments)

    @property
    def points(self) -> int:
        """Points waiting."""
        return self._points

    def __bool__(self) -> bool:
        return bool(self._segments)

    def append(self, points: list[Point]) -> None:
        if not points:
            return
        with self._lock:
            final = self.directory / f"{self._next:012d}{SUFFIX}"
            temporary = final.with_suffix(".tmp")
            data = "".join(p.to_json() + "\n" for p in points).encode()
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(temporary, final)
            _fsync_directory(self.directory)
            self._segments.append(final)
            self._next += 1
            self._points += len(points)

    def oldest(self) -> list[Point] | None:
        with self._lock:
            if not self._segments:
                return None
            path = self._segments[0]
        with path.open() as handle:
            return [Point.from_json(line) for line in handle if line.strip()]

    def pop_oldest(self) -> None:
        """Forget the oldest batch once the store has it."""
        with self._lock:
            path = self._segments.pop(0)
            self._points -= _count_lines(path)
            path.unlink()
            _fsync_directory(self.directory)


def _sequence(path: Path) -> int:
    return int(path.name.removesuffix(SUFFIX))


def _count_lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(1 for line in handle if line.strip())


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
