"""What cert-manager's CA and self-signed issuers do with a `CertificateRequest` (cert-manager.io/v1), for
the stand-in: nothing until the request is approved (an `Approved` condition, set by whoever holds
`approve` on the issuer's signer: the operator for a device's renewal, `weatherfleet provision` for a
board's first certificate); a `Denied` one is failed; an approved one is signed from its issuer for the
CSR's subject, public key and SANs, `spec.duration` (never beyond the CA), `spec.isCA` and `spec.usages`,
and reported as cert-manager reports it: `status.certificate` and `status.ca` (base64 PEM) and a `Ready`
condition (`Issued`, or `Failed`/`Denied` with `failureTime`).

The key never reaches the signer: a CertificateRequest carries only the CSR (`spec.request`, base64 PEM).
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from kubernetes.client.rest import ApiException

from . import issuing
from .watchloop import WatchLoop

if TYPE_CHECKING:
    from .controller import CertManager

log = logging.getLogger(__name__)
GROUP, VERSION, PLURAL = "cert-manager.io", "v1", "certificaterequests"
Object = dict[str, Any]
ISSUED_MESSAGE = "Certificate fetched from issuer successfully"
DENIED_MESSAGE = "The CertificateRequest was denied by an approval controller"


def _rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def conditions_of(request: Object) -> dict[str, str]:
    return {
        c.get("type", ""): c.get("status", "") for c in (request.get("status") or {}).get("conditions") or []
    }


def finished(request: Object) -> bool:
    """Signed or failed for good: cert-manager never looks at such a request again."""
    ready = next(
        (c for c in (request.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"), None
    )
    return ready is not None and (
        ready.get("status") == "True" or ready.get("reason") in ("Failed", "Denied")
    )


def _ready(old: Object, status: str, reason: str, message: str, now: dt.datetime) -> list[Object]:
    conditions = (old.get("status") or {}).get("conditions") or []
    same = [
        c
        for c in conditions
        if c.get("type") == "Ready"
        and (c.get("status"), c.get("reason"), c.get("message")) == (status, reason, message)
    ]
    if same:  # unchanged: no new write (a write is an event, and an event a reconcile)
        return conditions
    kept = [c for c in conditions if c.get("type") != "Ready"]
    return [
        *kept,
        {
            "type": "Ready",
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": _rfc3339(now),
        },
    ]


def failed_status(request: Object, reason: str, message: str, now: dt.datetime) -> Object:
    return {
        **(request.get("status") or {}),
        "conditions": _ready(request, "False", reason, message, now),
        "failureTime": _rfc3339(now),
    }


def pending_status(request: Object, message: str, now: dt.datetime) -> Object:
    return {**(request.get("status") or {}), "conditions": _ready(request, "False", "Pending", message, now)}


def sign(spec: Object, authority: issuing.SigningAuthority | None, now: dt.datetime) -> tuple[bytes, bytes]:
    """(certificate PEM, CA PEM) for the CSR in `spec.request`, as the CA issuer signs it: subject, key and
    SANs from the CSR; lifetime, CA flag and usages from the spec. ValueError for a CSR that cannot be
    signed (not PEM, bad signature); a self-signed issuer cannot sign a CSR it has no key for."""
    try:
        csr = x509.load_pem_x509_csr(base64.b64decode(spec["request"]))
    except (KeyError, ValueError, TypeError) as exc:
        raise ValueError(f"spec.request is not a base64 PEM certificate signing request: {exc}") from None
    if not csr.is_signature_valid:
        raise ValueError("the certificate signing request's signature does not verify")
    if authority is None:
        raise ValueError("a selfSigned issuer signs with the request's own key, which it does not have")
    is_ca = bool(spec.get("isCA"))
    usages = set(spec.get("usages") or ["digital signature", "key encipherment"])
    not_after = min(now + issuing.duration_of(spec), authority.cert.not_valid_after_utc)
    public = csr.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(csr.subject)
        .issuer_name(authority.cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(issuing._key_usage(usages, is_ca), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)  # type: ignore[arg-type]
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(authority.key.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    )
    extended = [
        oid
        for usage, oid in (
            ("server auth", x509.ExtendedKeyUsageOID.SERVER_AUTH),
            ("client auth", x509.ExtendedKeyUsageOID.CLIENT_AUTH),
        )
        if usage in usages
    ]
    if extended:
        builder = builder.add_extension(x509.ExtendedKeyUsage(extended), critical=False)
    try:
        sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        builder = builder.add_extension(sans, critical=False)
    except x509.ExtensionNotFound:
        pass
    algorithm = None if isinstance(authority.key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    cert = builder.sign(authority.key, algorithm)
    return (
        cert.public_bytes(serialization.Encoding.PEM),
        authority.cert.public_bytes(serialization.Encoding.PEM),
    )


class RequestSigner(WatchLoop):
    """Follows CertificateRequests (list, then watch) and answers approved ones, with the issuers of the
    `CertManager` it belongs to. Started and stopped with it."""

    def __init__(self, manager: CertManager) -> None:
        super().__init__("cert-manager-requests")
        self.manager = manager
        self.signed = 0
        self._waiting: set[tuple[str, str]] = set()  # approved, but the issuer was not ready

    @property
    def retry_seconds(self) -> float:
        return self.manager.retry_seconds

    def _pass(self) -> None:
        custom = self.manager.custom
        listing = custom.list_cluster_custom_object(GROUP, VERSION, PLURAL)
        for request in listing["items"]:
            self.reconcile(request)
        # a request waiting for its issuer is looked at again after retry_seconds at the latest
        timeout = max(1, int(self.retry_seconds)) if self._waiting else int(self.manager.resync_seconds)
        for event in self._events(
            custom.list_cluster_custom_object,
            GROUP,
            VERSION,
            PLURAL,
            resource_version=listing["metadata"]["resourceVersion"],
            timeout_seconds=timeout,
        ):
            if event["type"] in ("ADDED", "MODIFIED"):
                self.reconcile(event["object"])

    def reconcile(self, request: Object) -> None:
        """Answer one request if it is approved (or denied) and not answered yet."""
        meta = request["metadata"]
        key = (meta["namespace"], meta["name"])
        self._waiting.discard(key)
        if finished(request):
            return
        conditions = conditions_of(request)
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        if conditions.get("Denied") == "True":
            self._set_status(request, failed_status(request, "Denied", DENIED_MESSAGE, now))
            return
        if conditions.get("Approved") != "True":
            return  # cert-manager signs nothing that is not approved
        spec = request.get("spec") or {}
        ref = {"group": GROUP, "kind": "Issuer", **(spec.get("issuerRef") or {})}
        try:
            authority = self.manager._authority(ref, meta["namespace"])
        except Exception as exc:  # NotReady: the issuer or its CA Secret is missing; look again later
            self._waiting.add(key)
            self._set_status(request, pending_status(request, str(exc), now))
            return
        try:
            cert_pem, ca_pem = sign(spec, authority, now)
        except ValueError as exc:
            self._set_status(request, failed_status(request, "Failed", str(exc), now))
            log.warning("certificate request %s/%s failed: %s", *key, exc)
            return
        status = {
            **(request.get("status") or {}),
            "conditions": _ready(request, "True", "Issued", ISSUED_MESSAGE, now),
            "certificate": base64.b64encode(cert_pem).decode(),
            "ca": base64.b64encode(ca_pem).decode(),
        }
        self._set_status(request, status)
        self.signed += 1
        log.info("certificate request %s/%s signed", *key)

    def _set_status(self, request: Object, status: Object) -> None:
        if (request.get("status") or {}) == status:
            return
        meta = request["metadata"]
        try:
            self.manager.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, meta["namespace"], PLURAL, meta["name"], {"status": status}
            )
        except ApiException as exc:
            if exc.status != 404:  # deleted meanwhile: nothing to answer
                raise
