"""The operator's review of a device's CSR (pure): only the device's own id, only the fleet's key type, no
extensions; the CertificateRequest it makes for the fleet's issuer; the approval; reading the signed
certificate back. A CSR made by the firmware (csr.py under MicroPython) passes."""

from __future__ import annotations

import base64
import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from weatherfleet.models import SensorFleet, WeatherSensor
from weatherfleet.reconcilers.credentials import (
    CsrRejected,
    approval,
    certificate_request,
    is_approved,
    issued_certificate,
    request_name,
    review_csr,
)

FLEET = SensorFleet.model_validate(
    {
        "metadata": {"name": "garden", "namespace": "weatherfleet", "uid": "f-1"},
        "spec": {
            "selector": {"matchLabels": {"fleet": "garden"}},
            "certificates": {"duration": "60s", "renewBefore": "40s", "issuerRef": {"name": "fleet-ca"}},
        },
    }
)
SENSOR = WeatherSensor.model_validate(
    {
        "metadata": {
            "name": "shed",
            "namespace": "weatherfleet",
            "uid": "s-1",
            "labels": {"fleet": "garden"},
        },
        "spec": {"deviceId": "dev-05", "location": "shed", "sensors": [{"type": "bme280"}]},
    }
)


def _csr(key, *attrs: tuple, san: bool = False) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(oid, value) for oid, value in attrs])
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName("evil")]), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def test_review_signs_only_the_devices_own_id_with_the_fleets_key_type() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    good = _csr(key, (NameOID.ORGANIZATION_NAME, "weatherfleet"), (NameOID.COMMON_NAME, "dev-05"))
    assert review_csr("dev-05", good, FLEET).subject.rfc4514_string() == "CN=dev-05,O=weatherfleet"
    assert review_csr("dev-05", _csr(key, (NameOID.COMMON_NAME, "dev-05")), FLEET)
    refusals = {
        "another device": (_csr(key, (NameOID.COMMON_NAME, "dev-06")), "is not the device's own id"),
        "a service": (_csr(key, (NameOID.COMMON_NAME, "weatherfleet-ingest")), "is not the device's own id"),
        "two CNs": (
            _csr(key, (NameOID.COMMON_NAME, "dev-05"), (NameOID.COMMON_NAME, "dev-06")),
            "is not the device's own id",
        ),
        "other org": (
            _csr(key, (NameOID.ORGANIZATION_NAME, "x"), (NameOID.COMMON_NAME, "dev-05")),
            "is not the device's own id",
        ),
        "SANs": (_csr(key, (NameOID.COMMON_NAME, "dev-05"), san=True), "extensions"),
        "RSA key": (
            _csr(rsa.generate_private_key(65537, 2048), (NameOID.COMMON_NAME, "dev-05")),
            "not ECDSA 256",
        ),
        "P-384": (
            _csr(ec.generate_private_key(ec.SECP384R1()), (NameOID.COMMON_NAME, "dev-05")),
            "not ECDSA 256",
        ),
        "garbage": (
            b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
            "not a PEM",
        ),
        "huge": (b"x" * 5000, "exceeds"),
    }
    for name, (pem, reason) in refusals.items():
        with pytest.raises(CsrRejected, match=reason):
            review_csr("dev-05", pem, FLEET)
            pytest.fail(name)


def test_the_certificate_request_for_the_fleets_issuer_and_its_approval() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = _csr(key, (NameOID.COMMON_NAME, "dev-05"))
    cr = certificate_request(SENSOR, FLEET, pem)
    assert cr["kind"] == "CertificateRequest" and cr["apiVersion"] == "cert-manager.io/v1"
    assert cr["metadata"]["name"] == request_name("dev-05", pem) and cr["metadata"]["name"].startswith(
        "dev-05-"
    )
    assert cr["metadata"]["ownerReferences"][0]["uid"] == "s-1"
    assert base64.b64decode(cr["spec"]["request"]) == pem
    assert cr["spec"]["issuerRef"] == {
        "group": "cert-manager.io",
        "kind": "ClusterIssuer",
        "name": "fleet-ca",
    }
    assert cr["spec"]["duration"] == "60s" and cr["spec"]["usages"] == ["client auth", "digital signature"]
    assert request_name("dev-05", pem) == request_name("dev-05", pem)  # a retried CSR: the same request
    # the same key signs the same CSR next time (RFC 6979): the next issuance is another request
    assert request_name("dev-05", pem, 1) == request_name("dev-05", pem) + "-1"
    assert certificate_request(SENSOR, FLEET, pem, attempt=2)["metadata"]["name"].endswith("-2")
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    cond = approval(now, "dev-05")
    assert cond["type"] == "Approved" and cond["status"] == "True"
    assert not is_approved(cr) and is_approved({"status": {"conditions": [cond]}})
    assert issued_certificate(cr) is None
    signed = {
        "status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "certificate": base64.b64encode(b"-----BEGIN CERTIFICATE-----\n...").decode(),
        }
    }
    assert issued_certificate(signed).startswith("-----BEGIN CERTIFICATE-----")


def test_a_csr_made_by_the_firmware_passes_review(local_ca) -> None:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "firmware_device"))
    from mpy_harness import run_micropython

    issued = local_ca.issue("dev-05")
    script = (
        "import json, binascii, csr\n"
        "d = json.load(open('/data/input.json'))\n"
        "k = csr.load_key(d['key'])\n"
        "print('RESULT', json.dumps(binascii.hexlify(csr.request(k, 'dev-05')).decode()))\n"
    )
    der = bytes.fromhex(run_micropython(script, {"key": issued.key.read_text()}).check().json())
    pem = x509.load_der_x509_csr(der).public_bytes(serialization.Encoding.PEM)
    assert review_csr("dev-05", pem, FLEET)
    with pytest.raises(CsrRejected):
        review_csr("dev-06", pem, FLEET)
