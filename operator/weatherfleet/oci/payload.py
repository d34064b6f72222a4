"""What a device checks on a release's payload: size, CRC32 and sha256 of the image binary, or of the
bundle's deterministic tar (the legacy single-download form of a bundle). `resolve_manifest` downloads a
release into a directory and says where each piece landed, so no caller relies on file names."""

from __future__ import annotations

import hashlib
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from . import contract
from .errors import OciError

if TYPE_CHECKING:
    from .manifest import Manifest
    from .store import OciStore

CHUNK = 1 << 16


@dataclass(frozen=True)
class ResolvedFile:
    path: str
    digest: str
    size: int
    crc32: int


@dataclass(frozen=True)
class Resolved:
    """A release pinned to its manifest digest, with the checks a device performs on its payload
    (image: the binary; bundle: the deterministic tar of its files, see `write_bundle_tar`).
    `payload` and `blobs` (layer digest -> file) are where `resolve_manifest` put the downloads; they
    exist as long as the directory it was given does."""

    repository: str
    reference: str
    digest: str
    kind: contract.Kind
    version: str | None
    size: int
    crc32: int
    sha256: str
    files: list[ResolvedFile] = field(default_factory=list)
    # where the downloads are, not what the release is: two resolutions of one release compare equal
    payload: Path | None = field(default=None, compare=False)
    blobs: dict[str, Path] = field(default_factory=dict, compare=False)


def file_checksums(path: Path) -> tuple[int, int, str]:
    """(size, crc32, sha256 hex) of a file, read in chunks."""
    size, crc, sha = 0, 0, hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(CHUNK):
            size += len(chunk)
            crc = zlib.crc32(chunk, crc)
            sha.update(chunk)
    return size, crc, sha.hexdigest()


def write_bundle_tar(entries: list[tuple[str, Path]], dest: Path) -> None:
    """The legacy single-download form of a bundle: a ustar archive, entries sorted by path, every
    timestamp, owner and mode fixed, so the same files always give the same bytes (and CRC32)."""
    with tarfile.open(dest, "w", format=tarfile.USTAR_FORMAT) as archive:
        for name, source in sorted(entries):
            info = tarfile.TarInfo(name)
            info.size = source.stat().st_size
            info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = 0, 0o644, 0, 0, "", ""
            with open(source, "rb") as stream:
                archive.addfile(info, stream)


def resolve_manifest(
    store: OciStore, repository: str, reference: str, manifest: Manifest, directory: Path
) -> Resolved:
    """Download the release's layers into `directory` and compute its payload checks."""
    kind = manifest.kind
    layers = manifest.layers
    if kind is None or not layers:
        raise OciError(f"{repository}:{reference} is not a firmware artifact (no layers)")
    if kind == "image":
        layer = layers[0]
        path = store.fetch_blob(repository, layer.digest, directory / "image")
        size, crc, sha = file_checksums(path)
        return Resolved(
            repository, reference, manifest.digest, kind, manifest.version, size, crc, sha,
            payload=path, blobs={layer.digest: path},
        )  # fmt: skip
    files, entries, blobs = [], [], {}
    for index, layer in enumerate(layers):
        if not layer.title:
            raise OciError(f"{repository}:{reference}: bundle layer {layer.digest} has no title annotation")
        path = store.fetch_blob(repository, layer.digest, directory / f"file-{index}")
        size, crc, _sha = file_checksums(path)
        files.append(ResolvedFile(layer.title, layer.digest, size, crc))
        entries.append((layer.title, path))
        blobs[layer.digest] = path
    tar = directory / "bundle.tar"
    write_bundle_tar(entries, tar)
    size, crc, sha = file_checksums(tar)
    return Resolved(
        repository, reference, manifest.digest, kind, manifest.version, size, crc, sha, files,
        payload=tar, blobs=blobs,
    )  # fmt: skip
