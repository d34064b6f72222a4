"""Signing and verifying firmware per `weatherfleet.oci.contract`: cosign's simple-signing payload names
the OCI manifest digest, which covers every layer digest, and the signature covers the payload. A bundle's manifest is computed offline
(`weatherfleet.oci.bundle_manifest_bytes`), so a release can be signed on a separate machine before it is
pushed; `push` checks the pushed digest is the signed one. Keys are PEM files; the private key's bytes
never reach a log or an error message."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from .. import oci
from ..oci import contract, signatures
from .build import load_bundle

SIGNATURE_FILE = "signature.json"


class SigningError(RuntimeError):
    """A key cannot be used or a signature does not verify; the message never contains key material."""


def read_private_key(path: Path) -> signatures.PrivateKey:
    path = Path(path)
    try:
        pem = path.read_bytes()
    except OSError as error:
        raise SigningError(f"cannot read private key {path}: {error.strerror}") from None
    if path.stat().st_mode & 0o077:
        # like ssh: a signing key others can read is a leaked key
        raise SigningError(f"private key {path} is readable by group/others; chmod 600 it")
    try:
        return signatures.load_private_key(pem)
    except (ValueError, TypeError):
        raise SigningError(f"{path} is not an unencrypted PEM Ed25519 or ECDSA P-256 private key") from None


def read_public_key(path: Path) -> signatures.PublicKey:
    try:
        return signatures.load_public_key(Path(path).read_bytes())
    except OSError as error:
        raise SigningError(f"cannot read public key {path}: {error.strerror}") from None
    except (ValueError, TypeError):
        raise SigningError(f"{path} is not a PEM Ed25519 or ECDSA P-256 public key") from None


def generate_key(
    algorithm: contract.Algorithm, private_path: Path, public_path: Path
) -> signatures.PublicKey:
    """A new key pair: the private key written 0600 (never overwritten), the public key beside it."""
    key = (
        ed25519.Ed25519PrivateKey.generate()
        if algorithm == "ed25519"
        else ec.generate_private_key(ec.SECP256R1())
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise SigningError(f"{private_path} exists; refusing to overwrite a key") from None
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    public = key.public_key()
    Path(public_path).write_bytes(
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return public


def device_key_text(public: signatures.PublicKey) -> str | None:
    """The raw Ed25519 public key in hex, as the device config's `signingKeys` takes it."""
    if isinstance(public, ed25519.Ed25519PublicKey):
        return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()
    return None


def bundle_digest(folder: Path) -> str:
    """The manifest digest a push of this bundle folder will produce."""
    manifest, _files = load_bundle(folder)
    return oci.sha256_digest(oci.bundle_manifest_bytes(manifest))


def image_digest(
    binary: Path, version: str, board: str, features: list[str], security_version: int = 0
) -> str:
    return oci.sha256_digest(
        oci.image_manifest_bytes(
            binary, version=version, board=board, features=features, security_version=security_version
        )
    )


def sign_digest(
    private_key: signatures.PrivateKey, digest: str, reference: str = signatures.UNNAMED_REFERENCE
) -> contract.SignatureDocument:
    """cosign's simple-signing payload naming `digest` (and, as docker-reference, where the artifact goes),
    signed: see weatherfleet.oci.signatures."""
    return signatures.sign(private_key, digest, reference)


def write_signature(path: Path, document: contract.SignatureDocument) -> None:
    Path(path).write_text(document.model_dump_json(by_alias=True, indent=2) + "\n")


def read_signature(path: Path) -> contract.SignatureDocument:
    try:
        return contract.SignatureDocument.model_validate_json(Path(path).read_text())
    except OSError as error:
        raise SigningError(f"cannot read signature {path}: {error.strerror}") from None
    except ValueError as error:
        raise SigningError(f"{path} is not a signature document: {error.errors()[0]['msg']}") from None


def check(public_keys: list[signatures.PublicKey], document: contract.SignatureDocument, digest: str) -> None:
    """Raise SigningError unless one of the keys signed exactly `digest`."""
    if document.manifest_digest != digest:
        raise SigningError(f"signature is for {document.manifest_digest}, not for {digest}")
    if not signatures.verify(public_keys, document, digest):
        if not any(signatures.key_id(k) == document.key_id for k in public_keys):
            raise SigningError(
                f"signature was made with key {document.key_id}, which is not among the given keys"
            )
        raise SigningError(f"signature over {digest} does not verify (tampered or wrong key)")


def fingerprint(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
