"""What cert-manager's CA and self-signed issuers do to a `Certificate`, as pure functions: decide whether
its Secret needs a (re-)issued certificate, make the key and the X.509 certificate from the spec, and say
when it is due for renewal (`renewBefore`, else `renewBeforePercentage`, else a third of its lifetime
before expiry, as cert-manager does)."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..durations import parse_duration

DEFAULT_DURATION = dt.timedelta(days=90)
Object = dict[str, Any]
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

# The annotations cert-manager puts on the Secrets it writes (kubectl describe shows them).
ANN_NAME = "cert-manager.io/certificate-name"
ANN_ISSUER_NAME = "cert-manager.io/issuer-name"
ANN_ISSUER_KIND = "cert-manager.io/issuer-kind"
ANN_ISSUER_GROUP = "cert-manager.io/issuer-group"
ANN_COMMON_NAME = "cert-manager.io/common-name"
ANN_ALT_NAMES = "cert-manager.io/alt-names"
ANN_IP_SANS = "cert-manager.io/ip-sans"
ANN_URI_SANS = "cert-manager.io/uri-sans"
FAO_LABEL = "controller.cert-manager.io/fao"


@dataclass(frozen=True)
class SigningAuthority:
    """Who signs: a CA key pair, or None for a self-signed certificate."""

    cert: x509.Certificate
    key: PrivateKey


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    key: PrivateKey
    ca_pem: bytes

    @property
    def not_before(self) -> dt.datetime:
        return self.cert.not_valid_before_utc

    @property
    def not_after(self) -> dt.datetime:
        return self.cert.not_valid_after_utc


def duration_of(spec: Object) -> dt.timedelta:
    text = spec.get("duration")
    return dt.timedelta(seconds=parse_duration(text)) if text else DEFAULT_DURATION


def renewal_time(spec: Object, not_before: dt.datetime, not_after: dt.datetime) -> dt.datetime:
    """When cert-manager starts renewing: `renewBefore` ahead of expiry, else `renewBeforePercentage` of the
    lifetime, else a third of it; a renewBefore not shorter than the lifetime falls back to the third."""
    lifetime = not_after - not_before
    before = None
    if spec.get("renewBefore"):
        before = dt.timedelta(seconds=parse_duration(spec["renewBefore"]))
    elif spec.get("renewBeforePercentage") is not None:
        before = lifetime * (float(spec["renewBeforePercentage"]) / 100.0)
    if before is None or before >= lifetime or before <= dt.timedelta(0):
        before = lifetime / 3
    return not_after - before


def _new_key(private_key: Object) -> PrivateKey:
    algorithm = private_key.get("algorithm") or "RSA"
    if algorithm == "ECDSA":
        curve = {256: ec.SECP256R1(), 384: ec.SECP384R1(), 521: ec.SECP521R1()}[
            int(private_key.get("size") or 256)
        ]
        return ec.generate_private_key(curve)
    if algorithm == "Ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return rsa.generate_private_key(public_exponent=65537, key_size=int(private_key.get("size") or 2048))


def key_matches(key: PrivateKey, private_key: Object) -> bool:
    algorithm = private_key.get("algorithm") or "RSA"
    if algorithm == "ECDSA":
        return isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size == int(
            private_key.get("size") or 256
        )
    if algorithm == "Ed25519":
        return isinstance(key, ed25519.Ed25519PrivateKey)
    return isinstance(key, rsa.RSAPrivateKey) and key.key_size == int(private_key.get("size") or 2048)


def key_pem(key: PrivateKey, private_key: Object) -> bytes:
    """PKCS#1/SEC1 by default (`privateKey.encoding: PKCS1`), PKCS#8 on request; Ed25519 is always PKCS#8."""
    pkcs8 = (private_key.get("encoding") or "PKCS1") == "PKCS8" or isinstance(key, ed25519.Ed25519PrivateKey)
    fmt = serialization.PrivateFormat.PKCS8 if pkcs8 else serialization.PrivateFormat.TraditionalOpenSSL
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


def _subject(spec: Object) -> x509.Name:
    attributes = []
    subject = spec.get("subject") or {}
    for oid, field in (
        (NameOID.COUNTRY_NAME, "countries"),
        (NameOID.ORGANIZATION_NAME, "organizations"),
        (NameOID.ORGANIZATIONAL_UNIT_NAME, "organizationalUnits"),
        (NameOID.LOCALITY_NAME, "localities"),
        (NameOID.STATE_OR_PROVINCE_NAME, "provinces"),
    ):
        attributes += [x509.NameAttribute(oid, value) for value in subject.get(field) or []]
    if spec.get("commonName"):
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, spec["commonName"]))
    return x509.Name(attributes)


def _sans(spec: Object) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in spec.get("dnsNames") or []]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in spec.get("ipAddresses") or []]
    names += [x509.UniformResourceIdentifier(u) for u in spec.get("uris") or []]
    names += [x509.RFC822Name(e) for e in spec.get("emailAddresses") or []]
    return names


def _key_usage(usages: set[str], is_ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature="digital signature" in usages or "signing" in usages,
        content_commitment="content commitment" in usages,
        key_encipherment="key encipherment" in usages,
        data_encipherment="data encipherment" in usages,
        key_agreement="key agreement" in usages,
        key_cert_sign=is_ca or "cert sign" in usages,
        crl_sign=is_ca or "crl sign" in usages,
        encipher_only=False,
        decipher_only=False,
    )


