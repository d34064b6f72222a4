"""Issue 14: OtaFlux's HTTP layer against a hostile or odd client, over real sockets.

Framing is llhttp's (httptools): conflicting or malformed lengths are a 400 and a closed connection;
empty lines before a request line are skipped (RFC 9112 §2.2; the original OtaFlux firmware sends one).
Time is bounded by a total deadline per request (not reset by each byte) and an idle deadline between
requests; the number of connections with an unfinished request is capped. The last tests run the real
OtaFlux process: identifiers anchored on the whole string, webhooks outside the prefix ignored, and the
registry work of one webhook bounded."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest

from otaflux.http import start_server
from otaflux.http_messages import Response
from weatherfleet.services.process import wait_until

SECRET = "hook-secret-for-tests"


class App:
    def __init__(self) -> None:
        self.seen: list = []

    def __call__(self, request):
        self.seen.append(request)
        return Response(200, f"{request.method} {request.path} {len(request.body)}".encode())


async def _exchange(port: int, raw: bytes, timeout: float = 5.0) -> bytes:
    """Send raw bytes, read until the server closes (or the timeout)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    data = b""
    try:
        async with asyncio.timeout(timeout):
            while chunk := await reader.read(65536):
                data += chunk
    except TimeoutError:
        data += b"<still open>"
    writer.close()
    return data


@pytest.fixture
async def server():
    app = App()
    started = await start_server(app, "127.0.0.1", 0, idle_timeout=30, request_timeout=1.0, max_unfinished=4)
    started.app = app
    yield started
    started.close()


