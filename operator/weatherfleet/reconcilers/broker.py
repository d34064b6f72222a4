"""Broker access: least-privilege ACLs per device and per service."""

from __future__ import annotations

from .. import identities
from .templates import environment


def mosquitto_acl(fleet: str, device_ids: list[str], topic_prefix: str = "sensors") -> str:
    """A Mosquitto acl_file: each device may publish only below its own topic and read only its OTA topic."""
    return (
        environment()
        .get_template("mosquitto-acl.j2")
        .render(
            fleet=fleet,
            prefix=topic_prefix,
            devices=sorted(set(device_ids)),
            identities={
                "ingest": identities.INGEST,
                "operator": identities.OPERATOR,
                "otaflux": identities.OTAFLUX,
            },
        )
    )
