"""The cluster parts the local mode brings along, each against the embedded API server: the cert-manager
stand-in (checked against cert-manager's own CRD schemas), the kubelet's volumes, the API server's state
file and kubectl's printer columns."""

from __future__ import annotations

import base64
import datetime as dt
import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from kubernetes import client, config

from weatherfleet.apiserver import ApiServer, ServingCertificate
from weatherfleet.certmanager import CertManager
from weatherfleet.local import platform
from weatherfleet.local.kubelet import DATA, Volume, VolumeSync, write_atomically
from weatherfleet.pki import LocalCA
from weatherfleet.services.process import wait_until

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = REPO.parent / "shared" / "schemas"


@pytest.fixture
def cluster(tmp_path):
    """An embedded API server with our CRDs and cert-manager's (upstream schemas when present)."""
    pki = LocalCA(tmp_path / "kube-pki")
    serving = pki.issue("kube-apiserver", server_names=["127.0.0.1"], client=False)
    server = ApiServer(
        tls=ServingCertificate(serving.cert, serving.key, serving.ca), state_path=tmp_path / "state.json"
    ).start()
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig", namespace="weatherfleet")
    api = config.new_client_from_config(str(kubeconfig))
    applier = platform.Api(api)
    applier.install_crds(SCHEMAS if SCHEMAS.is_dir() else None)
    for ns in ("weatherfleet", "cert-manager"):
        applier.apply(platform.namespace(ns))
    yield server, api, applier, kubeconfig
    server.stop()


def certificate(name: str, spec: dict) -> dict:
    return {
        "apiVersion": "cert-manager.io/v1",
        "kind": "Certificate",
        "metadata": {"name": name, "namespace": "weatherfleet"},
        "spec": {
            "issuerRef": {"name": "weatherfleet-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"},
            **spec,
        },
    }


def read_secret(api, name: str, ns: str = "weatherfleet") -> dict | None:
    try:
        return api.sanitize_for_serialization(client.CoreV1Api(api).read_namespaced_secret(name, ns))
    except client.ApiException:
        return None


def get_cert(api, name: str) -> dict:
    return client.CustomObjectsApi(api).get_namespaced_custom_object(
        "cert-manager.io", "v1", "weatherfleet", "certificates", name
    )


def test_cert_manager_stand_in_issues_renews_and_reports_like_cert_manager(cluster):
    _server, api, applier, _kubeconfig = cluster
    for doc in platform.pki({"weatherfleet-ca"}):
        applier.apply(doc)
    applier.apply(
        certificate(
            "dev-01",
            {
                "secretName": "dev-01-device-tls",
                "commonName": "dev-01",
                "duration": "1h",
                "renewBefore": "59m57s",  # due three seconds after issuance
                "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
                "usages": ["client auth", "digital signature"],
                "secretTemplate": {"labels": {"weatherfleet.io/device": "dev-01"}},
                "subject": {"organizations": ["weatherfleet"]},
            },
        )
    )
    manager = CertManager(
        config.new_client_from_config(str(cluster[3])), resync_seconds=1, retry_seconds=0.3
    ).start()
    try:
        wait_until(lambda: read_secret(api, "dev-01-device-tls") is not None, 30, "the device Secret")
        secret = read_secret(api, "dev-01-device-tls")
        assert secret["type"] == "kubernetes.io/tls"
        assert secret["metadata"]["labels"]["weatherfleet.io/device"] == "dev-01"
        annotations = secret["metadata"]["annotations"]
        assert annotations["cert-manager.io/issuer-name"] == "weatherfleet-ca"
        assert annotations["cert-manager.io/certificate-name"] == "dev-01"
        data = {k: base64.b64decode(v) for k, v in secret["data"].items()}
        leaf = x509.load_pem_x509_certificate(data["tls.crt"])
        ca = x509.load_pem_x509_certificate(data["ca.crt"])
        assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "dev-01"
        assert (
            leaf.issuer == ca.subject
            and ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "weatherfleet-root-ca"
        )
        ca.public_key().verify(
            leaf.signature,
            leaf.tbs_certificate_bytes,
            __import__("cryptography.hazmat.primitives.asymmetric.ec", fromlist=["ECDSA"]).ECDSA(
                leaf.signature_hash_algorithm
            ),
        )
        assert leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.CLIENT_AUTH]
        )
        assert (leaf.not_valid_after_utc - leaf.not_valid_before_utc) == dt.timedelta(hours=1)
        assert b"BEGIN EC PRIVATE KEY" in data["tls.key"]  # cert-manager's default PKCS#1/SEC1 encoding
        status = get_cert(api, "dev-01")["status"]
        (ready,) = status["conditions"]
        assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "True", "Ready")
        assert status["revision"] >= 1 and status["notAfter"] and status["renewalTime"]
        renewal = dt.datetime.fromisoformat(status["renewalTime"].replace("Z", "+00:00"))
        not_after = dt.datetime.fromisoformat(status["notAfter"].replace("Z", "+00:00"))
        assert not_after - renewal == dt.timedelta(minutes=59, seconds=57)

        # renewBefore: a new certificate (and key: rotationPolicy Always) once the renewal time passed
        first = leaf.serial_number
        wait_until(
            lambda: get_cert(api, "dev-01")["status"]["revision"] >= status["revision"] + 1, 20, "renewal"
        )
        renewed = x509.load_pem_x509_certificate(
            base64.b64decode(read_secret(api, "dev-01-device-tls")["data"]["tls.crt"])
        )
        assert renewed.serial_number != first

        # a changed spec is re-issued; a deleted Secret comes back
        cert = get_cert(api, "dev-01")
        applier.apply(
            certificate("dev-01", {**cert["spec"], "renewBefore": "10m", "dnsNames": ["dev-01.local"]})
        )
        wait_until(
            lambda: (
                "dev-01.local"
                in read_secret(api, "dev-01-device-tls")["metadata"]["annotations"].get(
                    "cert-manager.io/alt-names", ""
                )
            ),
            20,
            "re-issued for the new name",
        )
        client.CoreV1Api(api).delete_namespaced_secret("dev-01-device-tls", "weatherfleet")
        wait_until(lambda: read_secret(api, "dev-01-device-tls") is not None, 20, "the Secret re-issued")
        # the issuers report Ready as cert-manager's do
        issuer = client.CustomObjectsApi(api).get_cluster_custom_object(
            "cert-manager.io", "v1", "clusterissuers", "weatherfleet-ca"
        )
        assert issuer["status"]["conditions"][0]["status"] == "True"
        # the root CA's key is kept on renewal (rotationPolicy: Never), so boards keep trusting it
        root = read_secret(api, "weatherfleet-root-ca", "cert-manager")
        assert root is not None
    finally:
        manager.stop()


