"""Certificates that renew themselves: what the operator makes of a device's certificate signing request.

A device sends a PKCS#10 CSR (its key stays on the board) on `twin/<deviceId>/csr`, over the connection
its current certificate authenticates. The operator reviews it and, if it passes, turns it into a
cert-manager `CertificateRequest` for the fleet's issuer, which it approves itself (cert-manager signs only
approved requests); the signed certificate goes back retained on `twin/<deviceId>/cert`.

Review (pure, `review_csr`): the signature verifies; the subject is exactly the device's own id (CN, plus
at most O=weatherfleet: nothing else, no SANs); the key is of the fleet's algorithm and size
(`spec.certificates.privateKey`). Anything else is refused with the reason, and no request is made.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from ..models.fleet import SensorFleet
from ..models.sensor import WeatherSensor
from .certificates import CERT_MANAGER_API
from .common import Object, labels, metadata, owner_references

MAX_CSR_BYTES = 4096
CSR_LABEL = "weatherfleet.io/csr"


class CsrRejected(ValueError):
    """The device's request is not signed; the message says why (it goes to the WeatherSensor's events)."""


def key_matches(public: object, algorithm: str, size: int) -> bool:
    """Whether a public key is of the fleet's algorithm and size (`spec.certificates.privateKey`; Ed25519
    has one size). The operator's review and the local CA's signing both ask this."""
    if algorithm == "ECDSA":
        curves = {256: "secp256r1", 384: "secp384r1", 521: "secp521r1"}
        return isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == curves.get(size)
    if algorithm == "RSA":
        return isinstance(public, rsa.RSAPublicKey) and public.key_size == size
    return isinstance(public, ed25519.Ed25519PublicKey)


def load_signed_csr(csr_pem: bytes) -> x509.CertificateSigningRequest:
    """The parsed request, if it is PEM and its signature verifies (it holds the key it asks for)."""
    try:
        request = x509.load_pem_x509_csr(csr_pem)
    except ValueError as exc:
        raise CsrRejected(f"not a PEM certificate signing request ({exc})") from None
    if not request.is_signature_valid:
        raise CsrRejected("the request's signature does not verify")
    return request


def review_csr(device_id: str, csr_pem: bytes, fleet: SensorFleet) -> x509.CertificateSigningRequest:
    """The parsed request if the operator may ask the fleet's issuer to sign it; CsrRejected otherwise."""
    if len(csr_pem) > MAX_CSR_BYTES:
        raise CsrRejected(f"request of {len(csr_pem)} bytes exceeds {MAX_CSR_BYTES}")
    request = load_signed_csr(csr_pem)
    names = [(a.oid, a.value) for a in request.subject]
    cns = [v for oid, v in names if oid == NameOID.COMMON_NAME]
    others = [(oid, v) for oid, v in names if oid != NameOID.COMMON_NAME]
    if cns != [device_id] or any(
        oid != NameOID.ORGANIZATION_NAME or v != "weatherfleet" for oid, v in others
    ):
        raise CsrRejected(
            f"subject {request.subject.rfc4514_string()} is not the device's own id CN={device_id}"
        )
    if len(request.extensions):
        raise CsrRejected("the request asks for extensions (SANs, usages): the operator sets them")
    policy = fleet.spec.certificates.private_key
    if not key_matches(request.public_key(), policy.algorithm, policy.size):
        raise CsrRejected(
            f"the key is not {policy.algorithm} {policy.size} as fleet {fleet.metadata.name} says"
        )
    return request


def csr_digest(csr_pem: bytes) -> str:
    return hashlib.sha256(csr_pem).hexdigest()[:10]


def request_name(device_id: str, csr_pem: bytes, attempt: int = 0) -> str:
    """`<deviceId>-<sha256(csr)[:10]>[-<n>]`. A device keeps its key, and its CSR is deterministic (RFC 6979),
    so its next renewal sends the same CSR again: the n-th issuance of one CSR is request n (a
    CertificateRequest is immutable once signed)."""
    return f"{device_id}-{csr_digest(csr_pem)}" + (f"-{attempt}" if attempt else "")


def certificate_request(
    sensor: WeatherSensor, fleet: SensorFleet, csr_pem: bytes, attempt: int = 0
) -> Object:
    """The cert-manager CertificateRequest for a reviewed CSR: the fleet's issuer and duration, client-auth
    usages, owned by the WeatherSensor (deleted with it)."""
    device_id = sensor.spec.device_id
    policy = fleet.spec.certificates
    child_labels = {**labels(fleet.metadata.name, device_id), CSR_LABEL: csr_digest(csr_pem)}
    ref = policy.issuer_ref
    return {
        "apiVersion": CERT_MANAGER_API,
        "kind": "CertificateRequest",
        "metadata": metadata(
            request_name(device_id, csr_pem, attempt),
            sensor.metadata.namespace,
            child_labels,
            owner_references(sensor.api_version, sensor.kind, sensor.metadata),
        ),
        "spec": {
            "request": base64.b64encode(csr_pem).decode(),
            "issuerRef": {"group": ref.group, "kind": ref.kind, "name": ref.name},
            "duration": policy.duration,
            "isCA": False,
            "usages": ["client auth", "digital signature"],
        },
    }


def approval(now: datetime, device_id: str) -> Object:
    """The Approved condition the operator sets on a request it reviewed (status subresource)."""
    return {
        "type": "Approved",
        "status": "True",
        "reason": "WeatherfleetDeviceIdentity",
        "message": f"CN={device_id} is the requesting device's own id; key type as its fleet says",
        "lastTransitionTime": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def issued_certificate(request: Object) -> str | None:
    """The signed certificate (PEM) of a CertificateRequest once cert-manager marked it Ready."""
    status = request.get("status") or {}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
    )
    cert = status.get("certificate")
    if not (ready and cert):
        return None
    try:
        return base64.b64decode(cert).decode()
    except (ValueError, UnicodeDecodeError):
        return None


def is_approved(request: Object) -> bool:
    return any(
        c.get("type") in ("Approved", "Denied") for c in (request.get("status") or {}).get("conditions") or []
    )
