"""The access log (`ACCESS_LOG`): one JSON line per answered request, as nginx's access_log is on by
default.

    {"time":"2026-11-29T07:30:00.123Z","method":"GET","path":"/version","device":"dev-01","status":200,
     "version":"1.1.0","digest":"sha256:…","bytes":18,"ms":0.21}

- `path` is the path only, never the query (the device id is its own field, once validated); no header
  is ever logged, so neither the webhook secret nor an Authorization header can reach it.
- `device` is present when the request names a valid device id; `version` and `digest` when a firmware
  was answered (/version, /firmware, /v1/manifest, /v1/blobs): what that device was told or sent.
- `bytes` is the body bytes sent; a download the client abandoned is logged with what went out.

Cheap by construction (a cached /version is answered in a few microseconds): the line is formatted by
hand and kept in memory, and written in one call per second, at 256 lines, and at shutdown, as nginx's
`access_log ... buffer= flush=` does. The writer is the logger-free component `otaflux.access`: a
`logging` record per request would cost as much as answering the request."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TextIO

log = logging.getLogger("otaflux.access")

FLUSH_LINES = 256
OFF = "off"
STREAMS = {"stdout": lambda: sys.stdout, "stderr": lambda: sys.stderr}


def _quote(text: str) -> str:
    if '"' in text or "\\" in text or not text.isprintable() or not text.isascii():
        return json.dumps(text)
    return f'"{text}"'


class AccessLog:
    """Buffered JSON lines to a stream (`stdout`, `stderr`) or a file (appended: workers share it, each
    write is whole lines)."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.lines: list[str] = []
        self._stamp = -1
        self._prefix = ""
        self._file: TextIO | None = None
        self._middles: dict[tuple, str] = {}
        if target not in STREAMS:
            self._file = open(target, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()

    @classmethod
    def from_setting(cls, value: str) -> AccessLog | None:
        return None if value == OFF else cls(value)

    def record(
        self,
        method: str,
        path: str,
        device: str | None,
        status: int,
        version: str | None,
        digest: str | None,
        sent: int,
        seconds: float,
    ) -> None:
        now = time.time()
        second = int(now)
        if second != self._stamp:
            self._stamp = second
            self._prefix = time.strftime('{"time":"%Y-%m-%dT%H:%M:%S', time.gmtime(second))
        key = (method, path, device, status, version, digest)
        middle = self._middles.get(key)
        if middle is None:  # the same few answers over and over: formatted once
            if len(self._middles) >= 4096:
                self._middles.clear()
            middle = f'","method":"{method}","path":{_quote(path)}'
            if device is not None:
                middle += f',"device":"{device}"'  # validated: letters, digits, '.', '_', '-'
            middle += f',"status":{status}'
            if version is not None:
                middle += f',"version":{_quote(version)},"digest":{_quote(digest or "")}'
            self._middles[key] = middle = middle + ',"bytes":'
        self.lines.append(
            f'{self._prefix}.{int((now - second) * 1000):03d}Z{middle}{sent},"ms":{seconds * 1000:.3f}}}\n'
        )
        if len(self.lines) >= FLUSH_LINES:
            self.flush()

    def flush(self) -> None:
        if not self.lines:
            return
        text, self.lines = "".join(self.lines), []
        try:
            stream = self._file or STREAMS[self.target]()
            stream.write(text)
            stream.flush()
        except (OSError, ValueError) as exc:  # a full disk must not stop the answers
            log.warning("access log %s: %s", self.target, exc)

    def close(self) -> None:
        self.flush()
        if self._file is not None:
            self._file.close()
            self._file = None