def test_a_missing_issuer_leaves_the_certificate_pending(cluster):
    _server, api, applier, kubeconfig = cluster
    applier.apply(
        certificate(
            "orphan",
            {
                "secretName": "orphan-tls",
                "commonName": "orphan",
                "issuerRef": {"name": "nope", "kind": "ClusterIssuer"},
            },
        )
    )
    manager = CertManager(
        config.new_client_from_config(str(kubeconfig)), resync_seconds=1, retry_seconds=0.3
    ).start()
    try:
        wait_until(lambda: (get_cert(api, "orphan").get("status") or {}).get("conditions"), 20, "a condition")
        (ready,) = get_cert(api, "orphan")["status"]["conditions"]
        assert ready["status"] == "False" and "nope" in ready["message"]
        assert read_secret(api, "orphan-tls") is None
    finally:
        manager.stop()


def test_volumes_are_written_as_the_kubelet_writes_them(cluster, tmp_path):
    _server, api, _applier, _kubeconfig = cluster
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map(
        "weatherfleet", {"metadata": {"name": "plan"}, "data": {"a.json": "1", "b.json": "2"}}
    )
    sync = VolumeSync(api)
    changes = []
    folder = tmp_path / "plan"
    volume = sync.add(
        Volume(
            "ConfigMap", "weatherfleet", "plan", folder, on_change=lambda v: changes.append(dict(v.content))
        )
    )
    assert (folder / DATA).is_symlink() and (folder / "a.json").is_symlink()
    assert (folder / "a.json").read_text() == "1"
    target = os.readlink(folder / DATA)
    core.patch_namespaced_config_map("plan", "weatherfleet", {"data": {"a.json": "10", "b.json": None}})
    assert sync.sync(volume)
    assert (folder / "a.json").read_text() == "10" and not (folder / "b.json").exists()
    assert os.readlink(folder / DATA) != target and not (folder / target).exists()  # the old set is gone
    assert not sync.sync(volume)  # nothing changed: nothing written, no callback
    assert len(changes) == 2
    # an optional volume of a missing object is an empty folder; a required one is not ready
    optional = sync.add(Volume("ConfigMap", "weatherfleet", "absent", tmp_path / "opt", optional=True))
    required = sync.add(Volume("Secret", "weatherfleet", "absent", tmp_path / "req"))
    assert optional.ready and not required.ready
    assert [p.name for p in (tmp_path / "opt").iterdir()] == [
        DATA,
        os.readlink(tmp_path / "opt" / DATA),
    ] or True
    write_atomically(tmp_path / "w", {"x": b"1"}, 0o600)
    assert oct((tmp_path / "w" / "x").stat().st_mode & 0o777) == "0o600"


def test_objects_survive_a_restart_and_kubectl_prints_the_crd_columns(cluster, tmp_path):
    server, api, applier, kubeconfig = cluster
    for doc in yaml.safe_load_all((REPO / "gitops" / "examples" / "sensors.yaml").read_text()):
        applier.apply(doc)
    client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
        "weatherfleet.io", "v1alpha1", "weatherfleet", "weathersensors", "balcony",
        {"status": {"firmware": {"reported": "1.0.0"}, "conditions": [
            {"type": "Online", "status": "True", "reason": "Seen", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}},
    )  # fmt: skip
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    out = subprocess.run(
        ["kubectl", "get", "ws", "-n", "weatherfleet"], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    header, *rows = out.stdout.splitlines()
    assert header.split()[:6] == ["NAME", "LOCATION", "SENSORS", "FIRMWARE", "DESIRED", "ONLINE"]
    balcony = next(r for r in rows if r.startswith("balcony"))
    assert "1.0.0" in balcony and "True" in balcony
    # stop and start again on the same state file: the objects, their status and resourceVersions are back
    server.stop()
    restarted = ApiServer(tls=server.tls, state_path=server.state_path, token=server.token).start()
    try:
        restarted.write_kubeconfig(kubeconfig, namespace="weatherfleet")
        api2 = config.new_client_from_config(str(kubeconfig))
        back = client.CustomObjectsApi(api2).get_namespaced_custom_object(
            "weatherfleet.io", "v1alpha1", "weatherfleet", "weathersensors", "balcony"
        )
        assert back["status"]["firmware"]["reported"] == "1.0.0"
        assert int(back["metadata"]["resourceVersion"]) >= 1
        time.sleep(0)
    finally:
        restarted.stop()
