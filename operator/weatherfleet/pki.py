"""A local certificate hierarchy made with `cryptography`: the same shape cert-manager makes in the cluster
(a self-signed root CA that signs ECDSA P-256 server and client certificates).

Besides issuing, it renews what is about to expire (a certificate file is reused only while more than
`renew_before` of its lifetime is left), signs certificate signing requests whose subject is exactly the
identity asked for (the device keeps its key), and revokes: `revoke` adds a serial to `ca.crl`, the CRL
Mosquitto loads with `crlfile` and re-reads on SIGHUP."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .reconcilers.credentials import CsrRejected, key_matches, load_signed_csr


@dataclass(frozen=True)
class IssuedCertificate:
    cert: Path
    key: Path
    ca: Path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "weatherfleet"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


# A certificate signing request this CA will not sign; the message says why (the operator's refusal).
CsrRefused = CsrRejected


def _cn(name: x509.Name) -> list[str]:
    return [str(a.value) for a in name.get_attributes_for_oid(NameOID.COMMON_NAME)]


class LocalCA:
    """A root CA kept in a folder; certificates already issued there are reused while valid long enough, so
    state survives restarts."""

    def __init__(self, directory: Path, common_name: str = "weatherfleet root CA") -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.cert_path = self.directory / "ca.crt"
        self.key_path = self.directory / "ca.key"
        if not (self.cert_path.exists() and self.key_path.exists()):
            self._create(common_name)
        self._key = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
        self._cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())

    def _create(self, common_name: str) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(_name(common_name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        _write_key(self.key_path, key)
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def issue(
        self,
        common_name: str,
        *,
        server_names: list[str] | None = None,
        client: bool = True,
        days: int = 90,
        duration: dt.timedelta | None = None,
        renew_before: dt.timedelta | None = None,
        now: dt.datetime | None = None,
    ) -> IssuedCertificate:
        """A leaf certificate for `common_name` (client auth; server auth too when `server_names` is given).
        Reuses the files from an earlier call unless the certificate is within `renew_before` of its expiry
        (default: a third of its lifetime, as cert-manager does) or was revoked; then it issues anew with
        the same key."""
        stem = common_name.replace("/", "_")
        cert_path, key_path = self.directory / f"{stem}.crt", self.directory / f"{stem}.key"
        now = now or dt.datetime.now(dt.UTC)
        lifetime = duration or dt.timedelta(days=days)
        key = None
        if cert_path.exists() and key_path.exists():
            old = x509.load_pem_x509_certificate(cert_path.read_bytes())
            window = renew_before or (old.not_valid_after_utc - old.not_valid_before_utc) / 3
            revoked = old.serial_number in self.revoked()
            if old.not_valid_after_utc - now > window and not revoked:
                return IssuedCertificate(cert_path, key_path, self.cert_path)
            if not revoked:  # renewal keeps the key; a revoked identity gets a new one
                key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        key = key or ec.generate_private_key(ec.SECP256R1())
        usages = ([ExtendedKeyUsageOID.CLIENT_AUTH] if client else []) + (
            [ExtendedKeyUsageOID.SERVER_AUTH] if server_names else []
        )
        builder = self._leaf(common_name, key.public_key(), now, lifetime, usages)
        if server_names:
            sans: list[x509.GeneralName] = []
            for name in server_names:
                try:
                    sans.append(x509.IPAddress(ipaddress.ip_address(name)))
                except ValueError:
                    sans.append(x509.DNSName(name))
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        _write_key(key_path, key)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return IssuedCertificate(cert_path, key_path, self.cert_path)

    def sign_csr(
        self,
        csr_pem: bytes,
        identity: str,
        *,
        duration: dt.timedelta = dt.timedelta(days=90),
        key_algorithm: str = "ECDSA",
        key_size: int = 256,
        now: dt.datetime | None = None,
    ) -> bytes:
        """The PEM client certificate for a device's CSR (its key stays on the device). Signed only when the
        request's signature is valid, its subject is exactly `CN=<identity>` and its key is of the fleet's
        algorithm and size (`reconcilers.credentials.key_matches`); CsrRefused says which check failed."""
        request = load_signed_csr(csr_pem)
        if _cn(request.subject) != [identity]:
            raise CsrRefused(f"subject {request.subject.rfc4514_string()} is not CN={identity}")
        public = request.public_key()
        if not key_matches(public, key_algorithm, key_size):
            name = "ECDSA P-256" if (key_algorithm, key_size) == ("ECDSA", 256) else key_algorithm
            raise CsrRefused(f"the fleet's key algorithm is {name}")
        now = now or dt.datetime.now(dt.UTC)
        builder = self._leaf(identity, public, now, duration, [ExtendedKeyUsageOID.CLIENT_AUTH])
        return builder.sign(self._key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)

    def _leaf(
        self,
        common_name: str,
        public_key: CertificatePublicKeyTypes,
        now: dt.datetime,
        lifetime: dt.timedelta,
        usages: list[x509.ObjectIdentifier],
    ) -> x509.CertificateBuilder:
        """An end-entity certificate for `common_name` signed by this CA, valid from 5 minutes ago."""
        return (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self._cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + lifetime)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True
            )
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False
            )
        )

    # -- revocation ----------------------------------------------------------------------------------------
    @property
    def crl_path(self) -> Path:
        return self.directory / "ca.crl"

    def revoked(self) -> set[int]:
        """Serial numbers in the CRL."""
        if not self.crl_path.exists():
            return set()
        crl = x509.load_pem_x509_crl(self.crl_path.read_bytes())
        return {entry.serial_number for entry in crl}

    def revoke(self, *certificates: Path | bytes, now: dt.datetime | None = None) -> Path:
        """Add certificates (PEM files or PEM bytes) to the CRL and write it again; the CRL path. A broker
        with `crlfile` pointing at it refuses them once it re-reads the file (Mosquitto: SIGHUP)."""
        serials = self.revoked()
        for cert in certificates:
            pem = cert.read_bytes() if isinstance(cert, Path) else cert
            serials.add(x509.load_pem_x509_certificate(pem).serial_number)
        return self.write_crl(serials, now)

    def write_crl(self, serials: set[int] | None = None, now: dt.datetime | None = None) -> Path:
        """The CRL (possibly empty: Mosquitto wants a file that parses) signed by this CA."""
        now = now or dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self._cert.subject)
            .last_update(now - dt.timedelta(minutes=5))
            .next_update(now + dt.timedelta(days=3650))
        )
        for serial in sorted(serials if serials is not None else self.revoked()):
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build()
            )
        crl = builder.sign(self._key, hashes.SHA256())
        self.crl_path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
        return self.crl_path
