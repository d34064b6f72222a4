"""The local CA: it renews what is about to expire (same key), signs a device's CSR only for that device's
own identity and the fleet's key type, and revokes into a CRL."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from weatherfleet.pki import CsrRefused, LocalCA


def _csr(key, cn: str) -> bytes:
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .sign(key, hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.PEM)


def test_issue_reuses_until_the_renewal_window_then_renews_with_the_same_key(tmp_path: Path) -> None:
    ca = LocalCA(tmp_path)
    now = dt.datetime.now(dt.UTC)
    first = ca.issue("dev-01", duration=dt.timedelta(hours=3), renew_before=dt.timedelta(hours=1), now=now)
    cert1 = x509.load_pem_x509_certificate(first.cert.read_bytes())
    same = ca.issue("dev-01", renew_before=dt.timedelta(hours=1), now=now + dt.timedelta(minutes=90))
    assert x509.load_pem_x509_certificate(same.cert.read_bytes()).serial_number == cert1.serial_number
    later = now + dt.timedelta(hours=2, minutes=30)  # within renewBefore of the expiry
    renewed = ca.issue(
        "dev-01", duration=dt.timedelta(hours=3), renew_before=dt.timedelta(hours=1), now=later
    )
    cert2 = x509.load_pem_x509_certificate(renewed.cert.read_bytes())
    assert cert2.serial_number != cert1.serial_number
    assert cert2.not_valid_after_utc > cert1.not_valid_after_utc
    assert cert2.public_key().public_numbers() == cert1.public_key().public_numbers()


def test_a_csr_is_signed_only_for_the_device_itself_and_the_fleets_key_type(tmp_path: Path) -> None:
    ca = LocalCA(tmp_path)
    key = ec.generate_private_key(ec.SECP256R1())
    pem = ca.sign_csr(_csr(key, "dev-02"), "dev-02", duration=dt.timedelta(minutes=10))
    cert = x509.load_pem_x509_certificate(pem)
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)] == ["dev-02"]
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca.cert_path.read_bytes()))
    assert cert.not_valid_after_utc - cert.not_valid_before_utc <= dt.timedelta(minutes=16)

    with pytest.raises(CsrRefused, match="is not CN=dev-02"):
        ca.sign_csr(_csr(key, "dev-03"), "dev-02")
    with pytest.raises(CsrRefused, match="is not CN=dev-02"):
        ca.sign_csr(_csr(key, "weatherfleet-ingest"), "dev-02")
    with pytest.raises(CsrRefused, match="ECDSA P-256"):
        ca.sign_csr(_csr(rsa.generate_private_key(65537, 2048), "dev-02"), "dev-02")
    with pytest.raises(CsrRefused, match="ECDSA P-256"):
        ca.sign_csr(_csr(ec.generate_private_key(ec.SECP384R1()), "dev-02"), "dev-02")
    with pytest.raises(CsrRefused, match="not a PEM"):
        ca.sign_csr(
            b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n", "dev-02"
        )


def test_revoked_certificates_are_in_the_crl_and_never_reused(tmp_path: Path) -> None:
    ca = LocalCA(tmp_path)
    issued = ca.issue("dev-04")
    serial = x509.load_pem_x509_certificate(issued.cert.read_bytes()).serial_number
    crl_path = ca.revoke(issued.cert)
    crl = x509.load_pem_x509_crl(crl_path.read_bytes())
    assert crl.is_signature_valid(x509.load_pem_x509_certificate(ca.cert_path.read_bytes()).public_key())
    assert crl.get_revoked_certificate_by_serial_number(serial) is not None
    again = ca.issue("dev-04")
    assert x509.load_pem_x509_certificate(again.cert.read_bytes()).serial_number != serial
