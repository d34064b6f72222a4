"""An OCI image layout on disk (`oci-layout:///path/to/dir`), the embedded default of the local mode: one
layout per repository under that directory, tags as `org.opencontainers.image.ref.name`."""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from . import contract
from .errors import NotFound, OciError, Unreachable
from .manifest import Manifest
from .payload import CHUNK
from .references import check_digest, check_reference, check_repository, is_digest, sha256_digest
from .store import OciStore, write_verified


class LayoutStore(OciStore):
    """One OCI image layout per repository under `root` (`root/<repository>/index.json`, `blobs/sha256/`).
    Writers take an flock on the repository, and index.json is replaced atomically, so a reader never
    sees a half-written index."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"LayoutStore({self.root})"

    def _dir(self, repository: str) -> Path:
        return self.root / check_repository(repository)

    def _blob(self, repository: str, digest: str) -> Path:
        return self._dir(repository) / "blobs" / "sha256" / check_digest(digest).split(":", 1)[1]

    def _index(self, repository: str) -> dict:
        path = self._dir(repository) / "index.json"
        if not path.exists():
            return {"schemaVersion": 2, "mediaType": contract.OCI_INDEX, "manifests": []}
        return json.loads(path.read_text())

    @contextmanager
    def _locked(self, repository: str) -> Iterator[Path]:
        directory = self._dir(repository)
        (directory / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        layout = directory / "oci-layout"
        if not layout.exists():
            layout.write_text('{"imageLayoutVersion":"1.0.0"}')
        with open(directory / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield directory
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def ping(self) -> None:
        if not self.root.is_dir():
            raise Unreachable(f"OCI layout directory {self.root} does not exist")

    def list_tags(self, repository: str) -> list[str]:
        return [
            m["annotations"][contract.REF_NAME]
            for m in self._index(repository)["manifests"]
            if contract.REF_NAME in (m.get("annotations") or {})
        ]

    def _lookup(self, repository: str, reference: str) -> dict | None:
        check_reference(reference)
        for entry in self._index(repository)["manifests"]:
            if (
                entry.get("digest") == reference
                or (entry.get("annotations") or {}).get(contract.REF_NAME) == reference
            ):
                return entry
        if is_digest(reference) and self._blob(repository, reference).exists():
            return {"digest": reference, "mediaType": contract.OCI_MANIFEST}
        return None

    def manifest_digest(self, repository: str, reference: str) -> str | None:
        entry = self._lookup(repository, reference)
        return entry["digest"] if entry else None

    def fetch_manifest(self, repository: str, reference: str) -> Manifest:
        entry = self._lookup(repository, reference)
        if entry is None:
            raise NotFound(f"manifest {repository}:{reference} not found in {self.root}")
        raw = self._blob(repository, entry["digest"]).read_bytes()
        if sha256_digest(raw) != entry["digest"]:
            raise OciError(f"manifest {repository}:{reference} is corrupt on disk")
        return Manifest(raw, entry["digest"], entry.get("mediaType", contract.OCI_MANIFEST))

    def fetch_blob(self, repository: str, digest: str, dest: Path) -> Path:
        path = self._blob(repository, digest)
        if not path.exists():
            raise NotFound(f"blob {digest} not found in {repository}")
        with open(path, "rb") as stream:
            return write_verified(iter(lambda: stream.read(CHUNK), b""), digest, Path(dest))

    def push_blob(self, repository: str, source: Path | bytes) -> tuple[str, int]:
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        digest = sha256_digest(data)
        with self._locked(repository):
            path = self._blob(repository, digest)
            if not path.exists():
                write_verified(iter((data,)), digest, path)
        return digest, len(data)

    def push_manifest(
        self, repository: str, reference: str, raw: bytes, media_type: str = contract.OCI_MANIFEST
    ) -> str:
        check_reference(reference)
        digest, size = self.push_blob(repository, raw)
        with self._locked(repository) as directory:
            index = self._index(repository)
            kept = [
                m
                for m in index["manifests"]
                if (m.get("annotations") or {}).get(contract.REF_NAME) != reference
            ]
            entry = {"mediaType": media_type, "digest": digest, "size": size}
            if not is_digest(reference):
                entry["annotations"] = {contract.REF_NAME: reference}
            index["manifests"] = [*kept, entry]
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=".index-")
            with os.fdopen(fd, "w") as out:
                json.dump(index, out, indent=1)
            os.replace(tmp, directory / "index.json")
        return digest
