"""The cert-manager stand-in answers CertificateRequests as cert-manager's CA issuer does: nothing before
approval; an approved request is signed for the CSR's subject and key, the spec's duration and usages, with
`status.certificate`, `status.ca` and Ready/Issued; a denied one is Ready=False/Denied, a request whose CSR
does not verify Ready=False/Failed (both with failureTime); a request for an issuer that is not there yet
waits (Pending) and is signed once the issuer exists. Against the embedded API server."""

from __future__ import annotations

import base64
import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kubernetes import client, config

from weatherfleet.apiserver import ApiServer
from weatherfleet.certmanager import CertManager
from weatherfleet.local import platform
from weatherfleet.services.process import wait_until

NS = "weatherfleet"
G, V, P = "cert-manager.io", "v1", "certificaterequests"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cm")
    server = ApiServer().start()
    kubeconfig = server.write_kubeconfig(tmp / "kubeconfig", namespace=NS)
    api = config.new_client_from_config(str(kubeconfig))
    applier = platform.Api(api)
    applier.install_crds()
    for ns in (NS, "cert-manager"):
        applier.apply(platform.namespace(ns))
    for doc in platform.pki({"weatherfleet-ca"}):
        applier.apply(doc)
    manager = CertManager(
        config.new_client_from_config(str(kubeconfig)), resync_seconds=2, retry_seconds=0.3
    ).start()
    yield applier, client.CustomObjectsApi(api), client.CoreV1Api(api)
    manager.stop()
    server.stop()


def _csr(cn: str, key=None) -> bytes:
    key = key or ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(name)
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )


def _request(custom, name: str, csr: bytes, issuer: str = "weatherfleet-ca", condition: str | None = None):
    custom.create_namespaced_custom_object(G, V, NS, P, {
        "apiVersion": f"{G}/{V}", "kind": "CertificateRequest", "metadata": {"name": name},
        "spec": {"request": base64.b64encode(csr).decode(), "duration": "1h", "isCA": False,
                 "usages": ["client auth", "digital signature"],
                 "issuerRef": {"group": G, "kind": "ClusterIssuer", "name": issuer}},
    })  # fmt: skip
    if condition:
        custom.patch_namespaced_custom_object_status(G, V, NS, P, name, {"status": {"conditions": [
            {"type": condition, "status": "True", "reason": "Test", "message": "by the test",
             "lastTransitionTime": "2026-01-01T00:00:00Z"}]}})  # fmt: skip


def _ready(custom, name: str) -> dict | None:
    obj = custom.get_namespaced_custom_object(G, V, NS, P, name)
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"), None)


def test_approved_requests_are_signed_as_the_ca_issuer_signs(cluster):
    _applier, custom, core = cluster
    key = ec.generate_private_key(ec.SECP256R1())
    _request(custom, "signed", _csr("dev-cm-1", key), condition="Approved")
    wait_until(lambda: (_ready(custom, "signed") or {}).get("status") == "True", 30, "the request signed")
    obj = custom.get_namespaced_custom_object(G, V, NS, P, "signed")
    assert _ready(custom, "signed")["reason"] == "Issued"
    cert = x509.load_pem_x509_certificate(base64.b64decode(obj["status"]["certificate"]))
    ca = x509.load_pem_x509_certificate(base64.b64decode(obj["status"]["ca"]))
    root = core.read_namespaced_secret("weatherfleet-root-ca", "cert-manager")
    assert ca.public_bytes(serialization.Encoding.PEM) == base64.b64decode(root.data["tls.crt"])
    cert.verify_directly_issued_by(ca)
    assert cert.subject.rfc4514_string() == "CN=dev-cm-1"
    der, spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    assert cert.public_key().public_bytes(der, spki) == key.public_key().public_bytes(der, spki)
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime == dt.timedelta(hours=1)
    assert (
        x509.ExtendedKeyUsageOID.CLIENT_AUTH
        in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    )
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_unapproved_denied_and_broken_requests(cluster):
    _applier, custom, _core = cluster
    _request(custom, "waiting", _csr("dev-cm-2"))
    _request(custom, "denied", _csr("dev-cm-3"), condition="Denied")
    broken = _csr("dev-cm-4").replace(b"MI", b"MJ", 1)  # a CSR that does not parse or verify
    _request(custom, "broken", broken, condition="Approved")
    wait_until(
        lambda: _ready(custom, "denied") and _ready(custom, "broken"), 30, "denied and broken answered"
    )
    denied, failed = _ready(custom, "denied"), _ready(custom, "broken")
    assert (denied["status"], denied["reason"]) == ("False", "Denied")
    assert (failed["status"], failed["reason"]) == ("False", "Failed")
    for name in ("denied", "broken"):
        status = custom.get_namespaced_custom_object(G, V, NS, P, name)["status"]
        assert status.get("failureTime") and not status.get("certificate")
    # the unapproved one, listed before the other two were answered, is still untouched
    assert _ready(custom, "waiting") is None
    assert (
        not custom.get_namespaced_custom_object(G, V, NS, P, "waiting").get("status", {}).get("certificate")
    )


def test_a_request_waits_for_its_issuer_and_is_signed_once_it_exists(cluster):
    applier, custom, _core = cluster
    _request(custom, "early", _csr("dev-cm-5"), issuer="later-ca", condition="Approved")
    wait_until(lambda: (_ready(custom, "early") or {}).get("reason") == "Pending", 30, "the request pending")
    applier.apply({"apiVersion": f"{G}/{V}", "kind": "ClusterIssuer", "metadata": {"name": "later-ca"},
                   "spec": {"ca": {"secretName": "weatherfleet-root-ca"}}})  # fmt: skip
    wait_until(lambda: (_ready(custom, "early") or {}).get("status") == "True", 30, "the request signed")
