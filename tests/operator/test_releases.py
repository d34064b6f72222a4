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
from weatherfleet.reconcilers.plan import plan_from_configmap

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


def test_per_device_release_verifies_each_device_and_excludes_the_unavailable(
    cluster, namespace, start_operator, registry, tmp_path, monkeypatch
):
    """`{deviceId}` repositories with required signatures: each device's artifact is resolved and its
    signature checked (identical builds once per digest); the release reports the counts, lists the
    device whose artifact is missing and the one whose signature is forged, the fleet rolls out to the
    rest and excludes those two with the reason; a late push makes the missing one available."""
    ns = namespace
    store = oci.RegistryStore(registry.address, insecure=True)
    trusted, other = ed25519.Ed25519PrivateKey.generate(), ed25519.Ed25519PrivateKey.generate()
    same, odd = tmp_path / "same.bin", tmp_path / "odd.bin"
    same.write_bytes(os.urandom(20_000))
    odd.write_bytes(os.urandom(20_000))
    repo = f"{ns}/fw"

    def push(device: str, binary, key) -> None:
        result = store.push_image(
            f"{repo}/{device}", "1.2.0", binary, version="1.2.0", board="esp32-devkit-v1"
        )
        signatures.push_signature(store, f"{repo}/{device}", signatures.sign(key, result.digest))

    push("dev-a", same, trusted)
    push("dev-b", same, trusted)  # the same content: checked once, by digest
    push("dev-c", odd, trusted)
    push("dev-x", same, other)  # forged
    # dev-m: nothing pushed yet
    cluster.core.create_namespaced_config_map(
        ns, {"metadata": {"name": "firmware-key"}, "data": {"ed25519.pem": pem(trusted)}}
    )
    monkeypatch.setenv("WEATHERFLEET_REGISTRY_INSECURE_HOSTS", registry.address)
    monkeypatch.setenv("WEATHERFLEET_RELEASE_RESYNC_SECONDS", "2")
    start_operator()
    cluster.broker_deployment(ns)
    for device in ("dev-a", "dev-b", "dev-c", "dev-x", "dev-m"):
        cluster.create(
            "WeatherSensor",
            ns,
            device,
            {"deviceId": device, "location": "lab", "sensors": [{"type": "bme280"}]},
            labels={"fleet": "lab"},
        )
    make_release(cluster, ns, "per-device", f"{registry.address}/{repo}/{{deviceId}}")
    cluster.create(
        "SensorFleet",
        ns,
        "lab",
        {
            "selector": {"matchLabels": {"fleet": "lab"}},
            "rollout": {"release": "per-device", "waves": [{"percent": 100, "bakeTime": "1h"}]},
        },
    )

    def status():
        return (cluster.get("FirmwareRelease", ns, "per-device") or {}).get("status") or {}

    wait_for(lambda: (status().get("devices") or {}).get("total") == 5, 90, "per-device release checked")
    st = status()
    assert st["devices"] == {
        "total": 5,
        "resolved": 4,
        "verified": 3,
        "missing": 1,
        "invalid": 1,
        "digests": 2,
    }
    assert st["unavailableDevices"] == [
        {"deviceId": "dev-m", "reason": "NotFound"},
        {"deviceId": "dev-x", "reason": "SignatureInvalid"},
    ]
    assert st["signatureVerified"] is True
    ready = cluster.condition(cluster.get("FirmwareRelease", ns, "per-device"), "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "PartiallyAvailable")

    def fleet_condition():
        return cluster.condition(cluster.get("SensorFleet", ns, "lab"), "ReleaseAvailable")

    cond = wait_for(lambda: (c := fleet_condition()) and c["status"] == "True" and c, 60, "fleet rolls out")
    assert "dev-m" in cond["message"] and "dev-x" in cond["message"]

    def plan():  # the JSON in data, the members and exclusions in binaryData
        cm = cluster.configmap("weatherfleet", "weatherfleet-rollout-plan")
        if cm is None:
            return None
        entry = plan_from_configmap({"data": cm.data, "binaryData": cm.binary_data}, f"{ns}.lab.json")
        return entry.model_dump() if entry else None

    current = wait_for(
        lambda: (p := plan()) and p.get("candidate") == "1.2.0" and p, 60, "plan with the candidate"
    )
    assert {"dev-m", "dev-x"} <= set(current["exclusions"])
    assert not {"dev-a", "dev-b", "dev-c"} & set(current["exclusions"])

    # the missing artifact is pushed: on the next look the device is offered the release too
    push("dev-m", same, trusted)
    wait_for(lambda: (status().get("devices") or {}).get("missing") == 0, 90, "dev-m resolved after its push")
    assert [u["deviceId"] for u in status()["unavailableDevices"]] == ["dev-x"]
    wait_for(
        lambda: "dev-m" not in (plan() or {}).get("exclusions", ["dev-m"]), 60, "dev-m no longer excluded"
    )
