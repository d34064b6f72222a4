"""`weatherfleet provision` takes the board's identity through a certificate signing request: the key is made
at provisioning and never reaches the cluster; the CSR becomes a cert-manager CertificateRequest for the
fleet's issuer, approved by the provisioner and signed by the cert-manager stand-in (as cert-manager's CA
issuer would), and the signed certificate goes with the key into the board's files. Against the embedded
API server and the stand-in; the certificate is then used on a real Mosquitto over mutual TLS."""

from __future__ import annotations

import base64
import threading
from pathlib import Path

import paho.mqtt.client as paho
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from kubernetes import client, config

from weatherfleet.apiserver import ApiServer
from weatherfleet.certmanager import CertManager
from weatherfleet.cli import main
from weatherfleet.local import platform
from weatherfleet.pki import LocalCA
from weatherfleet.reconcilers.broker import mosquitto_acl
from weatherfleet.services.mosquitto import MosquittoBroker
from weatherfleet.services.process import free_port, wait_until

from .conftest import FLEET, sensor

NS = "weatherfleet"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Fleet `garden` (issuer weatherfleet-ca, which the stand-in serves) with dev-05; fleet `orphan`,
    whose issuer exists nowhere, with dev-06. The kubeconfig has a second context, `fleet`."""
    tmp = tmp_path_factory.mktemp("cluster")
    server = ApiServer().start()
    kubeconfig = server.write_kubeconfig(tmp / "kubeconfig", namespace=NS)
    doc = yaml.safe_load(kubeconfig.read_text())
    doc["contexts"].append({"name": "fleet", "context": dict(doc["contexts"][0]["context"])})
    doc["current-context"] = "nowhere"  # only an explicit --context works
    doc["contexts"][0]["name"] = "nowhere"
    doc["contexts"][0]["context"] = {**doc["contexts"][0]["context"], "cluster": "missing"}
    kubeconfig.write_text(yaml.safe_dump(doc))
    api = config.new_client_from_config(str(kubeconfig), context="fleet")
    applier = platform.Api(api)
    applier.install_crds()
    for ns in (NS, "cert-manager"):
        applier.apply(platform.namespace(ns))
    for doc in platform.pki({"weatherfleet-ca"}):
        applier.apply(doc)
    orphan = {
        **FLEET,
        "metadata": {"name": "orphan", "namespace": NS},
        "spec": {
            **FLEET["spec"],
            "selector": {"matchLabels": {"weatherfleet.io/fleet": "orphan"}},
            "certificates": {"issuerRef": {"name": "no-such-issuer", "kind": "ClusterIssuer"}},
        },
    }
    dev6 = sensor("dev-06", "attic")
    dev6["metadata"]["labels"] = {"weatherfleet.io/fleet": "orphan"}
    for doc in (FLEET, orphan, sensor("dev-05", "porch"), dev6):
        applier.apply(doc)
    manager = CertManager(
        config.new_client_from_config(str(kubeconfig), context="fleet"), resync_seconds=2, retry_seconds=0.3
    ).start()
    core = client.CoreV1Api(api)

    def root_ca():
        try:
            return core.read_namespaced_secret("weatherfleet-root-ca", "cert-manager")
        except client.ApiException:
            return None

    wait_until(root_ca, 30, "the root CA the CA issuer signs with")
    yield kubeconfig, api, core
    manager.stop()
    server.stop()


def _provision(kubeconfig: Path, device: str, workdir: Path, *extra: str) -> int:
    return main(
        ["provision", device, "--port", "/dev/ttyUSB0", "--kubeconfig", str(kubeconfig), "--context", "fleet",
         "--workdir", str(workdir), "--dry-run", *extra]
    )  # fmt: skip


def test_the_key_stays_here_and_the_signed_certificate_works_on_mosquitto(cluster, tmp_path, capsys):
    kubeconfig, api, core = cluster
    assert _provision(kubeconfig, "dev-05", tmp_path / "wd") == 0
    out = capsys.readouterr().out
    assert "PRIVATE KEY" not in out
    staged = tmp_path / "wd" / "provision" / "dev-05" / "certs"
    key = serialization.load_pem_private_key((staged / "device.key").read_bytes(), password=None)
    cert = x509.load_pem_x509_certificate((staged / "device.pem").read_bytes())
    ca = x509.load_pem_x509_certificate((staged / "ca.pem").read_bytes())
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    # the certificate is for the key made here, for the device's id, signed by the fleet CA
    assert cert.public_key().public_bytes(der, public) == key.public_key().public_bytes(der, public)
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "dev-05"
    cert.verify_directly_issued_by(ca)
    root = core.read_namespaced_secret("weatherfleet-root-ca", "cert-manager")
    assert ca.public_bytes(serialization.Encoding.PEM) == base64.b64decode(root.data["tls.crt"])
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.ExtendedKeyUsageOID.CLIENT_AUTH in usages

    # the cluster saw a CSR, never the key: one request, for the fleet's issuer, owned by the sensor
    requests = client.CustomObjectsApi(api).list_namespaced_custom_object(
        "cert-manager.io", "v1", NS, "certificaterequests"
    )["items"]
    mine = [r for r in requests if r["metadata"]["name"].startswith("dev-05-")]
    assert len(mine) == 1
    request = mine[0]
    assert "PRIVATE KEY" not in str(request)
    csr = x509.load_pem_x509_csr(base64.b64decode(request["spec"]["request"]))
    assert csr.public_key().public_bytes(der, public) == key.public_key().public_bytes(der, public)
    assert request["spec"]["issuerRef"] == {
        "group": "cert-manager.io",
        "kind": "ClusterIssuer",
        "name": "weatherfleet-ca",
    }
    assert [o["kind"] for o in request["metadata"]["ownerReferences"]] == ["WeatherSensor"]
    conditions = {c["type"]: c for c in request["status"]["conditions"]}
    assert conditions["Approved"]["reason"] == "WeatherfleetProvision"
    assert conditions["Ready"]["status"] == "True" and conditions["Ready"]["reason"] == "Issued"
    keytext = (staged / "device.key").read_text()
    for secret in core.list_secret_for_all_namespaces().items:
        assert keytext.encode() not in [base64.b64decode(v) for v in (secret.data or {}).values()]

    # the identity is accepted by a real Mosquitto whose CA is the fleet's (mutual TLS, CN = username)
    pki = tmp_path / "pki"
    pki.mkdir()
    (pki / "ca.crt").write_bytes(base64.b64decode(root.data["tls.crt"]))
    (pki / "ca.key").write_bytes(base64.b64decode(root.data["tls.key"]))
    broker = MosquittoBroker(
        tmp_path / "mosquitto", LocalCA(pki), free_port(), mosquitto_acl("garden", ["dev-05"])
    )
    broker.start()
    connected = threading.Event()
    codes: list = []
    mqtt = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="dev-05")
    mqtt.tls_set(str(staged / "ca.pem"), str(staged / "device.pem"), str(staged / "device.key"))

    def on_connect(_c, _u, _f, reason, _p) -> None:
        codes.append(reason)
        connected.set()

    mqtt.on_connect = on_connect
    try:
        mqtt.connect("127.0.0.1", broker.port)
        mqtt.loop_start()
        assert connected.wait(20), "no CONNACK from Mosquitto"
        assert not codes[0].is_failure, codes[0]
        info = mqtt.publish("sensors/dev-05/measurements", "weather temp=1", qos=1)
        info.wait_for_publish(10)
        assert info.is_published()
    finally:
        mqtt.loop_stop()
        mqtt.disconnect()
        broker.stop()


def test_a_request_nobody_signs_times_out_with_a_clear_error(cluster, tmp_path, capsys):
    kubeconfig, _api, _core = cluster
    code = _provision(kubeconfig, "dev-06", tmp_path / "wd", "--timeout", "2")
    err = capsys.readouterr().err
    assert code == 3
    assert "CertificateRequest weatherfleet/dev-06-" in err and "not signed within 2s" in err
    assert "ClusterIssuer no-such-issuer" in err
    # nothing half-made is staged: no key without its certificate
    assert not (tmp_path / "wd" / "provision" / "dev-06").exists()


def test_a_context_that_does_not_exist_is_named(cluster, tmp_path, capsys):
    kubeconfig, _api, _core = cluster
    code = main(
        ["provision", "dev-05", "--port", "/dev/ttyUSB0", "--kubeconfig", str(kubeconfig), "--context", "lab",
         "--workdir", str(tmp_path / "wd"), "--dry-run"]
    )  # fmt: skip
    assert code == 2
    assert "lab" in capsys.readouterr().err
