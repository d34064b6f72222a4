"""cert-manager Certificates: one client certificate per device, one server certificate per broker."""

from __future__ import annotations

from ..models.fleet import CertificatePolicy, SensorFleet
from .common import Object, metadata

CERT_MANAGER_API = "cert-manager.io/v1"


def device_secret_name(device_id: str) -> str:
    """The Secret cert-manager writes the device's key and certificate to (tls.crt, tls.key, ca.crt)."""
    return f"{device_id}-device-tls"


def broker_secret_name(fleet: SensorFleet) -> str:
    return f"{fleet.spec.broker.host}-tls"


def _private_key(policy: CertificatePolicy) -> Object:
    key: Object = {"algorithm": policy.private_key.algorithm, "rotationPolicy": "Always"}
    if policy.private_key.algorithm != "Ed25519":  # cert-manager ignores size for Ed25519; leave it out
        key["size"] = policy.private_key.size
    return key


def _issuer(policy: CertificatePolicy) -> Object:
    ref = policy.issuer_ref
    return {"group": ref.group, "kind": ref.kind, "name": ref.name}


def device_certificate(
    device_id: str,
    namespace: str,
    policy: CertificatePolicy,
    labels_: dict[str, str],
    owners: list[Object],
) -> Object:
    """A client certificate whose CN is the device id: the identity the broker's ACL matches."""
    return {
        "apiVersion": CERT_MANAGER_API,
        "kind": "Certificate",
        "metadata": metadata(device_id, namespace, labels_, owners),
        "spec": {
            "commonName": device_id,
            "duration": policy.duration,
            "issuerRef": _issuer(policy),
            "privateKey": _private_key(policy),
            "renewBefore": policy.renew_before,
            "secretName": device_secret_name(device_id),
            "secretTemplate": {"labels": labels_},
            "subject": {"organizations": ["weatherfleet"]},
            "usages": ["client auth", "digital signature"],
        },
    }


def broker_certificate(fleet: SensorFleet, labels_: dict[str, str], owners: list[Object]) -> Object:
    """The broker's server certificate `<host>-server` (Secret `<host>-tls`), valid for the Service's
    in-cluster names. Same spec as gitops/base/certificates/nanomq-server.yaml, so that when both are
    applied (server-side apply, different managers) they agree instead of conflicting."""
    host = fleet.spec.broker.host
    ns = fleet.metadata.namespace
    if "." in host:
        names, common = [host], host
    else:
        names = [host, f"{host}.{ns}", f"{host}.{ns}.svc", f"{host}.{ns}.svc.cluster.local"]
        common = f"{host}.{ns}.svc"
    policy = fleet.spec.certificates
    return {
        "apiVersion": CERT_MANAGER_API,
        "kind": "Certificate",
        "metadata": metadata(f"{host}-server", ns, labels_, owners),
        "spec": {
            "commonName": common,
            "dnsNames": names,
            "duration": policy.duration,
            "issuerRef": _issuer(policy),
            "privateKey": _private_key(policy),
            "renewBefore": policy.renew_before,
            "secretName": broker_secret_name(fleet),
            "usages": ["digital signature", "key encipherment", "server auth"],
        },
    }
