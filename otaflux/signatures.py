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

    def check(
        self, manifest_digest: str, document: contract.SignatureDocument | None
    ) -> contract.SignatureDocument | None:
        """Raise SignatureRejected unless the policy accepts this signature for this manifest digest; the
        accepted signature comes back with the algorithm and key id of the key that verified it (the
        ones stored beside a cosign signature are hints, and cosign's own carry none)."""
        if not self.required:
            return document
        if document is None:
            raise SignatureRejected("unsigned", f"no signature for {manifest_digest}")
        if document.manifest_digest != manifest_digest:
            raise SignatureRejected(
                "mismatch",
                f"signature does not verify: it covers {document.manifest_digest}, not {manifest_digest}",
            )
        key = signatures.verifying_key(self.keys, document, manifest_digest)
        if key is None:
            known = {signatures.key_id(k) for k in self.keys}
            if document.key_id and document.key_id not in known:
                raise SignatureRejected(
                    "unknown-key", f"signed by unknown key {document.key_id} ({manifest_digest})"
                )
            raise SignatureRejected("invalid", f"signature of {manifest_digest} does not verify")
        return document.model_copy(
            update={"algorithm": signatures.algorithm_of(key), "key_id": signatures.key_id(key)}
        )
