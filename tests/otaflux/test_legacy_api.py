"""The API of the original OtaFlux, against the real registry: what small embedded clients rely on."""

from __future__ import annotations

import asyncio
import os
import socket
import zlib

import pytest


def _read_head(sock: socket.socket, buffer: bytearray) -> tuple[int, dict[str, str]]:
    """Read one response's head from a raw socket; what follows it stays in `buffer`."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        assert chunk, "server closed before the response head"
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    buffer[:] = rest
    return status, headers


def _read_response(sock: socket.socket, buffer: bytearray) -> tuple[int, dict[str, str], bytes]:
    status, headers = _read_head(sock, buffer)
    length = int(headers["content-length"])
    while len(buffer) < length:
        chunk = sock.recv(65536)
        assert chunk, "server closed before the body was complete"
        buffer += chunk
    body = bytes(buffer[:length])
    buffer[:] = buffer[length:]
    return status, headers, body


def test_embedded_client_one_connection_version_then_firmware_to_eof(
    registry, prefix, push_image, otaflux_factory
) -> None:
    firmware = os.urandom(300_000)
    push_image(f"{prefix}dev-01", "1.0.0", b"old" * 100)
    push_image(f"{prefix}dev-01", "1.2.0", firmware)
    push_image(f"{prefix}dev-01", "latest", b"not a version")
    server = otaflux_factory({"REGISTRY_URL": registry.url, "REPOSITORY_PREFIX": prefix})

    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        buffer = bytearray()
        sock.sendall(b"GET /version?device=dev-01 HTTP/1.1\r\nHost: ota\r\n\r\n")
        status, headers, body = _read_response(sock, buffer)
        assert status == 200 and headers["content-type"].startswith("text/plain")
        version, crc, size = body.decode().split("\n")
        assert (version, int(crc), int(size)) == ("1.2.0", zlib.crc32(firmware), len(firmware))

        # Same connection, then read until the server closes it, as a minimal client does.
        sock.sendall(b"GET /firmware?device=dev-01 HTTP/1.1\r\nHost: ota\r\nConnection: close\r\n\r\n")
        status, headers = _read_head(sock, buffer)
        assert status == 200
        assert headers["content-type"] == "application/octet-stream"
        assert headers["content-length"] == str(len(firmware))
        assert "chunked" not in headers.get("transfer-encoding", "")
        data = bytearray(buffer)
        while chunk := sock.recv(65536):
            data += chunk
        received = bytes(data)
    assert len(received) == int(size) and zlib.crc32(received) == int(crc)
    assert received == firmware


def test_http10_client_gets_content_length_and_close(registry, prefix, push_image, otaflux_factory) -> None:
    push_image(f"{prefix}dev-02", "0.1.0", b"x" * 5000)
    server = otaflux_factory({"REGISTRY_URL": registry.url, "REPOSITORY_PREFIX": prefix})
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(b"GET /firmware?device=dev-02 HTTP/1.0\r\n\r\n")
        data = bytearray()
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    assert b"Content-Length: 5000" in head and body == b"x" * 5000


def test_missing_and_unknown_devices(registry, prefix, push_image, otaflux_factory) -> None:
    push_image(f"{prefix}dev-03", "latest", b"only a non-semver tag")
    server = otaflux_factory({"REGISTRY_URL": registry.url, "REPOSITORY_PREFIX": prefix})
    assert server.get("/version")[0] == 400
    assert server.get("/version?device=")[0] == 400
    assert server.get("/firmware")[0] == 400
    status, _, body = server.get("/version?device=nobody-here")
    assert status == 404 and b"nobody-here" in body
    assert server.get("/version?device=dev-03")[0] == 404  # `latest` is ignored
    assert server.get("/firmware?device=dev-03")[0] == 404
    assert server.get("/health")[:3:2] == (200, b"ok")


def test_prerelease_ordering_follows_semver(registry, prefix, push_image, otaflux_factory) -> None:
    for tag in ("1.0.0-rc.1", "1.0.0-beta.11", "1.0.0-beta.2", "0.9.9"):
        push_image(f"{prefix}dev-04", tag, tag.encode())
    server = otaflux_factory({"REGISTRY_URL": registry.url, "REPOSITORY_PREFIX": prefix})
    assert server.get("/version?device=dev-04")[2].split(b"\n")[0] == b"1.0.0-rc.1"
    push_image(f"{prefix}dev-05", "1.0.0", b"final")
    for tag in ("1.0.0-rc.1", "1.0.0-alpha"):
        push_image(f"{prefix}dev-05", tag, tag.encode())
    assert server.get("/version?device=dev-05")[2].split(b"\n")[0] == b"1.0.0"


async def test_a_burst_for_a_cold_device_costs_one_registry_fetch(
    counting_proxy, prefix, push_image, otaflux_factory
) -> None:
    pushed = push_image(f"{prefix}dev-06", "3.1.4", os.urandom(200_000))
    server = otaflux_factory({"REGISTRY_URL": counting_proxy.url, "REPOSITORY_PREFIX": prefix})

    async def ask() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /version?device=dev-06 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = await reader.read()
        writer.close()
        return data

    answers = await asyncio.wait_for(asyncio.gather(*(ask() for _ in range(200))), 120)
    assert all(a.startswith(b"HTTP/1.1 200") and a.endswith(b"\n200000") for a in answers)
    repo = f"/v2/{prefix}dev-06"
    assert counting_proxy.count("GET", f"{repo}/manifests/{pushed.digest}") == 1
    assert counting_proxy.count("GET", f"{repo}/tags/list") == 1
    assert counting_proxy.count("HEAD", f"{repo}/manifests/3.1.4") == 1
    assert counting_proxy.count("GET", f"{repo}/blobs/") == 1
    assert server.metric("otaflux_registry_fetches_total") == 1
    assert server.metric("otaflux_cache_hits_total") + server.metric("otaflux_cache_misses_total") == 200


@pytest.mark.parametrize(
    "device",
    [
        "../etc/passwd",
        "..",
        "a/b",
        "%2e%2e%2fetc",
        "dev%00x",
        "dev%0d%0aX-Injected:%201",
        "d" * 10_000,
        "d%C3%A9v",
        "dev%2001",
        "a%2Fb",
        "%E2%80%AEdev",
        "-dev",
        "dev..01",
    ],
)
def test_hostile_device_ids_are_refused_before_any_registry_call(
    counting_proxy, prefix, otaflux_factory, device
) -> None:
    server = otaflux_factory({"REGISTRY_URL": counting_proxy.url, "REPOSITORY_PREFIX": prefix})
    for path in ("/version", "/firmware", "/v1/manifest"):
        status, _, body = server.get(f"{path}?device={device}")
        assert status in (400, 414), (path, status, body)
        assert len(body) < 200
    # Only the health probe (GET /v2/) may have reached the registry: nothing with a repository in it.
    assert [path for (_method, path) in counting_proxy.requests if path != "/v2/"] == []
    assert list((server.log.parent / "cache").rglob("*")) == [server.log.parent / "cache" / "worker-0"]


def test_a_layer_that_is_a_tar_gz_with_firmware_bin_is_unpacked_as_the_original_does(
    registry, store, prefix, tmp_path, otaflux_factory
) -> None:
    import gzip
    import io
    import tarfile

    binary = os.urandom(70_000)
    packed = io.BytesIO()
    with tarfile.open(fileobj=packed, mode="w") as archive:
        info = tarfile.TarInfo("build/firmware.bin")
        info.size = len(binary)
        archive.addfile(info, io.BytesIO(binary))
    (tmp_path / "firmware.tar.gz").write_bytes(gzip.compress(packed.getvalue()))
    store.push_image(f"{prefix}dev-12", "1.0.0", tmp_path / "firmware.tar.gz", version="1.0.0")
    other = io.BytesIO()
    with tarfile.open(fileobj=other, mode="w") as archive:
        info = tarfile.TarInfo("README.md")
        info.size = 5
        archive.addfile(info, io.BytesIO(b"hello"))
    (tmp_path / "other.tar").write_bytes(other.getvalue())
    store.push_image(f"{prefix}dev-13", "1.0.0", tmp_path / "other.tar", version="1.0.0")
    server = otaflux_factory({"REGISTRY_URL": registry.url, "REPOSITORY_PREFIX": prefix})

    assert server.get("/version?device=dev-12")[2] == f"1.0.0\n{zlib.crc32(binary)}\n{len(binary)}".encode()
    assert server.get("/firmware?device=dev-12")[2] == binary
    status, _, body = server.get("/firmware?device=dev-13")
    assert status == 502 and b"without firmware.bin" in body
