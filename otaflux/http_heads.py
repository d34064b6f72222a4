"""Response heads (status line and headers) as the server writes them. The Date header is formatted once
a second, and the heads of answers without extra headers (every device's /version) are kept for that
second, so the common answer costs a dictionary lookup instead of a format."""

from __future__ import annotations

import asyncio
from email.utils import formatdate

from .http_messages import Request

REASONS = {
    200: "OK", 206: "Partial Content", 304: "Not Modified", 400: "Bad Request", 401: "Unauthorized",
    404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout", 411: "Length Required",
    413: "Content Too Large", 414: "URI Too Long", 416: "Range Not Satisfiable",
    431: "Request Header Fields Too Large", 500: "Internal Server Error", 501: "Not Implemented",
    502: "Bad Gateway", 503: "Service Unavailable",
}  # fmt: skip


class _Date:
    """The Date header, formatted once a second rather than per response."""

    value = ""
    stamp = 0

    @classmethod
    def now(cls, loop: asyncio.AbstractEventLoop) -> str:
        second = int(loop.time())
        if second != cls.stamp:
            cls.stamp, cls.value = second, formatdate(usegmt=True)
        return cls.value


class _HeadCache:
    """Response heads without extra headers, valid for the current Date second."""

    def __init__(self) -> None:
        self.stamp = -1
        self.heads: dict[tuple, bytes] = {}

    def get(self, loop: asyncio.AbstractEventLoop) -> dict[tuple, bytes]:
        second = int(loop.time())
        if second != self.stamp or len(self.heads) > 256:
            self.stamp, self.heads = second, {}
        return self.heads


_HEADS = _HeadCache()


def response_head(
    loop: asyncio.AbstractEventLoop,
    request: Request,
    status: int,
    content_type: str,
    length: int,
    extra: list[tuple[str, str]],
) -> bytes:
    head = (
        f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}\r\nDate: {_Date.now(loop)}\r\n"
        f"Server: otaflux\r\nContent-Length: {length}\r\n"
    )
    if content_type:
        head += f"Content-Type: {content_type}\r\n"
    for name, value in extra:
        head += f"{name}: {value}\r\n"
    if not request.keep_alive:
        head += "Connection: close\r\n"
    elif request.version == "HTTP/1.0":
        head += "Connection: keep-alive\r\n"
    return (head + "\r\n").encode("latin-1")


def cached_head(
    loop: asyncio.AbstractEventLoop, request: Request, status: int, content_type: str, length: int
) -> bytes:
    """The head of an answer without extra headers (/version): the same for every device with the same
    body length, until the Date second changes. Cached per second, at most a few hundred variants."""
    key = (status, content_type, length, request.keep_alive, request.version)
    heads = _HEADS.get(loop)
    head = heads.get(key)
    if head is None:
        head = heads[key] = response_head(loop, request, status, content_type, length, [])
    return head
