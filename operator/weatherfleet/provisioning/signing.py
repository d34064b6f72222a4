"""The firmware signing key of a local installation: Ed25519 (what devices verify), made on first use with
`weatherfleet.firmware.signing` and kept in the workdir (private key 0600, never printed)."""

from __future__ import annotations

from pathlib import Path

from ..firmware import signing

PRIVATE = "firmware-signing.key"
PUBLIC = "firmware-signing.pub"


def ensure_signing_key(directory: Path) -> tuple[Path, Path]:
    """(private key path, public key path), both PEM; created once, reused afterwards."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    private, public = directory / PRIVATE, directory / PUBLIC
    if not private.exists():
        public.unlink(missing_ok=True)
        signing.generate_key("ed25519", private, public)
    return private, public


def device_key(public_path: Path) -> str:
    """The public key as the device config's `signingKeys` takes it (raw Ed25519, hex)."""
    text = signing.device_key_text(signing.read_public_key(public_path))
    if text is None:
        raise ValueError(f"{public_path}: devices verify Ed25519 signatures; this key is not Ed25519")
    return text
