"""A board's first identity through a certificate signing request: the key is made here, at provisioning,
and goes only onto the board (staged 0600, copied by mpremote); the cluster sees a PKCS#10 request, never
the key. The request becomes a cert-manager `CertificateRequest` for the fleet's issuer, exactly as the
operator makes one for a device's renewal (`reconcilers.credentials.certificate_request`: the fleet's
duration, client-auth usages, owned by the WeatherSensor, so the device's revocation covers it and it goes
with the device), is approved by whoever provisions (cert-manager signs only approved requests) and is
awaited until cert-manager has signed it, denied it, or the time is up."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from kubernetes import client
from kubernetes.client.rest import ApiException

from ..models import SensorFleet, WeatherSensor
from ..reconcilers.credentials import certificate_request, issued_certificate, review_csr
from ..reconcilers.sensor import credentials_secret_name
from .credentials import NotIssued, _secret
from .deviceconfig import Credentials

GROUP, VERSION, PLURAL = "cert-manager.io", "v1", "certificaterequests"
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
APPROVAL_REASON = "WeatherfleetProvision"


class NotSigned(RuntimeError):
    """The request was denied or failed, or not signed in time; the message says which and why."""


@dataclass(frozen=True)
class Identity:
    key_pem: bytes  # never leaves this machine except onto the board
    cert_pem: bytes
    ca_pem: bytes
    request: str  # <namespace>/<name> of the CertificateRequest


def new_key(fleet: SensorFleet) -> PrivateKey:
    """A key of the fleet's `spec.certificates.privateKey` (the operator refuses renewals of another kind)."""
    policy = fleet.spec.certificates.private_key
    if policy.algorithm == "ECDSA":
        curve = {256: ec.SECP256R1(), 384: ec.SECP384R1(), 521: ec.SECP521R1()}[policy.size]
        return ec.generate_private_key(curve)
    if policy.algorithm == "Ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return rsa.generate_private_key(public_exponent=65537, key_size=policy.size)


def key_pem(key: PrivateKey) -> bytes:
    """SEC1 ("EC PRIVATE KEY") for EC keys: what the board's csr.py reads and cert-manager writes by default."""
    fmt = (
        serialization.PrivateFormat.PKCS8
        if isinstance(key, ed25519.Ed25519PrivateKey)
        else serialization.PrivateFormat.TraditionalOpenSSL
    )
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


def signing_request(device_id: str, key: PrivateKey) -> bytes:
    """CN=<deviceId>, O=weatherfleet, no extensions: the subject the board's own renewals use."""
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, device_id),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "weatherfleet"),
        ]
    )
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, algorithm)
    return csr.public_bytes(serialization.Encoding.PEM)


def _approval(device_id: str, now: datetime) -> dict:
    return {
        "type": "Approved",
        "status": "True",
        "reason": APPROVAL_REASON,
        "message": f"approved by weatherfleet provision for the board of CN={device_id}",
        "lastTransitionTime": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _state(request: dict) -> str:
    conditions = (request.get("status") or {}).get("conditions") or []
    return (
        "; ".join(
            f"{c.get('type')}={c.get('status')}"
            + (f" ({c.get('reason')}: {c.get('message')})" if c.get("message") else "")
            for c in conditions
        )
        or "no conditions yet"
    )


def request_identity(
    api: client.ApiClient,
    sensor: WeatherSensor,
    fleet: SensorFleet,
    timeout: float = 120.0,
    poll: float = 0.5,
    note: Callable[[str], None] = lambda _message: None,
) -> Identity:
    """Make a key and have the fleet's issuer sign it. NotSigned when cert-manager denies or fails the
    request or has not signed it within `timeout` seconds (the request is then left for inspection)."""
    custom = client.CustomObjectsApi(api)
    device_id, namespace = sensor.spec.device_id, sensor.metadata.namespace
    key = new_key(fleet)
    csr_pem = signing_request(device_id, key)
    review_csr(device_id, csr_pem, fleet)  # what the operator would accept: fails loudly here, not later
    body = certificate_request(sensor, fleet, csr_pem)
    name = body["metadata"]["name"]
    where = f"{namespace}/{name}"
    created = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    issuer = body["spec"]["issuerRef"]
    try:
        conditions = [
            *((created.get("status") or {}).get("conditions") or []),
            _approval(device_id, datetime.now(UTC)),
        ]
        custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, name, {"status": {"conditions": conditions}}
        )
    except ApiException as exc:
        if exc.status != 403:
            raise
        # not allowed to approve for this signer: someone who is (cmctl approve, an approval policy) may
        note(
            f"you may not approve requests for signer {issuer['kind'].lower()}s.{issuer['group']}/"
            f"{issuer['name']}; waiting for an approver: cmctl approve -n {namespace} {name}"
        )
    deadline = time.monotonic() + timeout
    request = created
    while True:
        request = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        pem = issued_certificate(request)
        status = request.get("status") or {}
        if pem is not None:
            ca = status.get("ca")
            if not ca:
                raise NotSigned(f"CertificateRequest {where} was signed without status.ca (the fleet CA)")
            return Identity(key_pem(key), pem.encode(), base64.b64decode(ca), where)
        reasons = {c.get("type"): c for c in status.get("conditions") or []}
        if reasons.get("Denied", {}).get("status") == "True" or reasons.get("Ready", {}).get("reason") in (
            "Denied",
            "Failed",
        ):
            raise NotSigned(f"CertificateRequest {where} was not signed: {_state(request)}")
        if time.monotonic() >= deadline:
            raise NotSigned(
                f"CertificateRequest {where} not signed within {timeout:g}s ({_state(request)}): is cert-manager "
                f"running and {issuer['kind']} {issuer['name']} ready?"
            )
        time.sleep(poll)


def board_credentials(
    core: client.CoreV1Api, identity: Identity, sensor: WeatherSensor, fleet: SensorFleet
) -> Credentials:
    """The signed identity, plus for NanoMQ fleets the login the operator generated (NotIssued until it has)."""
    username = password = None
    if fleet.spec.broker.kind == "nanomq":
        ns, name = sensor.metadata.namespace, credentials_secret_name(sensor.spec.device_id)
        login = _secret(core, ns, name)
        username, password = login.get("username", b"").decode(), login.get("password", b"").decode()
        if not (username and password):
            raise NotIssued(f"Secret {ns}/{name} has no username/password")
    return Credentials(
        ca=identity.ca_pem, cert=identity.cert_pem, key=identity.key_pem, username=username, password=password
    )
