"""The on-disk firmware cache: one directory per (repository, manifest digest), bounded by entries and
bytes, least recently used evicted first. Keyed by manifest digest, so a tag pushed again with new bytes
is a different entry and is never confused with the old one. Files of an evicted entry that are still
being sent stay readable (an unlinked file lives until its last reader closes it)."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from weatherfleet import oci
from weatherfleet.oci import contract, signatures

log = logging.getLogger("otaflux.cache")


@dataclass
class Firmware:
    """One artifact ready to serve: payload on disk, answers pre-rendered."""

    device: str
    repository: str
    version: str
    kind: oci.Kind
    manifest: oci.Manifest
    signature: contract.SignatureDocument | None
    directory: Path
    payload: Path  # image: the binary; bundle: the deterministic tar
    size: int
    crc32: int
    sha256: str
    files: list[oci.ResolvedFile] = field(default_factory=list)
    blobs: dict[str, Path] = field(default_factory=dict)  # layer digest -> file

    @classmethod
    def from_resolved(
        cls,
        device: str,
        resolved: oci.Resolved,
        manifest: oci.Manifest,
        signature: contract.SignatureDocument | None,
        directory: Path,
    ) -> Firmware:
        """The artifact `resolve_manifest` downloaded into `directory` (its payload and the checks a device
        makes on it), served to `device` under the version it was resolved by."""
        return cls(
            device, resolved.repository, resolved.reference, resolved.kind, manifest, signature, directory,
            resolved.payload, resolved.size, resolved.crc32, resolved.sha256, resolved.files, resolved.blobs,
        )  # fmt: skip

    @property
    def key(self) -> tuple[str, str]:
        return (self.repository, self.manifest.digest)

    @property
    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.directory.iterdir() if p.is_file())

    def version_body(self) -> bytes:
        body = self.__dict__.get("_version_body")
        if body is None:  # rendered once: this is the answer to every /version of the device
            body = self.__dict__["_version_body"] = f"{self.version}\n{self.crc32}\n{self.size}".encode()
        return body

    @property
    def security_version(self) -> int:
        return self.manifest.security_version

    def manifest_body(self, authorisation: dict | None = None) -> bytes:
        """The /v1/manifest answer; `authorisation`: the signed downgrade authorisation of the device's
        rollout plan, when the plan offers it this (older) version."""
        # cosign's simple-signing payload and the signature over it: the device checks the payload names
        # the manifest digest it computed, then Ed25519 over the payload bytes
        signature = signatures.device_signature(self.signature) if self.signature is not None else None
        document = {
            "device": self.device,
            "version": self.version,
            "kind": self.kind,
            "manifestDigest": self.manifest.digest,
            "manifest": self.manifest.raw.decode(),
            "signature": signature,
            "size": self.size,
            "crc32": self.crc32,
            "sha256": self.sha256,
            "securityVersion": self.security_version,  # a label: the device reads the signed annotation
        }
        if authorisation is not None:
            document["authorisation"] = authorisation
        if self.kind == "bundle":
            document["files"] = [
                {"path": f.path, "digest": f.digest, "size": f.size, "crc32": f.crc32} for f in self.files
            ]
        return json.dumps(document, separators=(",", ":")).encode()


class FirmwareCache:
    def __init__(self, root: Path, max_entries: int, max_bytes: int) -> None:
        self.root, self.max_entries, self.max_bytes = Path(root), max_entries, max_bytes
        self.root.mkdir(parents=True, exist_ok=True)
        # Left by an earlier run: unknown to this process's index, so it could never be evicted.
        for stale in self.root.iterdir():
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
        self._entries: OrderedDict[tuple[str, str], tuple[Firmware, int]] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def directory_for(self, repository: str, manifest_digest: str) -> Path:
        name = hashlib.sha256(f"{repository}@{manifest_digest}".encode()).hexdigest()[:32]
        return self.root / name

    def get(self, key: tuple[str, str]) -> Firmware | None:
        found = self._entries.get(key)
        if found is None:
            return None
        self._entries.move_to_end(key)
        return found[0]

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._entries

    def put(self, firmware: Firmware) -> None:
        size = firmware.disk_bytes
        if firmware.key in self._entries:
            self.bytes -= self._entries.pop(firmware.key)[1]
        self._entries[firmware.key] = (firmware, size)
        self.bytes += size
        while len(self._entries) > 1 and (
            len(self._entries) > self.max_entries or self.bytes > self.max_bytes
        ):
            _key, (old, old_size) = self._entries.popitem(last=False)
            self.bytes -= old_size
            shutil.rmtree(old.directory, ignore_errors=True)
            log.info("evicted %s@%s (%d bytes)", old.repository, old.version, old_size)
        if self.bytes > self.max_bytes:
            log.warning(
                "%s alone is larger than the cache (%d > %d bytes)", firmware.repository, size, self.max_bytes
            )
