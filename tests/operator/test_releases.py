"""FirmwareRelease resolution against a real distribution registry (Debian docker-registry) via ORAS:
digest, size, CRC32, sha256 and the signature, with clear conditions when any of it is wrong."""

from __future__ import annotations

import hashlib
import os
import zlib

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from helpers import wait_for

from weatherfleet import oci
from weatherfleet.oci import signatures

pytestmark = pytest.mark.slow


def pem(key: ed25519.Ed25519PrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture
def pushed(registry, tmp_path):
    """Three images in the registry: signed with the trusted key, signed with another key, unsigned."""
    store = oci.RegistryStore(registry.address, insecure=True)
    trusted, other = ed25519.Ed25519PrivateKey.generate(), ed25519.Ed25519PrivateKey.generate()
    binary = tmp_path / "firmware.bin"
    binary.write_bytes(os.urandom(50_000))
    results = {}
    for name, key in (("good", trusted), ("forged", other), ("unsigned", None)):
        result = store.push_image(f"fleet/{name}", "1.2.0", binary, version="1.2.0", board="esp32-devkit-v1")
        if key is not None:
            signatures.push_signature(store, f"fleet/{name}", signatures.sign(key, result.digest))
        results[name] = result
    return registry.address, pem(trusted), binary.read_bytes(), results


def make_release(cluster, ns: str, name: str, repository: str, tag: str = "1.2.0") -> None:
    cluster.create(
        "FirmwareRelease",
        ns,
        name,
        {
            "version": "1.2.0",
            "artifact": {"repository": repository, "tag": tag, "kind": "image"},
            "signature": {"required": True, "publicKeyRef": {"name": "firmware-key", "key": "ed25519.pem"}},
        },
    )


def test_releases_are_resolved_and_their_signatures_checked(
    cluster, namespace, start_operator, pushed, monkeypatch
):
    address, public_pem, payload, results = pushed
    ns = namespace
    cluster.core.create_namespaced_config_map(
        ns, {"metadata": {"name": "firmware-key"}, "data": {"ed25519.pem": public_pem}}
    )
    monkeypatch.setenv("WEATHERFLEET_REGISTRY_INSECURE_HOSTS", address)
    start_operator()
    make_release(cluster, ns, "good", f"{address}/fleet/good")
    make_release(cluster, ns, "forged", f"{address}/fleet/forged")
    make_release(cluster, ns, "unsigned", f"{address}/fleet/unsigned")
    make_release(cluster, ns, "missing-tag", f"{address}/fleet/good", tag="9.9.9")
    make_release(cluster, ns, "no-registry", "127.0.0.1:1/fleet/good")

    def settled(name: str, type_: str = "SignatureVerified"):
        cond = cluster.condition(cluster.get("FirmwareRelease", ns, name), type_)
        return cond if cond and cond["reason"] not in ("NotResolved",) else None

    good = wait_for(
        lambda: cluster.is_true("FirmwareRelease", ns, "good") and cluster.get("FirmwareRelease", ns, "good"),
        90,
        "good Ready",
    )
    status = good["status"]
    assert status["digest"] == results["good"].digest
    assert status["size"] == len(payload) and status["crc32"] == zlib.crc32(payload)
    assert status["sha256"] == hashlib.sha256(payload).hexdigest()
    assert status["signatureVerified"] is True

    forged = wait_for(lambda: settled("forged"), 90, "forged checked")
    assert forged["status"] == "False" and forged["reason"] == "SignatureInvalid"
    unsigned = wait_for(lambda: settled("unsigned"), 90, "unsigned checked")
    assert unsigned["status"] == "False" and unsigned["reason"] == "SignatureMissing"
    missing = wait_for(
        lambda: cluster.condition(cluster.get("FirmwareRelease", ns, "missing-tag"), "Resolved"),
        90,
        "missing-tag",
    )
    assert missing["status"] == "False" and missing["reason"] == "NotFound" and "9.9.9" in missing["message"]
    down = wait_for(
        lambda: cluster.condition(cluster.get("FirmwareRelease", ns, "no-registry"), "Resolved"),
        90,
        "no-registry",
    )
    assert down["status"] == "False" and down["reason"] == "RegistryUnreachable"
    for name in ("forged", "unsigned", "missing-tag"):
        assert not cluster.get("FirmwareRelease", ns, name)["status"].get("signatureVerified")
    reasons = {e.reason for e in cluster.events(ns, "forged")}
    assert "SignatureInvalid" in reasons

    # A fleet only rolls out a release whose required signature verified.
    cluster.broker_deployment(ns)
    cluster.create(
        "SensorFleet", ns, "f-good", {"selector": {"matchLabels": {"x": "y"}}, "rollout": {"release": "good"}}
    )
    cluster.create(
        "SensorFleet",
        ns,
        "f-forged",
        {"selector": {"matchLabels": {"x": "z"}}, "rollout": {"release": "forged"}},
    )
    wait_for(
        lambda: cluster.is_true("SensorFleet", ns, "f-good", "ReleaseAvailable"),
        60,
        "f-good ReleaseAvailable",
    )
    cond = wait_for(
        lambda: cluster.condition(cluster.get("SensorFleet", ns, "f-forged"), "ReleaseAvailable"),
        60,
        "f-forged condition",
    )
    assert cond["status"] == "False" and cond["reason"] == "SignatureNotVerified"
