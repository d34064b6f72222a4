"""The access log (ACCESS_LOG): one JSON line per answered request, naming the device and the version it
was answered, never a secret. Against the real server and the real registry."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest

from otaflux.access import AccessLog
from otaflux.config import ConfigError, load

SECRET = "s3cr3t-webhook-value"


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_each_request_is_a_line_with_the_version_answered_to_its_device(
    registry, prefix, push_image, otaflux_factory, tmp_path
) -> None:
    old = push_image(f"{prefix}dev-a", "1.0.0", b"a" * 1000)
    new = push_image(f"{prefix}dev-b", "1.1.0", b"b" * 5000)
    access = tmp_path / "access.log"
    server = otaflux_factory(
        {
            "REGISTRY_URL": registry.url,
            "REPOSITORY_PREFIX": prefix,
            "ACCESS_LOG": str(access),
            "WEBHOOK_SECRET": SECRET,
        }
    )
    assert server.get("/version?device=dev-a")[0] == 200
    assert server.get("/version?device=dev-b")[0] == 200
    assert server.get("/version?device=dev-b")[0] == 200  # cached: answered inline, logged the same
    assert server.get("/firmware?device=dev-b")[0] == 200
    assert server.get("/firmware?device=dev-b", {"Range": "bytes=0-99"})[0] == 206
    assert server.get("/v1/manifest?device=dev-a")[0] == 200
    assert server.get("/version?device=nobody")[0] == 404
    assert server.get("/version?device=../etc")[0] == 400
    assert server.get(f"/health?token={SECRET}")[0] == 200
    status, _ = server.post("/webhooks/registry", b'{"events": []}', {"Authorization": f"Bearer {SECRET}"})
    assert status == 200
    assert server.post("/webhooks/registry", b"{}", {"Authorization": "Bearer wrong"})[0] == 401
    server.process.stop()  # SIGTERM: the buffer is written at shutdown

    logged = lines(access)
    while logged[0]["path"] == "/health":
        logged.pop(0)  # the fixture's readiness probes
    assert [(e["method"], e["path"], e.get("device"), e["status"]) for e in logged] == [
        ("GET", "/version", "dev-a", 200),
        ("GET", "/version", "dev-b", 200),
        ("GET", "/version", "dev-b", 200),
        ("GET", "/firmware", "dev-b", 200),
        ("GET", "/firmware", "dev-b", 206),
        ("GET", "/v1/manifest", "dev-a", 200),
        ("GET", "/version", "nobody", 404),
        ("GET", "/version", None, 400),  # not a valid id: not logged as one
        ("GET", "/health", None, 200),
        ("POST", "/webhooks/registry", None, 200),
        ("POST", "/webhooks/registry", None, 401),
    ]
    answered = {(e["device"], e["version"], e["digest"]) for e in logged if "version" in e}
    assert answered == {("dev-a", "1.0.0", old.digest), ("dev-b", "1.1.0", new.digest)}
    assert [e["bytes"] for e in logged if e["path"] == "/firmware"] == [5000, 100]
    assert all("version" not in e for e in logged if e["status"] >= 400)
    assert all(isinstance(e["ms"], float) and e["time"].endswith("Z") for e in logged)
    text = access.read_text()
    assert SECRET not in text and "wrong" not in text and "token" not in text  # no query, no header
    assert SECRET not in server.log_text()


def test_an_abandoned_download_is_logged_with_the_bytes_that_went_out(
    registry, prefix, push_image, otaflux_factory, tmp_path
) -> None:
    size = 16 * 1024 * 1024
    push_image(f"{prefix}dev-c", "2.0.0", os.urandom(size))
    access = tmp_path / "access.log"
    server = otaflux_factory(
        {"REGISTRY_URL": registry.url, "REPOSITORY_PREFIX": prefix, "ACCESS_LOG": str(access)}
    )
    assert server.get("/version?device=dev-c")[0] == 200  # fetched and cached
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    sock.sendall(b"GET /firmware?device=dev-c HTTP/1.1\r\nHost: ota\r\n\r\n")
    assert sock.recv(1024).startswith(b"HTTP/1.1 200")
    time.sleep(0.3)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()  # reset: the download ends part-way
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and len(lines(access)) < 2:
        time.sleep(0.2)  # written within a second
    download = [e for e in lines(access) if e["path"] == "/firmware"]
    assert len(download) == 1 and download[0]["version"] == "2.0.0", download
    assert 0 < download[0]["bytes"] < size


def test_off_writes_nothing_and_a_bad_target_is_a_configuration_error(tmp_path) -> None:
    base = {"REGISTRY_URL": "http://127.0.0.1:5000"}
    assert load(None, base).access_log == "stdout"  # on by default, as nginx's
    assert AccessLog.from_setting(load(None, {**base, "ACCESS_LOG": "off"}).access_log) is None
    assert load(None, {**base, "ACCESS_LOG": str(tmp_path / "a.log")}).access_log == str(tmp_path / "a.log")
    for bad in (str(tmp_path / "missing" / "a.log"), str(tmp_path)):
        with pytest.raises(ConfigError, match="ACCESS_LOG"):
            load(None, {**base, "ACCESS_LOG": bad})


def test_lines_are_json_even_for_odd_paths(tmp_path) -> None:
    log = AccessLog(str(tmp_path / "a.log"))
    log.record("GET", '/x"\\y', None, 404, None, None, 9, 0.0001)
    log.record("GET", "/version", "dev-1", 200, "1.0.0", "sha256:" + "0" * 64, 18, 0.002)
    log.close()
    first, second = lines(tmp_path / "a.log")
    assert first["path"] == '/x"\\y' and "device" not in first and first["bytes"] == 9
    assert (second["device"], second["version"], second["status"]) == ("dev-1", "1.0.0", 200)
