"""Pure parts of OtaFlux: HTTP parsing, Range, the LRU cache, the plan loader, configuration."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from otaflux import config
from otaflux.cache import Firmware, FirmwareCache
from otaflux.http import HttpProtocol
from otaflux.http_messages import FileResponse, Response, parse_range
from otaflux.plan import PlanSource
from weatherfleet import oci
from weatherfleet.rollout import FleetPlan, RolloutPlan


class FakeTransport:
    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.data += data

    def get_extra_info(self, _name: str):
        return None

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _serve(raw: bytes, app=None) -> tuple[bytes, bool, list]:
    seen = []

    def echo(request):
        seen.append(request)
        return Response(200, f"{request.method} {request.path} {request.query}".encode())

    loop = asyncio.new_event_loop()
    try:
        protocol = HttpProtocol(app or echo, loop)
        transport = FakeTransport()
        protocol.connection_made(transport)
        protocol.data_received(raw)
        return bytes(transport.data), transport.closed, seen
    finally:
        loop.close()


def test_pipelined_keep_alive_requests_are_answered_in_order() -> None:
    raw = (
        b"GET /a?device=x HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    )
    out, closed, seen = _serve(raw)
    assert [r.path for r in seen] == ["/a", "/b"]
    assert out.count(b"HTTP/1.1 200 OK") == 2
    assert out.index(b"/a {'device': 'x'}") < out.index(b"/b {}")
    assert out.endswith(b"GET /b {}") and b"Connection: close" in out and closed


def test_request_split_across_packets_and_a_body() -> None:
    out, _closed, seen = _serve(b"POST /hook HTTP/1.1\r\nContent-Length: 5\r\n\r\nhel")
    assert out == b"" and seen == []
    loop = asyncio.new_event_loop()
    got = []
    protocol = HttpProtocol(lambda r: got.append(r.body) or Response(200, b"ok"), loop)
    transport = FakeTransport()
    protocol.connection_made(transport)
    for piece in (b"POST /hook HTTP/1.1\r\nContent-", b"Length: 5\r\n\r\nhel", b"lo"):
        protocol.data_received(piece)
    loop.close()
    assert got == [b"hello"] and transport.data.startswith(b"HTTP/1.1 200 OK")


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /x HTTP/2.0\r\n\r\n", 400),
        (b"GET x HTTP/1.1\r\n\r\n", 400),
        (b"GET /x\x01y HTTP/1.1\r\n\r\n", 400),
        (b"GET /\xc3\xa9 HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nBad header\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nX: a\nInjected: b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nX: a\x00\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 411),
        (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", 413),
        (b"DELETE / HTTP/1.1\r\n\r\n", 405),
        (b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n", 431),
    ],
)
def test_malformed_requests_get_a_4xx_and_the_connection_closes(raw: bytes, status: int) -> None:
    out, closed, seen = _serve(raw)
    assert out.startswith(f"HTTP/1.1 {status} ".encode()) and closed and seen == []
    assert b"Connection: close" in out


def test_http10_closes_unless_keep_alive() -> None:
    _out, closed, _ = _serve(b"GET / HTTP/1.0\r\n\r\n")
    assert closed
    out, closed, _ = _serve(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert not closed and b"Connection: keep-alive" in out


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        ("bytes=0-99", 1000, (0, 99)),
        ("bytes=900-", 1000, (900, 999)),
        ("bytes=-100", 1000, (900, 999)),
        ("bytes=-5000", 1000, (0, 999)),
        ("bytes=990-2000", 1000, (990, 999)),
        ("bytes=1000-", 1000, None),
        ("bytes=5-1", 1000, None),
        ("bytes=-0", 1000, None),
    ],
)
def test_parse_range(header: str, size: int, expected) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "items=0-1", "bytes=abc", "bytes"])
def test_unsupported_ranges_are_ignored(header: str) -> None:
    with pytest.raises(ValueError):
        parse_range(header, 100)


async def test_file_response_range_and_416(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(bytes(range(256)) * 4)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: HttpProtocol(lambda r: FileResponse(path, etag='"e"'), loop), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]

    async def ask(headers: str) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"GET /f HTTP/1.1\r\nConnection: close\r\n{headers}\r\n".encode())
        data = await reader.read()
        writer.close()
        return data

    assert (await ask("Range: bytes=1000-\r\n")).split(b"\r\n\r\n", 1)[1] == (bytes(range(256)) * 4)[1000:]
    assert (await ask("Range: bytes=5000-\r\n")).startswith(b"HTTP/1.1 416")
    changed = await ask('Range: bytes=0-9\r\nIf-Range: "other"\r\n')
    assert changed.startswith(b"HTTP/1.1 200") and len(changed.split(b"\r\n\r\n", 1)[1]) == 1024
    server.close()


def _firmware(cache: FirmwareCache, n: int, size: int) -> Firmware:
    digest = f"sha256:{n:064x}"
    directory = cache.directory_for("fw/dev", digest)
    directory.mkdir(parents=True)
    (directory / "image").write_bytes(b"x" * size)
    return Firmware(
        "dev",
        "fw/dev",
        f"1.0.{n}",
        "image",
        oci.Manifest(b"{}", digest),
        None,
        directory,
        directory / "image",
        size,
        0,
        "",
    )


def test_cache_is_lru_bounded_by_entries_and_bytes(tmp_path: Path) -> None:
    cache = FirmwareCache(tmp_path / "c", max_entries=3, max_bytes=10_000)
    entries = [_firmware(cache, i, 3000) for i in range(4)]
    for entry in entries[:3]:
        cache.put(entry)
    assert cache.get(entries[0].key) is entries[0]  # touch: entry 1 is now the least recently used
    cache.put(entries[3])  # 12 000 bytes > 10 000: one must go
    assert entries[1].key not in cache and not entries[1].directory.exists()
    assert all(e.key in cache for e in (entries[0], entries[2], entries[3]))
    assert cache.bytes == 9000 and len(cache) == 3
    big = _firmware(cache, 9, 20_000)
    cache.put(big)  # larger than the bound alone: kept (it is being served), everything else evicted
    assert len(cache) == 1 and big.key in cache


def test_cache_starts_empty_even_over_an_old_directory(tmp_path: Path) -> None:
    (tmp_path / "c" / "leftover").mkdir(parents=True)
    (tmp_path / "c" / "leftover" / "image").write_bytes(b"old")
    FirmwareCache(tmp_path / "c", 3, 10_000)
    assert list((tmp_path / "c").iterdir()) == []


def test_plan_source_keeps_the_last_good_plan(tmp_path: Path) -> None:
    path = tmp_path / "plan.json"
    source = PlanSource(path, poll_interval=0)
    assert source.current().fleets == {}  # not there yet: an empty plan, nobody is offered anything
    good = RolloutPlan(fleets={"ns/f": FleetPlan(stable="1.0.0", devices=["a"])})
    path.write_text(good.to_json())
    assert source.current().version_for("a") == "1.0.0"
    generation = source.generation
    path.write_text('{"fleets": {"ns/f": {"stable": "1.0.0", "bogus": 1}}}')  # extra=forbid
    assert source.current().version_for("a") == "1.0.0" and source.errors == 1
    path.write_text(RolloutPlan(fleets={"ns/f": FleetPlan(stable="1.1.0", devices=["a"])}).to_json())
    assert source.current().version_for("a") == "1.1.0" and source.generation > generation


def test_plan_directory_skips_hidden_files_and_keys_by_stem(tmp_path: Path) -> None:
    (tmp_path / ".hidden.json").write_text("{broken")
    (tmp_path / "weatherfleet.garden.json").write_text(json.dumps({"stable": "2.0.0", "devices": ["d1"]}))
    plan = PlanSource(tmp_path, poll_interval=0).current()
    assert list(plan.fleets) == ["weatherfleet/garden"] and plan.version_for("d1") == "2.0.0"


def test_environment_names_of_the_original_are_read() -> None:
    settings = config.load(
        None,
        {
            "REGISTRY_URL": "https://ghcr.io",
            "REPOSITORY_PREFIX": "org/fw/",
            "REGISTRY_USERNAME": "u",
            "REGISTRY_PASSWORD": "s3cr3t-pa55",
            "REGISTRY_INSECURE": "true",
            "LISTEN_ADDR": "127.0.0.1:8081",
            "METRICS_LISTEN_ADDR": "[::1]:9091",
            "LOG_LEVEL": "debug",
            "CACHE_SIZE": "7",
            "MQTT_TOPIC": "firmware/updates/",
        },
    )
    assert settings.listen == ("127.0.0.1", 8081)
    assert settings.metrics_listen == ("::1", 9091)
    assert (
        settings.registry_insecure and settings.cache_size == 7 and settings.mqtt_topic == "firmware/updates"
    )
    assert "s3cr3t-pa55" not in repr(settings) and settings.registry_password == "s3cr3t-pa55"  # not in logs


def test_event_loop_is_a_setting_like_the_others() -> None:
    registry = {"REGISTRY_URL": "http://registry:5000"}
    assert config.load(None, registry).event_loop == "uvloop"
    assert config.load(None, registry | {"OTAFLUX_LOOP": ""}).event_loop == "uvloop"  # empty: the default
    assert config.load(None, registry | {"OTAFLUX_LOOP": "AsyncIO"}).event_loop == "asyncio"
    with pytest.raises(config.ConfigError, match=r"^OTAFLUX_LOOP: 'trio' is not uvloop or asyncio$"):
        config.load(None, registry | {"OTAFLUX_LOOP": "trio"})
    assert config.OPTIONS["event_loop"][0] == "OTAFLUX_LOOP"  # so --event-loop and --help show it


def test_flags_win_over_the_environment() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    args = parser.parse_args(
        ["--registry-url", "oci-layout:///srv/oci", "--workers", "3", "--mqtt-topic", "fw"]
    )
    settings = config.load(args, {"REGISTRY_URL": "http://ignored:5000", "WORKERS": "1", "CACHE_SIZE": "9"})
    assert (settings.registry_url, settings.workers, settings.mqtt_topic) == (
        "oci-layout:///srv/oci",
        3,
        "fw",
    )
    assert settings.cache_size == 9  # not given as a flag: the environment still counts


async def test_idle_and_half_sent_connections_are_closed() -> None:
    from otaflux.http import start_server

    server = await start_server(
        lambda r: Response(200, b"ok"), "127.0.0.1", 0, idle_timeout=0.5, request_timeout=0.5
    )
    port = server.port
    idle_reader, _idle = await asyncio.open_connection("127.0.0.1", port)
    slow_reader, slow = await asyncio.open_connection("127.0.0.1", port)
    slow.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finishes its head
    # a connection that never sent a request, and one that never finished it: 408, then closed
    assert (await asyncio.wait_for(idle_reader.read(), 10)).startswith(b"HTTP/1.1 408 ")
    assert (await asyncio.wait_for(slow_reader.read(), 10)).startswith(b"HTTP/1.1 408 ")
    server.close()
