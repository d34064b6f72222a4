"""Dead letters: messages that could not be stored, kept with their reason in a local SQLite file.

Keyed by a digest of topic, source and payload: a rejected message that the broker redelivers (its ack
was lost in a reconnect) is kept once, like the measurements.

Always local (also when the measurements go to InfluxDB): a rejected message must be kept even while the
time-series store is down, and it is committed before the MQTT message is acknowledged."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from .records import DeadLetter

SCHEMA = """
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    received_ns INTEGER NOT NULL,
    topic TEXT NOT NULL,
    source TEXT NOT NULL,
    reason TEXT NOT NULL,
    payload BLOB NOT NULL,
    digest TEXT NOT NULL UNIQUE
);
"""


@dataclass(frozen=True)
class StoredDeadLetter:
    id: int
    received_ns: int
    topic: str
    source: str
    reason: str
    payload: bytes


class DeadLetterStore:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def add_many(self, letters: list[DeadLetter]) -> None:
        if not letters:
            return
        # text from a hostile message (a topic, a reason quoting it) must not make the dead letter itself
        # unstorable: anything UTF-8 cannot carry is written as a backslash escape
        rows = [
            (d.received_ns, _text(d.topic), _text(d.source), _text(d.reason), bytes(d.payload), _digest(d))
            for d in letters
        ]
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(
                    "INSERT INTO dead_letters (received_ns, topic, source, reason, payload, digest) "
                    "VALUES (?,?,?,?,?,?) ON CONFLICT (digest) DO NOTHING",
                    rows,
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0]

    def list(self, limit: int = 1000) -> list[StoredDeadLetter]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, received_ns, topic, source, reason, payload FROM dead_letters ORDER BY id LIMIT ?",
                (limit,),
            ).fetchall()
        return [StoredDeadLetter(*row) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _text(value: str) -> str:
    try:
        value.encode()
        return value
    except UnicodeEncodeError:
        return value.encode("utf-8", "backslashreplace").decode()


def _digest(letter: DeadLetter) -> str:
    topic, source = _text(letter.topic).encode(), _text(letter.source).encode()
    return hashlib.sha256(topic + b"\0" + source + b"\0" + bytes(letter.payload)).hexdigest()