def issue(
    spec: Object, authority: SigningAuthority | None, now: dt.datetime, existing_key: PrivateKey | None = None
) -> Issued:
    """A certificate as the spec asks for it, signed by `authority` (self-signed without one). The key is
    new unless `privateKey.rotationPolicy: Never` and a matching key exists."""
    private_key = spec.get("privateKey") or {}
    keep = private_key.get("rotationPolicy") == "Never" and existing_key is not None
    key = existing_key if keep and key_matches(existing_key, private_key) else _new_key(private_key)
    is_ca = bool(spec.get("isCA"))
    usages = set(spec.get("usages") or ["digital signature", "key encipherment"])
    not_after = now + duration_of(spec)
    if authority is not None:
        not_after = min(not_after, authority.cert.not_valid_after_utc)  # never outlive the CA
    subject = _subject(spec)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(authority.cert.subject if authority else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(_key_usage(usages, is_ca), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    extended = [
        oid
        for usage, oid in (
            ("server auth", ExtendedKeyUsageOID.SERVER_AUTH),
            ("client auth", ExtendedKeyUsageOID.CLIENT_AUTH),
        )
        if usage in usages
    ]
    if extended:
        builder = builder.add_extension(x509.ExtendedKeyUsage(extended), critical=False)
    if authority is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(authority.key.public_key()), critical=False
        )
    sans = _sans(spec)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    signer = authority.key if authority else key
    algorithm = None if isinstance(signer, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    cert = builder.sign(signer, algorithm)
    ca_cert = authority.cert if authority else cert
    return Issued(cert, key, ca_cert.public_bytes(serialization.Encoding.PEM))


def secret_data(issued: Issued, spec: Object) -> dict[str, str]:
    """A kubernetes.io/tls Secret's data (base64): tls.crt, tls.key and ca.crt."""
    values = {
        "tls.crt": issued.cert.public_bytes(serialization.Encoding.PEM),
        "tls.key": key_pem(issued.key, spec.get("privateKey") or {}),
        "ca.crt": issued.ca_pem,
    }
    return {k: base64.b64encode(v).decode() for k, v in values.items()}


def load_pair(data: dict[str, str]) -> tuple[x509.Certificate, PrivateKey] | None:
    """The certificate and key a Secret holds, or None when they are missing or do not belong together."""
    try:
        cert = x509.load_pem_x509_certificate(base64.b64decode(data["tls.crt"]))
        key = serialization.load_pem_private_key(base64.b64decode(data["tls.key"]), password=None)
    except (KeyError, ValueError, TypeError):
        return None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(serialization.Encoding.DER, public) != key.public_key().public_bytes(
        serialization.Encoding.DER, public
    ):
        return None
    return cert, key  # type: ignore[return-value]


def _cert_names(cert: x509.Certificate) -> tuple[str | None, set[str], set[str], bool]:
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = set(sans.get_values_for_type(x509.DNSName))
        ips = {str(a) for a in sans.get_values_for_type(x509.IPAddress)}
    except x509.ExtensionNotFound:
        dns, ips = set(), set()
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    return (cn[0].value if cn else None), dns, ips, is_ca  # type: ignore[return-value]


def issuance_reason(
    spec: Object, secret: Object | None, issuer_ref: Object, now: dt.datetime
) -> tuple[str, str] | None:
    """(reason, message) why the Secret needs a new certificate, in cert-manager's words; None when it is
    up to date and not due for renewal."""
    if secret is None:
        return "DoesNotExist", "Issuing certificate as Secret does not exist"
    pair = load_pair(secret.get("data") or {})
    if pair is None:
        return "InvalidKeyPair", "Issuing certificate as Secret contains an invalid key-pair"
    cert, key = pair
    annotations = (secret.get("metadata") or {}).get("annotations") or {}
    if (annotations.get(ANN_ISSUER_NAME), annotations.get(ANN_ISSUER_KIND)) != (
        issuer_ref.get("name"),
        issuer_ref.get("kind") or "Issuer",
    ):
        return "IncorrectIssuer", "Issuing certificate as Secret was previously issued by another issuer"
    cn, dns, ips, is_ca = _cert_names(cert)
    if (
        cn != spec.get("commonName")
        or dns != set(spec.get("dnsNames") or [])
        or ips != {str(ipaddress.ip_address(a)) for a in spec.get("ipAddresses") or []}
        or is_ca != bool(spec.get("isCA"))
        or not key_matches(key, spec.get("privateKey") or {})
    ):
        return "SecretMismatch", "Issuing certificate as Secret does not match the Certificate spec"
    if now >= cert.not_valid_after_utc:
        return "Expired", f"Certificate expired on {cert.not_valid_after_utc.isoformat()}"
    if now >= renewal_time(spec, cert.not_valid_before_utc, cert.not_valid_after_utc):
        return "Renewing", "Renewing certificate as renewal was scheduled at " + renewal_time(
            spec, cert.not_valid_before_utc, cert.not_valid_after_utc
        ).strftime("%Y-%m-%d %H:%M:%S +0000 UTC")
    return None
