"""The keys of a local installation, Ed25519 (what devices verify), made on first use with
`weatherfleet.firmware.signing` and kept in the workdir (private key 0600, never printed): the firmware
signing key, and the rollout key with which the operator signs downgrade authorisations (a halted
candidate going back to stable, a fleet rollback), as the Secret weatherfleet-rollout-key holds it on a
cluster."""

from __future__ import annotations

from pathlib import Path

from ..firmware import signing

FIRMWARE_SIGNING = "firmware-signing"
ROLLOUT = "rollout"


def ensure_signing_key(directory: Path, name: str = FIRMWARE_SIGNING) -> tuple[Path, Path]:
    """(private key path, public key path), both PEM, `<name>.key` and `<name>.pub`; created once, reused
    afterwards."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    private, public = directory / f"{name}.key", directory / f"{name}.pub"
    if not private.exists():
        public.unlink(missing_ok=True)
        signing.generate_key("ed25519", private, public)
    return private, public


def device_key(public_path: Path) -> str:
    """The public key as the device config's `signingKeys` and `rolloutKeys` take it (raw Ed25519, hex)."""
    text = signing.device_key_text(signing.read_public_key(public_path))
    if text is None:
        raise ValueError(f"{public_path}: devices verify Ed25519 signatures; this key is not Ed25519")
    return text
