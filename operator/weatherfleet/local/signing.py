"""The firmware signing key of a local installation: Ed25519 (what devices verify), made on first use,
kept in the workdir with the private key readable by its owner only, never printed."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

PRIVATE = "firmware-signing.key"
PUBLIC = "firmware-signing.pub"


def ensure_signing_key(directory: Path) -> tuple[Path, Path]:
    """(private key path, public key path), both PEM; created once, reused afterwards."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    private, public = directory / PRIVATE, directory / PUBLIC
    if not private.exists():
        key = ed25519.Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
        public.unlink(missing_ok=True)
    if not public.exists():
        key = serialization.load_pem_private_key(private.read_bytes(), password=None)
        public.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    return private, public
