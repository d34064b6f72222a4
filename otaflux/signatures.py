"""Signature policy: with public keys configured, only artifacts signed by one of them are served."""

from __future__ import annotations

from pathlib import Path

from weatherfleet.oci import contract, signatures


class SignatureRejected(Exception):
    """The artifact may not be served; `reason` is a short word for metrics, the message says why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class SignaturePolicy:
    def __init__(self, key_paths: tuple[Path, ...] | list[Path] = ()) -> None:
        self.keys = [signatures.load_public_key(Path(p).read_bytes()) for p in key_paths]

    @property
    def required(self) -> bool:
        return bool(self.keys)

    def check(self, manifest_digest: str, document: contract.SignatureDocument | None) -> None:
        """Raise SignatureRejected unless the policy accepts this signature for this manifest digest."""
        if not self.required:
            return
        if document is None:
            raise SignatureRejected("unsigned", f"no signature for {manifest_digest}")
        if document.manifest_digest != manifest_digest:
            raise SignatureRejected(
                "mismatch", f"signature covers {document.manifest_digest}, not {manifest_digest}"
            )
        known = {signatures.key_id(k) for k in self.keys}
        if document.key_id not in known:
            raise SignatureRejected(
                "unknown-key", f"signed by unknown key {document.key_id} ({manifest_digest})"
            )
        if not signatures.verify(self.keys, document, manifest_digest):
            raise SignatureRejected("invalid", f"signature of {manifest_digest} does not verify")
