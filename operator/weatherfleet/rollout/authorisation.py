"""Signed downgrade authorisations: the only way a device installs a release below the one it runs.

A device never goes to an older version because a registry tag or an unsigned plan says so. When the
operator decides a downgrade itself — a halted candidate rolling back to the stable release, or a fleet
rollback a person asked for (`spec.rollout.rollback`) — it signs one line with its rollout key (Ed25519,
the only algorithm the board verifies) and puts it in the fleet's plan; OtaFlux hands it to the devices
the plan offers that older version, in the /v1/manifest answer; the device checks the signature against
the rollout keys it was provisioned with, that it names the version offered and the version it runs,
and only then installs. Anti-rollback by security version still holds: an authorisation never lets a
device below the highest security version it confirmed.

The signed text is one line a MicroPython board reads with `split`:

    weatherfleet downgrade to=1.1.0 from=1.2.0 rollout=weatherfleet/garden/firmware-1-2-0@1.2.0
"""

from __future__ import annotations

import base64
from typing import Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519
from pydantic import BaseModel, ConfigDict, Field

from ..oci.signatures import key_id

PREFIX = "weatherfleet downgrade"


class Authorisation(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    text: str = Field(description="the signed line: 'weatherfleet downgrade to=V from=V[,V..] rollout=ID'")
    algorithm: Literal["ed25519"] = "ed25519"
    key_id: str = Field(alias="keyId")
    signature: str = Field(description="base64 of the 64-byte Ed25519 signature over `text` (UTF-8)")

    def terms(self) -> dict[str, str]:
        return parse(self.text)

    @property
    def to(self) -> str:
        return self.terms().get("to", "")

    @property
    def from_versions(self) -> list[str]:
        return [v for v in self.terms().get("from", "").split(",") if v]


def text_of(rollout_id: str, from_versions: list[str], to: str) -> str:
    return f"{PREFIX} to={to} from={','.join(from_versions)} rollout={rollout_id}"


def parse(text: str) -> dict[str, str]:
    if not text.startswith(PREFIX + " "):
        return {}
    terms = {}
    for part in text[len(PREFIX) + 1 :].split(" "):
        key, sep, value = part.partition("=")
        if sep:
            terms[key] = value
    return terms


def sign(
    private_key: ed25519.Ed25519PrivateKey, rollout_id: str, from_versions: list[str], to: str
) -> Authorisation:
    text = text_of(rollout_id, from_versions, to)
    raw = private_key.sign(text.encode())
    return Authorisation(
        text=text, keyId=key_id(private_key.public_key()), signature=base64.b64encode(raw).decode()
    )


def verify(public_keys: list[ed25519.Ed25519PublicKey], authorisation: Authorisation) -> bool:
    """True when one of the keys signed exactly this text."""
    try:
        raw = base64.b64decode(authorisation.signature, validate=True)
    except ValueError:
        return False
    for key in public_keys:
        try:
            key.verify(raw, authorisation.text.encode())
            return True
        except InvalidSignature:
            continue
    return False


def permits(authorisation: Authorisation | None, running: str | None, offered: str) -> bool:
    """Whether the (verified) authorisation lets a device running `running` go to `offered`."""
    return (
        authorisation is not None and authorisation.to == offered and running in authorisation.from_versions
    )
