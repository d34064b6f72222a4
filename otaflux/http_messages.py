"""What the HTTP server (otaflux.http) hands the application and takes back: the parsed Request, a
Response held in memory, a FileResponse sent with sendfile, and the one byte range a download may ask for."""

from __future__ import annotations

import os
import re
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl, unquote

_PLAIN_DEVICE_QUERY = re.compile(r"device=[A-Za-z0-9._-]*")


class Request:
    __slots__ = (
        "_query", "body", "device", "firmware", "headers", "keep_alive", "method", "path", "query_string", "route",
        "sent", "started", "version",
    )  # fmt: skip

    def __init__(
        self,
        method: str,
        target: str,
        version: str,
        headers: dict[str, str],
        body: bytes,
        keep_alive: bool | None = None,
    ) -> None:
        self.method, self.version, self.headers, self.body = method, version, headers, body
        path, _, self.query_string = target.partition("?")
        self.path = unquote(path) if "%" in path else path
        self._query: dict[str, str] | None = None
        # for the access log: the valid device id named, the firmware answered, body bytes sent
        self.device = self.firmware = None
        self.sent = 0
        if keep_alive is None:
            connection = headers.get("connection", "").lower()
            keep_alive = "close" not in connection and (version == "HTTP/1.1" or "keep-alive" in connection)
        self.keep_alive = keep_alive

    @property
    def query(self) -> dict[str, str]:
        if self._query is None:
            qs = self.query_string
            if _PLAIN_DEVICE_QUERY.fullmatch(qs):
                self._query = {"device": qs[7:]}  # what every device sends; same result as parse_qsl
            else:
                self._query = dict(parse_qsl(qs, keep_blank_values=True))
        return self._query


class Response:
    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(
        self,
        status: int = 200,
        body: bytes = b"",
        content_type: str = "text/plain; charset=utf-8",
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        self.status, self.body, self.content_type, self.headers = status, body, content_type, headers or []


class FileResponse:
    """A file sent with sendfile; `etag` (quoted) enables If-None-Match/If-Range; Range is honoured."""

    __slots__ = ("content_type", "etag", "on_sent", "path", "status")

    def __init__(
        self,
        path: str | os.PathLike,
        etag: str | None = None,
        content_type: str = "application/octet-stream",
        on_sent: Callable[[int], None] | None = None,
    ) -> None:
        self.path, self.etag, self.content_type, self.on_sent = path, etag, content_type, on_sent
        self.status = 200  # set to the status actually sent (206, 304, 416) once known


Result = Response | FileResponse
App = Callable[[Request], "Result | Awaitable[Result]"]
Done = Callable[[Request, int], None]


def text(status: int, message: str) -> Response:
    return Response(status, message.encode())


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """(start, end inclusive) for one satisfiable `bytes=` range; None when unsatisfiable. Raises
    ValueError when the header is not a single byte range (the caller then serves the whole file)."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        raise ValueError("not a single byte range")
    first, dash, last = spec.strip().partition("-")
    if not dash:
        raise ValueError("no dash")
    if not first:  # suffix: the last N bytes
        n = int(last)
        if n <= 0:
            return None
        return (max(0, size - n), size - 1) if size else None
    start = int(first)
    end = int(last) if last else size - 1
    if start > end or start >= size:
        return None
    return start, min(end, size - 1)
