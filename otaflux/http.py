"""A small HTTP/1.1 server on asyncio's Protocol API, written for what OtaFlux serves.

Why not aiohttp: measured on this machine, aiohttp answers `/version` at ~0.15x nginx, and its
FileResponse does three thread-pool hops per download. This server answers a cached `/version` inline in
`data_received` (no task, no thread), and sends files with os.sendfile, which brings both numbers near
nginx (see bench/otaflux.py).

Parsing is llhttp's (Node's HTTP parser) through `httptools`, the binding uvicorn uses, not our own
(issue 14): framing is where request smuggling lives, and llhttp refuses duplicate `Content-Length`,
`Content-Length` with `Transfer-Encoding`, anything but ASCII digits in a length, lengths that overflow,
bare CR or LF, NUL and other bad characters in names, values and targets. It also skips empty lines
before a request line, as RFC 9112 §2.2 asks (embedded clients such as the original OtaFlux firmware
send one). What this module adds on top: a 16 KiB bound on the request head, a 1 MiB bound on bodies,
GET/HEAD/POST only, no request bodies in chunked encoding (411).

A request must arrive within a total deadline of its first byte, an idle keep-alive connection is closed,
and the connections holding an unfinished request are capped: otaflux.http_limits says how and why.

Scope, deliberately small: keep-alive by HTTP/1.1 rules (and `Connection: close`, HTTP/1.0); pipelined
requests are answered in order; one byte range (`Range: bytes=a-b | a- | -n`, `If-Range`), 416 when
unsatisfiable. Anything malformed gets a 4xx with a one-line reason and the connection is closed.

Where the rest lives: otaflux.http_messages (Request, Response, FileResponse, byte ranges),
otaflux.http_heads (response heads, cached per Date second), otaflux.http_limits (deadlines and caps).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable

import httptools

from .http_heads import REASONS, cached_head, response_head
from .http_limits import IDLE_TIMEOUT, MAX_UNFINISHED, REQUEST_TIMEOUT, Limits
from .http_messages import App, Done, FileResponse, Request, Response, Result, parse_range, text

log = logging.getLogger("otaflux.http")

MAX_HEAD = 16 * 1024
MAX_BODY = 1 << 20
MAX_PIPELINED = 32  # parsed requests waiting for their turn before the connection stops reading
_VERSIONS = {"1.1": "HTTP/1.1", "1.0": "HTTP/1.0"}
_METHODS = {b"GET": "GET", b"HEAD": "HEAD", b"POST": "POST"}


class _Reject(Exception):
    """Raised inside a parser callback: answer `status` with `message` and close."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class HttpProtocol(asyncio.Protocol):
    def __init__(
        self,
        app: App,
        loop: asyncio.AbstractEventLoop,
        done: Done | None = None,
        connections: set | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.app, self.loop, self.done = app, loop, done
        self.limits = limits or Limits()
        if connections is not None:
            self.limits.connections = connections
        self.connections = self.limits.connections
        self.transport: asyncio.Transport | None = None
        self.parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        # parsed, waiting for their turn (a list: an empty deque costs ~600 bytes per idle connection)
        self.pending: list[Request | _Reject] = []
        self.busy = False  # a request is being answered asynchronously; later ones wait in `pending`
        self.closing = False
        self.request_since: float | None = None  # first byte of the request not yet complete
        self.idle_since = loop.time()  # last response sent (or the connection made)
        # writable unless the transport paused us; a future only while someone waits (an asyncio.Event
        # costs ~750 bytes per connection, most of them idle or in a slow download)
        self._writable = True
        self._write_waiter: asyncio.Future | None = None
        self._reset_message()

    def _reset_message(self) -> None:
        self._url = b""
        self._headers: dict[str, str] = {}
        self._head_size = 0
        self._body: bytearray | None = None
        self._transfer_encoding = False

    # -- transport callbacks --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.connections.add(self)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._begin_request()  # a connection that never sends a request is an unfinished one

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        self.limits.unfinished.pop(self, None)
        self.closing = True
        self.resume_writing()

    def pause_writing(self) -> None:
        self._writable = False

    def resume_writing(self) -> None:
        self._writable = True
        waiter, self._write_waiter = self._write_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _until_writable(self) -> None:
        while not self._writable and not self.closing:
            self._write_waiter = self.loop.create_future()
            await self._write_waiter

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        if self.request_since is None:
            self._begin_request()
        if self.parser is None:
            self.parser = httptools.HttpRequestParser(self)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # an Upgrade (h2c, websocket) we do not speak: the request itself was complete and is
            # answered over HTTP/1.1; whatever follows is another protocol, so the connection ends there
            if self.pending and isinstance(self.pending[-1], Request):
                self.pending[-1].keep_alive = False
            self.transport.pause_reading()
        except httptools.HttpParserError as error:
            context = error.__context__
            if isinstance(context, _Reject):
                self.pending.append(context)
            else:
                self.pending.append(_Reject(400, f"Bad request: {error}"))
            self.transport.pause_reading()
        if not self.busy:
            self._process()
        elif len(self.pending) > MAX_PIPELINED:
            self.transport.pause_reading()  # a client pipelining far ahead: let TCP push back

    def idle(self, deadline: float) -> bool:
        """Between requests and nothing sent since `deadline` (the sweeper closes it then)."""
        return (
            self.request_since is None and not self.busy and not self.pending and self.idle_since < deadline
        )

    def _begin_request(self) -> None:
        self.request_since = self.loop.time()
        self.limits.begin(self)

    def _end_request(self) -> None:
        self.request_since = None
        self.limits.unfinished.pop(self, None)

    # -- parser callbacks (llhttp, through httptools) --

    def on_message_begin(self) -> None:
        if self.request_since is None:  # a pipelined request in the same packet as the previous one
            self._begin_request()

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_size += len(url)
        if self._head_size > MAX_HEAD:
            raise _Reject(431, "Request head too large")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        if self._head_size > MAX_HEAD:
            raise _Reject(431, "Request head too large")
        key = name.decode("latin-1").lower()
        if key == "transfer-encoding":
            self._transfer_encoding = True
        self._headers[key] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        parser = self.parser
        version = _VERSIONS.get(parser.get_http_version())
        if version is None:
            raise _Reject(400, "Bad request line: HTTP/1.1 or HTTP/1.0 only")
        target = self._url.decode("latin-1")
        if not target.startswith("/") or not (target.isascii() and target.isprintable()):
            raise _Reject(400, "Bad request target: an absolute path of printable ASCII")
        if self._transfer_encoding:  # (with Content-Length as well, llhttp has refused it already)
            raise _Reject(411, "Chunked request bodies are not accepted: send Content-Length")
        length = self._headers.get("content-length")
        if length is not None and int(length) > MAX_BODY:  # llhttp checked: ASCII digits, no overflow
            raise _Reject(413, "Request body too large")
        method = _METHODS.get(parser.get_method())
        if method is None:
            raise _Reject(405, "Method not allowed")
        self._method, self._target, self._version = method, target, version
        self._keep_alive = parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        if self._body is None:
            self._body = bytearray(body)
        else:
            self._body += body

    def on_message_complete(self) -> None:
        body = bytes(self._body) if self._body is not None else b""
        self.pending.append(
            Request(self._method, self._target, self._version, self._headers, body, self._keep_alive)
        )
        self._reset_message()
        self._end_request()

    # -- request loop --

    def _process(self) -> None:
        pending = self.pending
        while pending and not self.closing and not self.busy:
            request = pending.pop(0)
            if isinstance(request, _Reject):
                self._fail(request.status, request.message)
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
                if self.request_since is None and not pending:
                    # nothing of a next request is held: the parser (~900 bytes) is made again when
                    # the client next sends, instead of sitting in every slow download
                    self.parser = None
                self.loop.create_task(self._finish(request, result))

    async def _finish(self, request: Request, pending: Result | Awaitable[Result]) -> None:
        try:
            try:
                result = pending if isinstance(pending, FileResponse) else await pending
            except Exception:
                log.exception("handler failed for %s %s", request.method, request.path)
                result = text(500, "Internal error")
            if not self.closing:
                await self._until_writable()
                if isinstance(result, FileResponse):
                    await self._send_file(request, result)
                else:
                    self._write(request, result)
        except (ConnectionError, RuntimeError) as exc:
            log.debug("client went away: %s", exc)
            self._close()
        finally:
            self.busy = False
            self.idle_since = self.loop.time()
        if not self.closing:
            self.transport.resume_reading()
            self._process()

    # -- responses --

    def _write(self, request: Request, response: Response) -> None:
        status, content_type, length = response.status, response.content_type, len(response.body)
        if response.headers:
            head = response_head(self.loop, request, status, content_type, length, response.headers)
        else:
            head = cached_head(self.loop, request, status, content_type, length)
        if request.method == "HEAD":
            self.transport.write(head)
        else:
            self.transport.write(head + response.body)
            request.sent = len(response.body)
        self.idle_since = self.loop.time()
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
            self.transport.write(
                response_head(self.loop, request, status, response.content_type, count, extra)
            )
            if request.method != "HEAD" and count:
                try:
                    await self._sendfile(file, start, count)
                except BaseException:
                    if self.done is not None:  # abandoned mid-way: logged with what went out
                        request.sent = self._sent
                        self.done(request, status)
                    raise
                request.sent = count
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
        self._sent = 0
        while self.transport.get_write_buffer_size():
            await asyncio.sleep(0.001)
        sock = self.transport.get_extra_info("socket")
        if sock is None:  # not a socket transport (tests with a fake one): let asyncio do it
            await self.loop.sendfile(self.transport, file, offset, count)
            return
        fd = os.dup(sock.fileno())
        source = file.fileno()
        done = self.loop.create_future()
        left = [offset, count]

        def pump() -> None:
            # runs in the writer callback: one plain call per writable event, no future, no task step
            # (a slow reader makes thousands of these a second across a wave of downloads)
            try:
                while left[1]:
                    if self.closing:
                        raise ConnectionError("connection closed during sendfile")
                    sent = os.sendfile(fd, source, left[0], left[1])
                    if sent == 0:
                        raise ConnectionError("peer closed during sendfile")
                    left[0] += sent
                    left[1] -= sent
            except BlockingIOError:
                return  # the next writable event continues
            except BaseException as exc:
                if not done.done():
                    done.set_exception(exc)
                return
            if not done.done():
                done.set_result(None)

        try:
            pump()
            if not done.done():
                self.loop.add_writer(fd, pump)
            await done
        finally:
            self._sent = left[0] - offset
            self.loop.remove_writer(fd)
            os.close(fd)

    def _fail(self, status: int, message: str) -> None:
        body = message.encode()
        self.transport.write(
            f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        self._close()

    def _timeout(self) -> None:
        """The request missed its deadline: 408 when nothing else is being sent, then close."""
        if self.busy or self.closing:
            self._abort()
        else:
            self._fail(408, "Request not received in time")

    def _abort(self) -> None:
        self._end_request()
        if self.busy:  # a response is going out on this connection: no 4xx in the middle of it
            self.closing = True
            self.pending.clear()
            self.transport.close()
        else:
            self._fail(503, "Too many unfinished requests")

    def _close(self) -> None:
        self.closing = True
        self.pending.clear()
        self._end_request()
        if self.transport is not None:
            self.transport.close()


async def start_server(
    app: App,
    host: str,
    port: int,
    done: Done | None = None,
    idle_timeout: float = IDLE_TIMEOUT,
    request_timeout: float = REQUEST_TIMEOUT,
    max_unfinished: int = MAX_UNFINISHED,
) -> HttpServer:
    """Listen with SO_REUSEPORT, so several worker processes can share the port. The deadlines and the
    bound on unfinished requests are described in otaflux.http_limits."""
    loop = asyncio.get_running_loop()
    limits = Limits(idle_timeout, request_timeout, max_unfinished)
    server = await loop.create_server(
        lambda: HttpProtocol(app, loop, done, limits=limits), host, port, reuse_port=True, backlog=1024
    )

    async def sweep() -> None:
        interval = max(0.05, min(1.0, request_timeout / 4, idle_timeout / 4))
        while server.is_serving():
            await asyncio.sleep(interval)
            limits.sweep(loop.time())

    return HttpServer(server, loop.create_task(sweep()), limits)


class HttpServer:
    """The listening server and its deadline sweeper, closed together."""

    def __init__(self, server: asyncio.Server, sweeper: asyncio.Task, limits: Limits | None = None) -> None:
        self.server, self.sweeper, self.limits = server, sweeper, limits or Limits()

    @property
    def port(self) -> int:
        return self.server.sockets[0].getsockname()[1]

    def close(self) -> None:
        self.server.close()
        self.sweeper.cancel()
