"""A small HTTP/1.1 server on asyncio's Protocol API, written for what OtaFlux serves.

Why not aiohttp: measured on this machine, aiohttp answers `/version` at ~0.15x nginx, and its
FileResponse does three thread-pool hops per download. This server answers a cached `/version` inline in
`data_received` (no task, no thread), and sends files with os.sendfile, which brings both numbers near
nginx (see bench/otaflux.py).

Scope, deliberately small: GET/HEAD/POST; requests with Content-Length bodies only (no chunked request
bodies: 411); keep-alive by HTTP/1.1 rules (and `Connection: close`, HTTP/1.0); pipelined requests are
answered in order; one byte range (`Range: bytes=a-b | a- | -n`, `If-Range`), 416 when unsatisfiable.
Anything malformed gets a 4xx with a one-line reason and the connection is closed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from urllib.parse import parse_qsl, unquote

log = logging.getLogger("otaflux.http")

MAX_HEAD = 16 * 1024
MAX_BODY = 1 << 20
_PLAIN_DEVICE_QUERY = re.compile(r"device=[A-Za-z0-9._-]*\Z")
IDLE_TIMEOUT = 75.0  # seconds, as nginx's keepalive_timeout default
REASONS = {
    200: "OK", 206: "Partial Content", 304: "Not Modified", 400: "Bad Request", 401: "Unauthorized",
    404: "Not Found", 405: "Method Not Allowed", 411: "Length Required", 413: "Content Too Large",
    414: "URI Too Long", 416: "Range Not Satisfiable", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable",
}  # fmt: skip


class Request:
    __slots__ = (
        "_query", "body", "headers", "keep_alive", "method", "path", "query_string", "route", "started", "version",
    )  # fmt: skip

    def __init__(self, method: str, target: str, version: str, headers: dict[str, str], body: bytes) -> None:
        self.method, self.version, self.headers, self.body = method, version, headers, body
        path, _, self.query_string = target.partition("?")
        self.path = unquote(path) if "%" in path else path
        self._query: dict[str, str] | None = None
        connection = headers.get("connection", "").lower()
        self.keep_alive = "close" not in connection and (version == "HTTP/1.1" or "keep-alive" in connection)

    @property
    def query(self) -> dict[str, str]:
        if self._query is None:
            qs = self.query_string
            if _PLAIN_DEVICE_QUERY.match(qs):
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


class HttpProtocol(asyncio.Protocol):
    def __init__(
        self,
        app: App,
        loop: asyncio.AbstractEventLoop,
        done: Done | None = None,
        connections: set | None = None,
    ) -> None:
        self.app, self.loop, self.done = app, loop, done
        self.connections = connections if connections is not None else set()
        self.last_active = loop.time()
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.busy = False  # a request is being answered asynchronously; later ones wait in the buffer
        self.closing = False
        self._can_write = asyncio.Event()
        self._can_write.set()

    # -- transport callbacks --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.connections.add(self)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        self.closing = True
        self._can_write.set()

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    def data_received(self, data: bytes) -> None:
        self.last_active = self.loop.time()
        self.buffer += data
        if not self.busy:
            self._process()
        elif len(self.buffer) > MAX_HEAD + MAX_BODY:
            self.transport.pause_reading()  # a client pipelining far ahead: let TCP push back

    # -- request loop --

    def _process(self) -> None:
        while self.buffer and not self.closing and not self.busy:
            request = self._parse()
            if request is None:
                return
            try:
                result = self.app(request)
            except Exception:
                log.exception("handler failed for %s %s", request.method, request.path)
                result = text(500, "Internal error")
            if isinstance(result, Response):
                self._write(request, result)
            else:
                self.busy = True
                self.transport.pause_reading()
                self.loop.create_task(self._finish(request, result))

    async def _finish(self, request: Request, pending: Result | Awaitable[Result]) -> None:
        try:
            try:
                result = pending if isinstance(pending, FileResponse) else await pending
            except Exception:
                log.exception("handler failed for %s %s", request.method, request.path)
                result = text(500, "Internal error")
            if not self.closing:
                await self._can_write.wait()
                if isinstance(result, FileResponse):
                    await self._send_file(request, result)
                else:
                    self._write(request, result)
        except (ConnectionError, RuntimeError) as exc:
            log.debug("client went away: %s", exc)
            self._close()
        finally:
            self.busy = False
        if not self.closing:
            self.transport.resume_reading()
            self._process()

    def _parse(self) -> Request | None:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_HEAD:
                self._fail(431, "Request head too large")
            return None
        if end > MAX_HEAD:
            self._fail(431, "Request head too large")
            return None
        try:
            head = self.buffer[:end].decode("latin-1")
        except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
            self._fail(400, "Bad request head")
            return None
        lines = head.split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or parts[2] not in ("HTTP/1.1", "HTTP/1.0") or not parts[1].startswith("/"):
            self._fail(400, "Bad request line")
            return None
        method, target, version = parts
        if not (target.isascii() and target.isprintable()):
            self._fail(400, "Bad characters in the request target")
            return None
        joined = "".join(lines)
        if "\n" in joined or "\r" in joined or "\x00" in joined:
            self._fail(400, "Bad characters in the request head")  # bare CR or LF, NUL: smuggling attempts
            return None
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon or not name or name != name.strip():
                self._fail(400, "Bad header line")
                return None
            headers[name.lower()] = value.strip()
        if "transfer-encoding" in headers:
            self._fail(411, "Chunked request bodies are not accepted: send Content-Length")
            return None
        length = headers.get("content-length", "0")
        if not length.isdigit():
            self._fail(400, "Bad Content-Length")
            return None
        size = int(length)
        if size > MAX_BODY:
            self._fail(413, "Request body too large")
            return None
        total = end + 4 + size
        if len(self.buffer) < total:
            return None
        body = bytes(self.buffer[end + 4 : total])
        del self.buffer[:total]
        if method not in ("GET", "HEAD", "POST"):
            self._fail(405, "Method not allowed")
            return None
        return Request(method, target, version, headers, body)

    # -- responses --

    def _head(
        self, request: Request, status: int, content_type: str, length: int, extra: list[tuple[str, str]]
    ) -> bytes:
        head = (
            f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}\r\nDate: {_Date.now(self.loop)}\r\n"
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

    def _write(self, request: Request, response: Response) -> None:
        if response.headers:
            head = self._head(
                request, response.status, response.content_type, len(response.body), response.headers
            )
        else:
            # The common answer (/version): the same head for every device with the same body length,
            # until the Date second changes. Cached per second, at most a few hundred variants.
            key = (
                response.status,
                response.content_type,
                len(response.body),
                request.keep_alive,
                request.version,
            )
            heads = _HEADS.get(self.loop)
            head = heads.get(key)
            if head is None:
                head = heads[key] = self._head(request, response.status, response.content_type, key[2], [])
        self.transport.write(head if request.method == "HEAD" else head + response.body)
        if self.done is not None:
            self.done(request, response.status)
        if not request.keep_alive:
            self._close()

    async def _send_file(self, request: Request, response: FileResponse) -> None:
        try:
            file = open(response.path, "rb")  # noqa: SIM115 - closed below, after sendfile
        except OSError:
            self._write(request, text(404, "Not found"))
            return
        with file:
            size = os.fstat(file.fileno()).st_size
            extra = [("Accept-Ranges", "bytes")]
            if response.etag:
                extra.append(("ETag", response.etag))
            start, count, status = 0, size, 200
            wanted = request.headers.get("range")
            if_range = request.headers.get("if-range")
            if wanted and (if_range is None or if_range == response.etag):
                try:
                    span = parse_range(wanted, size)
                except ValueError:
                    span = (0, size - 1) if size else None
                    wanted = None
                if span is None:
                    response.status = 416
                    self._write(request, Response(416, b"", "", [("Content-Range", f"bytes */{size}")]))
                    return
                if wanted:
                    start, count, status = span[0], span[1] - span[0] + 1, 206
                    extra.append(("Content-Range", f"bytes {span[0]}-{span[1]}/{size}"))
            response.status = status
            self.transport.write(self._head(request, status, response.content_type, count, extra))
            if request.method != "HEAD" and count:
                await self._sendfile(file, start, count)
                if response.on_sent is not None:
                    response.on_sent(count)
        if self.done is not None:
            self.done(request, status)
        if not request.keep_alive:
            self._close()

    async def _sendfile(self, file, offset: int, count: int) -> None:
        """os.sendfile straight from the page cache to the socket. Done here rather than with
        loop.sendfile because uvloop (the faster loop, used when installed) has no native sendfile and
        its fallback copies through Python. The socket is written through a dup of its descriptor, only
        once the transport's own buffer is empty, so the head always goes out before the body."""
        while self.transport.get_write_buffer_size():
            await asyncio.sleep(0.001)
        sock = self.transport.get_extra_info("socket")
        if sock is None:  # not a socket transport (tests with a fake one): let asyncio do it
            await self.loop.sendfile(self.transport, file, offset, count)
            return
        fd = os.dup(sock.fileno())
        try:
            while count:
                try:
                    sent = os.sendfile(fd, file.fileno(), offset, count)
                except BlockingIOError:
                    writable = self.loop.create_future()
                    self.loop.add_writer(fd, writable.set_result, None)
                    try:
                        await writable
                    finally:
                        self.loop.remove_writer(fd)
                    continue
                if sent == 0:
                    raise ConnectionError("peer closed during sendfile")
                offset += sent
                count -= sent
        finally:
            os.close(fd)

    def _fail(self, status: int, message: str) -> None:
        body = message.encode()
        self.transport.write(
            f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        self._close()

    def _close(self) -> None:
        self.closing = True
        self.buffer.clear()
        if self.transport is not None:
            self.transport.close()


async def start_server(
    app: App, host: str, port: int, done: Done | None = None, idle_timeout: float = IDLE_TIMEOUT
) -> HttpServer:
    """Listen with SO_REUSEPORT, so several worker processes can share the port. Connections that send
    nothing for `idle_timeout` seconds while no response is in progress are closed (an idle keep-alive
    connection, or a client that never finishes its request head, must not hold a descriptor forever)."""
    loop = asyncio.get_running_loop()
    connections: set[HttpProtocol] = set()
    server = await loop.create_server(
        lambda: HttpProtocol(app, loop, done, connections), host, port, reuse_port=True, backlog=1024
    )

    async def sweep() -> None:
        while server.is_serving():
            await asyncio.sleep(min(5.0, idle_timeout / 2))
            deadline = loop.time() - idle_timeout
            for connection in [c for c in connections if not c.busy and c.last_active < deadline]:
                connection._close()

    return HttpServer(server, loop.create_task(sweep()))


class HttpServer:
    """The listening server and its idle-connection sweeper, closed together."""

    def __init__(self, server: asyncio.Server, sweeper: asyncio.Task) -> None:
        self.server, self.sweeper = server, sweeper

    @property
    def port(self) -> int:
        return self.server.sockets[0].getsockname()[1]

    def close(self) -> None:
        self.server.close()
        self.sweeper.cancel()
