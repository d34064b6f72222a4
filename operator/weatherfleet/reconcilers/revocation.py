"""Decommission revokes: the certificate revocation list the operator keeps for the fleet's CA.

cert-manager publishes no CRL for a CA issuer, so the operator makes one when it may sign with the CA's
key (the Secret the CA issuer reads, `WEATHERFLEET_CRL_CA_SECRET=<namespace>/<name>`): the serial numbers of
every certificate a deleted WeatherSensor had (the one cert-manager issued at provisioning and every
renewal), signed, in the ConfigMap `weatherfleet-crl` (`ca.crl`, PEM; `revoked`, the serials as hex).
Mosquitto reads it through `crlfile` in its listener and re-reads it on SIGHUP.

Pure: serials and keys in, PEM out; `now` is an argument.
"""

from __future__ import annotations

import datetime as dt
import json

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

CRL_CONFIGMAP = "weatherfleet-crl"
CRL_KEY = "ca.crl"
REVOKED_KEY = "revoked"


def certificate_serial(pem: bytes | str) -> int | None:
    """The serial number of a PEM certificate (the first of a chain), or None if it does not parse."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        return x509.load_pem_x509_certificate(data).serial_number
    except ValueError:
        return None


def revoked_serials(config_map: dict | None) -> set[int]:
    """The serials already in the CRL ConfigMap."""
    text = ((config_map or {}).get("data") or {}).get(REVOKED_KEY)
    try:
        return {int(s, 16) for s in json.loads(text)} if text else set()
    except (ValueError, TypeError):
        return set()


def revocation_list(ca_cert_pem: bytes, ca_key_pem: bytes, serials: set[int], now: dt.datetime) -> bytes:
    """A CRL (PEM) of `serials`, issued and signed by the CA. Valid for ten years from `now`: it is
    replaced whenever a device is decommissioned, and a broker must never refuse everyone because the list
    went stale."""
    ca = x509.load_pem_x509_certificate(ca_cert_pem)
    key = serialization.load_pem_private_key(ca_key_pem, password=None)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.subject)
        .last_update(now - dt.timedelta(minutes=5))
        .next_update(now + dt.timedelta(days=3650))
    )
    for serial in sorted(serials):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build()
        )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def crl_config_map(namespace: str, crl_pem: bytes, serials: set[int], labels: dict[str, str]) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": CRL_CONFIGMAP, "namespace": namespace, "labels": labels},
        "data": {
            CRL_KEY: crl_pem.decode(),
            REVOKED_KEY: json.dumps([format(s, "x") for s in sorted(serials)]),
        },
    }
