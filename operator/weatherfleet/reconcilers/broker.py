"""Broker access: least-privilege ACLs per device and per service, for Mosquitto and NanoMQ.

Both brokers get the same policy: a device publishes only `<prefix>/<id>/#` and `twin/<id>/csr`, and
subscribes only `ota/<id>/#` and `twin/<id>/#` (its desired configuration and certificates); ingest
subscribes `<prefix>/#`; OtaFlux publishes `ota/#`; the operator subscribes `<prefix>/+/status`,
`<prefix>/+/ota` and `twin/+/csr`, and publishes `twin/+/desired`, `twin/+/cert` and (to clear a
decommissioned device's retained status) `<prefix>/+/status`. Everything else is denied.

Mosquitto's own configuration (`mosquitto_config`) has one home here, for the cluster (the operator
renders it into the ACL ConfigMap), the local mode and the tests: boards on a listener where the client id
is the certificate's identity, services on a listener that admits only the service logins (issue 14).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

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
NANOMQ_ACL_KEY = "nanomq_acl.conf"
NANOMQ_PASSWORD_KEY = "nanomq_pwd.conf"
MOSQUITTO_ACL_KEY = "mosquitto.acl"
MOSQUITTO_CONFIG_KEY = "mosquitto.conf"
MOSQUITTO_PASSWORD_KEY = "mosquitto.passwd"
# Mosquitto's ports: boards dial the fleet's `broker.port` (8883), the services this one.
MOSQUITTO_DEVICE_PORT = 8883
MOSQUITTO_SERVICES_PORT = 8884

_IDENTITIES = {"ingest": identities.INGEST, "operator": identities.OPERATOR, "otaflux": identities.OTAFLUX}


def mosquitto_acl(fleet: str, device_ids: list[str], topic_prefix: str = "sensors") -> str:
    """A Mosquitto acl_file: each device may publish only below its own topic and read only its OTA topic.
    Usernames are certificate CNs on the device listener and service logins on the services listener. A
    device id that names a service gets no rules: it must not add a device's rights to a service."""
    devices = sorted(set(device_ids) - set(identities.SERVICES))
    return (
        environment()
        .get_template("mosquitto-acl.j2")
        .render(fleet=fleet, prefix=topic_prefix, devices=devices, identities=_IDENTITIES)
    )


@dataclass(frozen=True)
class MosquittoPaths:
    """Where Mosquitto reads its files, as the broker sees them (a pod's mounts, or local folders)."""

    data: str
    acl: str
    ca: str
    cert: str
    key: str
    service_logins: str
    """`mosquitto_passwd` file of the service logins (`mosquitto_passwords`): who the services listener
    admits."""
    logins: str | None = None
    """A NanoMQ fleet, emulated: the password file of every login (devices and services) that both listeners
    check instead, with NanoMQ's semantics (no client id binding)."""
    crl: str | None = None


# Where gitops/base/mosquitto mounts what the operator writes (the fleet's ACL ConfigMap, its credentials
# Secret) and the broker's server certificate and CRL.
CLUSTER_MOSQUITTO_PATHS = MosquittoPaths(
    data="/mosquitto/data",
    acl=f"/mosquitto/config/{MOSQUITTO_ACL_KEY}",
    ca="/mosquitto/tls/ca.crt",
    cert="/mosquitto/tls/tls.crt",
    key="/mosquitto/tls/tls.key",
    service_logins=f"/mosquitto/logins/{MOSQUITTO_PASSWORD_KEY}",
)


def mosquitto_config(
    paths: MosquittoPaths,
    *,
    device_port: int = MOSQUITTO_DEVICE_PORT,
    services_port: int = MOSQUITTO_SERVICES_PORT,
    address: str | None = None,
    origin: str = "weatherfleet",
    keep_user: bool = False,
) -> str:
    """mosquitto.conf: a device listener whose client id is the certificate's CN (`use_identity_as_username`
    + `use_username_as_clientid`) and a services listener that admits only the service logins. `address`
    binds both listeners (None: every interface); `keep_user` stays the user that started Mosquitto."""
    return (
        environment()
        .get_template("mosquitto.conf.j2")
        .render(
            paths=paths,
            device_port=device_port,
            services_port=services_port,
            address=f" {address}" if address else "",
            origin=origin,
            keep_user=keep_user,
        )
    )


def mosquitto_password_line(user: str, password: str, salt: bytes | None = None) -> str:
    """A `mosquitto_passwd` entry: PBKDF2-SHA512 with 101 iterations and a 12-byte salt (`$7$`). Without a
    salt, one derived from user and password, so the same logins render the same file (the passwords are
    random tokens the operator or the credentials Job made: the salt guards nothing a guess could find)."""
    salt = salt or hashlib.sha256(f"{user}\0{password}".encode()).digest()[:12]
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, 101)
    return f"{user}:$7$101${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def mosquitto_passwords(passwords: Mapping[str, str]) -> str:
    """A `mosquitto_passwd` file, one line per user, sorted by user."""
    return "".join(mosquitto_password_line(u, p) + "\n" for u, p in sorted(passwords.items()))


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
