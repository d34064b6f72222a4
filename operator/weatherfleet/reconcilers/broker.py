"""Broker access: least-privilege ACLs per device and per service, for Mosquitto and NanoMQ.

Both brokers get the same policy: a device publishes only `<prefix>/<id>/#` and `twin/<id>/csr`, and
subscribes only `ota/<id>/#` and `twin/<id>/#` (its desired configuration and certificates); ingest
subscribes `<prefix>/#`; OtaFlux publishes `ota/#`; the operator subscribes `<prefix>/+/status`,
`<prefix>/+/ota` and `twin/+/csr`, and publishes `twin/+/desired`, `twin/+/cert` and (to clear a
decommissioned device's retained status) `<prefix>/+/status`. Everything else is denied.
"""

from __future__ import annotations

from collections.abc import Mapping

from .. import identities
from .templates import environment

# The `auth` block the NanoMQ configuration (gitops) must carry for these files to mean what they say.
NANOMQ_AUTH_BLOCK = """auth {
  allow_anonymous = false
  no_match = deny
  deny_action = disconnect
  password = {include "/etc/nanomq/pwd/nanomq_pwd.conf"}
  acl = {include "/etc/nanomq/acl/nanomq_acl.conf"}
}
"""
# What a Mosquitto configuration needs besides the ACL for the client id to be the certificate identity
# (issue 14: without it any device certificate can connect as `weatherfleet-ingest` or as another device
# and take that client's session). Every connection then needs a certificate of its own.
MOSQUITTO_IDENTITY_SETTINGS = """require_certificate true
use_identity_as_username true
use_username_as_clientid true
"""
NANOMQ_ACL_KEY = "nanomq_acl.conf"
NANOMQ_PASSWORD_KEY = "nanomq_pwd.conf"
MOSQUITTO_ACL_KEY = "mosquitto.acl"

_IDENTITIES = {"ingest": identities.INGEST, "operator": identities.OPERATOR, "otaflux": identities.OTAFLUX}


def mosquitto_acl(fleet: str, device_ids: list[str], topic_prefix: str = "sensors") -> str:
    """A Mosquitto acl_file: each device may publish only below its own topic and read only its OTA topic.
    Usernames are certificate CNs (`use_identity_as_username true`)."""
    return (
        environment()
        .get_template("mosquitto-acl.j2")
        .render(fleet=fleet, prefix=topic_prefix, devices=sorted(set(device_ids)), identities=_IDENTITIES)
    )


def nanomq_acl(fleet: str, topic_prefix: str = "sensors") -> str:
    """NanoMQ's `nanomq_acl.conf` (HOCON `rules = [...]`), ending in an explicit deny.

    NanoMQ cannot take the username from the certificate, so devices log in with username = deviceId and a
    password; the password file decides who may connect. The device rules use NanoMQ's `${username}`
    placeholder, so the ACL has the same size for 3 devices or 10,000 (a ConfigMap holds at most 1 MiB,
    which per-device rules would pass at about 5,000 devices); service identities are denied the
    device rules explicitly."""
    return (
        environment()
        .get_template("nanomq-acl.j2")
        .render(fleet=fleet, prefix=topic_prefix, identities=_IDENTITIES)
    )


def nanomq_passwords(fleet: str, passwords: Mapping[str, str]) -> str:
    """NanoMQ's `nanomq_pwd.conf`: one `"user": "password"` line per user, sorted by user. `passwords`
    holds device ids and service identities; values come from the caller (pure code makes no secrets)."""
    return environment().get_template("nanomq-pwd.j2").render(fleet=fleet, users=sorted(passwords.items()))
