"""The store interface both backends implement (`RegistryStore`, `LayoutStore`): subclasses move bytes,
the artifact shapes (image, bundle) are built here once, from `manifest`."""

from __future__ import annotations

import hashlib
import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from . import contract
from .errors import OciError
from .manifest import Manifest, bundle_manifest, image_layer, image_manifest
from .payload import Resolved, file_checksums, resolve_manifest
from .references import check_reference, check_repository


@dataclass(frozen=True)
class Pushed:
    repository: str
    tag: str
    digest: str
    size: int  # of the manifest


class OciStore(ABC):
    """Where firmware artifacts live."""

    @abstractmethod
    def ping(self) -> None:
        """Raise Unreachable unless the store answers."""

    @abstractmethod
    def list_tags(self, repository: str) -> list[str]:
        """All tags of the repository; [] when the repository does not exist."""

    @abstractmethod
    def manifest_digest(self, repository: str, reference: str) -> str | None:
        """The digest a reference points at now (a cheap HEAD), None when unknown."""

    @abstractmethod
    def fetch_manifest(self, repository: str, reference: str) -> Manifest:
        """The manifest bytes and digest; raises NotFound."""

    @abstractmethod
    def fetch_blob(self, repository: str, digest: str, dest: Path) -> Path:
        """Stream a blob into `dest` (written atomically, sha256 verified); raises NotFound."""

    @abstractmethod
    def push_blob(self, repository: str, source: Path | bytes) -> tuple[str, int]:
        """Upload a blob (skipped when present); returns (digest, size)."""

    @abstractmethod
    def push_manifest(
        self, repository: str, reference: str, raw: bytes, media_type: str = contract.OCI_MANIFEST
    ) -> str:
        """Store manifest bytes under a tag; returns the digest of exactly those bytes."""

    def fetch_blob_bytes(self, repository: str, digest: str, limit: int = 1 << 20) -> bytes:
        with tempfile.TemporaryDirectory() as tmp:
            path = self.fetch_blob(repository, digest, Path(tmp) / "blob")
            if path.stat().st_size > limit:
                raise OciError(f"blob {digest} is larger than {limit} bytes")
            return path.read_bytes()

    def push_image(
        self,
        repository: str,
        tag: str,
        binary: Path,
        *,
        version: str,
        board: str = "",
        features: list[str] | None = None,
        security_version: int = 0,
    ) -> Pushed:
        """One layer holding the whole binary, titled with its file name."""
        check_repository(repository), check_reference(tag)
        digest, size = self.push_blob(repository, Path(binary))
        raw, config = image_manifest(
            image_layer(binary, digest, size),
            version=version,
            board=board,
            features=features or [],
            security_version=security_version,
        )
        self.push_blob(repository, config)
        return Pushed(repository, tag, self.push_manifest(repository, tag, raw), len(raw))

    def push_bundle(
        self, repository: str, tag: str, files: Mapping[str, Path], manifest: contract.BundleManifest
    ) -> Pushed:
        """One layer per file (title = path in the bundle), config = the BundleManifest JSON. The files
        given must be exactly those the BundleManifest lists, with the same sha256 and size."""
        check_repository(repository), check_reference(tag)
        listed = {f.path: f for f in manifest.files}
        if set(listed) != set(files):
            missing, extra = sorted(set(listed) - set(files)), sorted(set(files) - set(listed))
            raise ValueError(f"bundle files do not match its manifest: missing {missing}, unlisted {extra}")
        for path in sorted(files):
            size, _crc, sha = file_checksums(Path(files[path]))
            if (size, sha) != (listed[path].size, listed[path].sha256):
                raise ValueError(f"{path}: content differs from the bundle manifest (sha256 or size)")
            self.push_blob(repository, Path(files[path]))
        raw, config = bundle_manifest(manifest)
        self.push_blob(repository, config)
        return Pushed(repository, tag, self.push_manifest(repository, tag, raw), len(raw))

    def resolve(self, repository: str, reference: str, workdir: Path | None = None) -> Resolved:
        """Pin a reference to its digest and compute the payload's size, CRC32 and sha256 (downloads it
        into a temporary directory: the paths in the answer are gone when it returns)."""
        check_repository(repository), check_reference(reference)
        manifest = self.fetch_manifest(repository, reference)
        with tempfile.TemporaryDirectory(dir=workdir) as tmp:
            return resolve_manifest(self, repository, reference, manifest, Path(tmp))


def write_verified(chunks: Iterator[bytes], digest: str, dest: Path) -> Path:
    """Write a blob atomically (a partial file never has the final name) and check its sha256 digest."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    sha = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".partial-")
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                if chunk:
                    sha.update(chunk)
                    out.write(chunk)
        if "sha256:" + sha.hexdigest() != digest:
            raise OciError(f"blob content does not match its digest {digest}")
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest
