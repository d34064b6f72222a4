"""zstd-compressed firmware archives, as the original OtaFlux unpacked them (etiennetremel/otaflux before
v0.3, src/firmware/manager.rs `extract_firmware`): a layer starting with the zstd magic 28 B5 2F FD is a
zstd stream of a tar, and the tar entry whose path ends in the component `firmware.bin` is the firmware.
Compressed with the `zstd` command-line tool's format (one frame, or several when written in pieces)."""

from __future__ import annotations

import io
import os
import tarfile
import zlib
from pathlib import Path

import pytest
import zstandard

from otaflux.firmware import ArtifactUnusable, unpack_firmware


def _tar(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _zstd(data: bytes, frames: int = 1) -> bytes:
    step = -(-len(data) // frames)
    compressor = zstandard.ZstdCompressor(level=3)
    return b"".join(compressor.compress(data[i : i + step]) for i in range(0, len(data), step))


@pytest.mark.parametrize("frames", [1, 3])
def test_a_zstd_tar_is_unpacked_to_its_firmware_bin(tmp_path: Path, frames: int) -> None:
    binary = os.urandom(200_000)
    layer = tmp_path / "layer"
    layer.write_bytes(_zstd(_tar({"README": b"x", "build/firmware.bin": binary}), frames))
    assert layer.read_bytes()[:4] == b"\x28\xb5\x2f\xfd"
    out = unpack_firmware(layer, tmp_path / "firmware.bin")
    assert out is not None and out.read_bytes() == binary


def test_a_zstd_archive_without_firmware_bin_or_broken_is_refused(tmp_path: Path) -> None:
    layer = tmp_path / "layer"
    layer.write_bytes(_zstd(_tar({"build/not-firmware.bin": b"x"})))
    with pytest.raises(ArtifactUnusable, match=r"without firmware\.bin"):
        unpack_firmware(layer, tmp_path / "out")
    layer.write_bytes(_zstd(_tar({"a": b"x" * 5000}))[:40])  # truncated
    with pytest.raises(ArtifactUnusable, match="zstd"):
        unpack_firmware(layer, tmp_path / "out")


def test_a_plain_binary_is_served_as_it_is(tmp_path: Path) -> None:
    layer = tmp_path / "layer"
    layer.write_bytes(b"\xe9" + os.urandom(5000))
    assert unpack_firmware(layer, tmp_path / "out") is None


def test_otaflux_serves_the_firmware_of_a_zstd_archive(
    registry, store, prefix, tmp_path, otaflux_factory
) -> None:
    binary = os.urandom(70_000)
    (tmp_path / "firmware.tar.zst").write_bytes(_zstd(_tar({"firmware.bin": binary})))
    store.push_image(f"{prefix}dev-14", "1.0.0", tmp_path / "firmware.tar.zst", version="1.0.0")
    server = otaflux_factory({"REGISTRY_URL": registry.url, "REPOSITORY_PREFIX": prefix})
    assert server.get("/version?device=dev-14")[2] == f"1.0.0\n{zlib.crc32(binary)}\n{len(binary)}".encode()
    assert server.get("/firmware?device=dev-14")[2] == binary