@pytest.mark.parametrize(
    ("head", "reason"),
    [
        (b"Content-Length: 1\r\nContent-Length: 2\r\n", b"Duplicate Content-Length"),
        (b"Content-Length: 1\r\nContent-Length: 1\r\n", b"Duplicate Content-Length"),
        (b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n", b"Transfer-Encoding"),
        (b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n", b"Content-Length"),
        ("Content-Length: \u00b2\r\n".encode(), b"Content-Length"),
        (b"Content-Length: " + b"9" * 5000 + b"\r\n", b"Content-Length overflow"),
        (b"Content-Length: 1,1\r\n", b"Content-Length"),
        (b"Content-Length: -1\r\n", b"Content-Length"),
        (b"Content-Length: 0x10\r\n", b"Content-Length"),
        (b"X: a\nContent-Length: 3\r\n", b"Bad request"),
        (b"X: a\rContent-Length: 3\r\n", b"Bad request"),
        (b"Content-Length : 1\r\n", b"Bad request"),
        (b" Content-Length: 1\r\n", b"Bad request"),
    ],
)
async def test_conflicting_and_malformed_framing_is_a_400_and_close(
    server, head: bytes, reason: bytes
) -> None:
    out = await _exchange(
        server.port, b"POST /hook HTTP/1.1\r\nHost: h\r\n" + head + b"\r\nabcGET / HTTP/1.1\r\n\r\n"
    )
    assert out.startswith(b"HTTP/1.1 400 "), out[:200]
    assert b"Connection: close" in out and reason in out
    assert not out.endswith(b"<still open>") and out.count(b"HTTP/1.1") == 1
    assert server.app.seen == []  # nothing smuggled through


async def test_leading_empty_lines_are_skipped(server) -> None:
    for prefix in (b"\r\n", b"\r\n\r\n", b"\n"):
        out = await _exchange(
            server.port, prefix + b"GET /version?device=d HTTP/1.1\r\nConnection: close\r\n\r\n"
        )
        assert out.startswith(b"HTTP/1.1 200 OK") and out.endswith(b"GET /version 0"), out


async def test_pipelined_requests_then_a_bad_one(server) -> None:
    raw = (
        b"GET /a HTTP/1.1\r\n\r\n"
        b"POST /b HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi"
        b"POST /c HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 9\r\n\r\nx"
    )
    out = await _exchange(server.port, raw)
    assert out.count(b"HTTP/1.1 200 OK") == 2 and b"GET /a 0" in out and b"POST /b 2" in out
    assert out.index(b"POST /b 2") < out.index(b"HTTP/1.1 400") and b"Connection: close" in out
    assert [r.path for r in server.app.seen] == ["/a", "/b"]


async def test_an_upgrade_is_answered_in_http11_and_the_connection_ends(server) -> None:
    raw = b"GET /x HTTP/1.1\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"
    out = await _exchange(server.port, raw + b"PRI * HTTP/2.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in out
    assert not out.endswith(b"<still open>")


async def _trickle(port: int, data: bytes, every: float, limit: float) -> tuple[bytes, float, int]:
    """Send `data` one byte every `every` seconds until the server closes; (answer, seconds, bytes sent)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started, sent, answer = time.monotonic(), 0, b""
    read = asyncio.ensure_future(reader.read())
    try:
        while time.monotonic() - started < limit and not read.done():
            writer.write(data[sent % len(data) : sent % len(data) + 1])
            sent += 1
            try:
                await asyncio.wait_for(asyncio.shield(read), every)
            except TimeoutError:
                pass
            except ConnectionError:
                break
        answer = await asyncio.wait_for(read, 5) if read.done() else b"<still open>"
    except ConnectionError:
        pass
    finally:
        read.cancel()
        writer.close()
    return answer, time.monotonic() - started, sent


async def test_a_trickled_head_is_closed_by_a_total_deadline(server) -> None:
    """Issue 14: the idle timer used to restart on every byte, so this connection lived forever."""
    answer, seconds, sent = await _trickle(
        server.port, b"GET /version?device=dev-01 HTTP/1.1\r\nX: " + b"y" * 500, 0.1, 10
    )
    assert answer.startswith(b"HTTP/1.1 408 ") and b"Connection: close" in answer
    assert 0.9 < seconds < 3.0, seconds
    assert sent < 40


async def test_endless_empty_lines_are_closed_too(server) -> None:
    answer, seconds, _sent = await _trickle(server.port, b"\r\n", 0.1, 10)
    assert answer.startswith(b"HTTP/1.1 408 ") and seconds < 3.0


async def test_a_connection_that_never_sends_is_closed(server) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    started = time.monotonic()
    out = await asyncio.wait_for(reader.read(), 5)
    assert out.startswith(b"HTTP/1.1 408 ") and time.monotonic() - started < 3.0
    writer.close()


async def test_unfinished_requests_are_capped_and_the_oldest_goes(server) -> None:
    """max_unfinished=4: a fifth connection with an unfinished head closes the oldest one; a client that
    sends its request in one go is still served."""
    streams = []
    for _ in range(4):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /slow HTTP/1.1\r\nX: ")
        await writer.drain()
        streams.append((reader, writer))
        await asyncio.sleep(0.02)
    assert len(server.limits.unfinished) == 4
    fifth = await asyncio.open_connection("127.0.0.1", server.port)
    out = await asyncio.wait_for(streams[0][0].read(), 2)
    assert out.startswith(b"HTTP/1.1 503 ")
    assert server.limits.evicted >= 1
    answer = await _exchange(server.port, b"GET /fine HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 OK")
    assert len(server.limits.unfinished) <= 4
    for _reader, writer in [*streams, fifth]:
        writer.close()


async def test_idle_keep_alive_is_not_reset_by_stray_bytes() -> None:
    """Between requests the idle deadline counts from the last response; a byte that starts no request
    starts the request deadline instead, so it cannot keep the connection alive either."""
    app = App()
    server = await start_server(app, "127.0.0.1", 0, idle_timeout=0.6, request_timeout=0.6)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /one HTTP/1.1\r\n\r\n")
        first = await reader.readuntil(b"GET /one 0")
        assert first.startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        rest = await asyncio.wait_for(reader.read(), 5)
        assert rest == b"" and 0.4 < time.monotonic() - started < 2.5
        writer.close()
    finally:
        server.close()


# -- the real OtaFlux process -------------------------------------------------------------------------


def _raw(port: int, data: bytes, timeout: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        out = b""
        try:
            while chunk := sock.recv(65536):
                out += chunk
        except TimeoutError:
            pass
        return out


def test_the_real_server_skips_empty_lines_and_refuses_conflicting_lengths(
    registry, prefix, otaflux_factory
) -> None:
    server = otaflux_factory(
        {"REGISTRY_URL": registry.url, "REPOSITORY_PREFIX": prefix, "WEBHOOK_SECRET": SECRET}
    )
    # what the original OtaFlux firmware sends: an empty line, then the request
    out = _raw(server.port, b"\r\nGET /health HTTP/1.1\r\nHost: ota\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 OK") and out.endswith(b"ok")
    smuggle = (
        b"POST /webhooks/registry HTTP/1.1\r\nHost: ota\r\nAuthorization: Bearer " + SECRET.encode() + b"\r\n"
        b'Content-Length: 12\r\nContent-Length: 54\r\n\r\n{"events":[]}GET /version?device=dev-01 HTTP/1.1\r\n\r\n'
    )
    out = _raw(server.port, smuggle)
    assert out.startswith(b"HTTP/1.1 400 ") and out.count(b"HTTP/1.1 ") == 1
    out = _raw(server.port, "GET /health HTTP/1.1\r\nContent-Length: \u00b2\r\n\r\n".encode())
    assert out.startswith(b"HTTP/1.1 400 ")
    out = _raw(server.port, b"GET /health HTTP/1.1\r\nContent-Length: " + b"1" * 5000 + b"\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 ")
    assert "Traceback" not in server.log_text()


def test_the_real_server_closes_a_trickled_head_within_its_deadline(
    registry, prefix, otaflux_factory
) -> None:
    server = otaflux_factory({"REGISTRY_URL": registry.url, "REPOSITORY_PREFIX": prefix})
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port), timeout=1) as sock:
        head = b"GET /version?device=dev-01 HTTP/1.1\r\nX: " + b"y" * 100
        answer = b""
        for index in range(30):  # a byte every 0.5 s: would be 15 s
            try:
                sock.send(head[index : index + 1])
                answer += sock.recv(1024)
                if answer:
                    break
            except TimeoutError:
                pass
            except ConnectionError:
                break
            time.sleep(0.5)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert time.monotonic() - started < 14


@pytest.mark.parametrize("device", ["dev-01%0A", "dev-01%0D%0A", "dev-01%00", "dev-01%0Ax"])
def test_device_ids_are_anchored_on_the_whole_string(counting_proxy, prefix, otaflux_factory, device) -> None:
    server = otaflux_factory({"REGISTRY_URL": counting_proxy.url, "REPOSITORY_PREFIX": prefix})
    status, _, body = server.get(f"/version?device={device}")
    assert status == 400 and b"Invalid device id" in body
    assert [path for (_method, path) in counting_proxy.requests if path != "/v2/"] == []


def _post(server, path: str, payload: dict) -> tuple[int, bytes]:
    return server.post(path, json.dumps(payload).encode(), {"Authorization": SECRET})


def test_webhooks_outside_the_prefix_or_with_a_newline_are_ignored(
    counting_proxy, prefix, push_image, otaflux_factory
) -> None:
    device = "dev-07"
    push_image(f"{prefix}{device}", "1.0.0", b"x" * 100)
    server = otaflux_factory(
        {"REGISTRY_URL": counting_proxy.url, "REPOSITORY_PREFIX": prefix, "WEBHOOK_SECRET": SECRET}
    )
    assert server.get(f"/version?device={device}")[0] == 200  # a known device
    before = counting_proxy.count("GET", device)
    harbor = {
        "type": "PUSH_ARTIFACT",
        "event_data": {
            "repository": {"name": device, "namespace": "other", "repo_full_name": f"other/{device}"}
        },
    }
    status, body = _post(server, "/webhooks/harbor", harbor)
    assert status == 200 and b"outside the prefix" in body
    bare = {"type": "PUSH_ARTIFACT", "event_data": {"repository": {"name": device}}}
    status, body = _post(server, "/webhooks/harbor", bare)
    assert status == 200 and b"outside the prefix" in body
    newline = {
        "events": [{"action": "push", "target": {"repository": f"{prefix}{device}\n", "tag": "2.0.0"}}]
    }
    status, body = _post(server, "/webhooks/registry", newline)
    assert status == 200 and body == b"refreshing 0 device(s)"
    time.sleep(1.0)  # what a refresh would have asked would be there by now
    assert counting_proxy.count("GET", device) == before
    # the same event for our own repository does refresh it
    status, body = _post(
        server,
        "/webhooks/registry",
        {"events": [{"action": "push", "target": {"repository": f"{prefix}{device}", "tag": "1.0.0"}}]},
    )
    assert body == b"refreshing 1 device(s)"
    wait_until(lambda: counting_proxy.count("GET", device) > before, 10, "the refresh")


def test_one_webhook_naming_200_unknown_devices_costs_a_bounded_number_of_lookups(
    counting_proxy, prefix, otaflux_factory
) -> None:
    server = otaflux_factory(
        {"REGISTRY_URL": counting_proxy.url, "REPOSITORY_PREFIX": prefix, "WEBHOOK_SECRET": SECRET}
    )
    events = [
        {
            "action": "push",
            "target": {
                "repository": f"{prefix}ghost-{i:03d}",
                "tag": "1.0.0",
                "digest": "sha256:" + "0" * 64,
            },
        }
        for i in range(200)
    ]
    status, body = _post(server, "/webhooks/registry", {"events": events})
    assert status == 200
    refreshed = int(body.split()[1])
    assert refreshed <= 8, body
    time.sleep(3.0)  # let the background refreshes run their course
    ghosts = {path.split("/")[3] for (_m, path) in counting_proxy.requests if "/ghost-" in path}
    assert len(ghosts) <= 8, ghosts
    requests = sum(n for (_m, path), n in counting_proxy.requests.items() if "/ghost-" in path)
    assert requests <= 8 * 8, requests  # was 800 for 200 devices
    # a second burst right away finds the budget spent
    status, body = _post(server, "/webhooks/registry", {"events": events})
    assert body == b"refreshing 0 device(s)"
