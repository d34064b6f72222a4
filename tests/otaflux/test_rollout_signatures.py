"""Rollout plan decisions and the signature policy, with the real registry."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from weatherfleet.oci import signatures
from weatherfleet.rollout import FleetPlan, RolloutPlan, open_share, share_of
from weatherfleet.services.process import wait_until

DEVICES = [f"node-{i:02d}" for i in range(1, 31)]


def _version(server, device: str) -> str:
    status, _, body = server.get(f"/version?device={device}")
    assert status == 200, (device, status, body)
    return body.decode().split("\n")[0]


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@pytest.fixture
def fleet_repos(prefix, push_image) -> str:
    """Every device repository holds 1.0.0, 1.1.0 and 2.0.0 (the highest tag: served without a plan only)."""
    for device in DEVICES:
        for tag in ("1.0.0", "1.1.0", "2.0.0"):
            push_image(f"{prefix}{device}", tag, f"{device}@{tag}".encode())
    return prefix


def _status(server, device: str) -> int:
    return server.get(f"/version?device={device}")[0]


def test_plan_file_decisions_follow_changes_without_restart(
    registry, fleet_repos, tmp_path, otaflux_factory
) -> None:
    plan_path = tmp_path / "plan.json"
    rid = "weatherfleet/garden/r1@1.1.0"
    members = DEVICES[:20]
    fleet = FleetPlan(rolloutId=rid, stable="1.0.0", candidate="1.1.0", percent=0, devices=members)
    _write_atomically(plan_path, RolloutPlan(fleets={"weatherfleet/garden": fleet}).to_json())
    server = otaflux_factory(
        {
            "REGISTRY_URL": registry.url,
            "REPOSITORY_PREFIX": fleet_repos,
            "ROLLOUT_PLAN_PATH": str(plan_path),
            "REFRESH_INTERVAL": "3600",
        }
    )
    assert {_version(server, d) for d in members} == {"1.0.0"}  # an empty share: nobody gets 1.1.0
    # Not in any fleet of the plan: no update (404), never the highest tag.
    assert {_status(server, d) for d in DEVICES[20:]} == {404}
    _, _, body = server.get(f"/version?device={DEVICES[25]}")
    assert b"No update" in body and b"no fleet of the rollout plan lists it" in body

    # Open the candidate to exactly half the fleet, pin one device, exclude another.
    inside = sorted(share_of(rid, members, 50))
    assert len(inside) == 10
    pinned, excluded = members[0] if members[0] not in inside else members[1], inside[-1]
    wave = fleet.model_copy(
        update={
            "percent": 50,
            "threshold": open_share(rid, members, 50),
            "pins": {pinned: "2.0.0"},
            "exclusions": [excluded],
        }
    )
    _write_atomically(plan_path, RolloutPlan(fleets={"weatherfleet/garden": wave}).to_json())
    expected = {d: wave.version_for(d) for d in members}
    wait_until(
        lambda: all(_version(server, d) == v for d, v in expected.items()), 20, "the new wave to be served"
    )
    assert expected[pinned] == "2.0.0" and expected[excluded] == "1.0.0"
    assert {d for d, v in expected.items() if v == "1.1.0"} == set(inside) - {excluded}

    # A broken edit keeps the last good plan; halting closes the candidate for everyone.
    _write_atomically(plan_path, "{ not json")
    wait_until(
        lambda: "rollout plan" in server.log_text() and "invalid" in server.log_text(), 20, "the error line"
    )
    assert all(_version(server, d) == v for d, v in expected.items())
    halted = wave.model_copy(update={"halted": True})
    _write_atomically(plan_path, RolloutPlan(fleets={"weatherfleet/garden": halted}).to_json())
    wait_until(lambda: _version(server, inside[0]) != "1.1.0", 20, "the halt to close the candidate")
    assert {_version(server, d) for d in members if d != pinned} == {"1.0.0"}

    # Paused (hold): who is inside the share is offered nothing new; outside, the stable version.
    held = wave.model_copy(update={"hold": True})
    _write_atomically(plan_path, RolloutPlan(fleets={"weatherfleet/garden": held}).to_json())
    wait_until(lambda: _status(server, inside[0]) == 404, 20, "the pause to hold the share")
    assert {_status(server, d) for d in inside if d != excluded} == {404}
    assert {_version(server, d) for d in set(members) - set(inside) - {pinned}} == {"1.0.0"}

    # The plan file goes away: no device is offered anything until it is back.
    plan_path.unlink()
    wait_until(lambda: _status(server, members[-1]) == 404, 20, "a missing plan to offer nothing")
    assert {_status(server, d) for d in members} == {404}


def test_plan_directory_like_a_mounted_configmap(registry, fleet_repos, tmp_path, otaflux_factory) -> None:
    mount = tmp_path / "plan"
    (mount / "..v1").mkdir(parents=True)
    a = FleetPlan(stable="1.0.0", devices=DEVICES[:5])
    b = FleetPlan(stable="1.1.0", devices=DEVICES[5:10])
    (mount / "..v1" / "weatherfleet.a.json").write_text(a.model_dump_json(by_alias=True))
    (mount / "..v1" / "weatherfleet.b.json").write_text(b.model_dump_json(by_alias=True))
    os.symlink("..v1", mount / "..data")
    for name in ("weatherfleet.a.json", "weatherfleet.b.json"):
        os.symlink(f"..data/{name}", mount / name)
    server = otaflux_factory(
        {
            "REGISTRY_URL": registry.url,
            "REPOSITORY_PREFIX": fleet_repos,
            "ROLLOUT_PLAN_PATH": str(mount),
        }
    )
    assert {_version(server, d) for d in DEVICES[:5]} == {"1.0.0"}
    assert {_version(server, d) for d in DEVICES[5:10]} == {"1.1.0"}
    assert _status(server, DEVICES[10]) == 404  # in neither fleet: no update

    # kubelet's update: a new timestamped directory, then an atomic swap of the ..data symlink.
    (mount / "..v2").mkdir()
    (mount / "..v2" / "weatherfleet.a.json").write_text(
        a.model_copy(update={"stable": "2.0.0"}).model_dump_json(by_alias=True)
    )
    (mount / "..v2" / "weatherfleet.b.json").write_text(
        json.dumps({"stable": "1.1.0", "devices": DEVICES[5:10]})
    )
    os.symlink("..v2", mount / "..data_tmp")
    os.replace(mount / "..data_tmp", mount / "..data")
    wait_until(lambda: _version(server, DEVICES[0]) == "2.0.0", 20, "the swapped ConfigMap to be read")
    assert {_version(server, d) for d in DEVICES[:5]} == {"2.0.0"}
    assert {_version(server, d) for d in DEVICES[5:10]} == {"1.1.0"}


def _public_pem(key) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def test_only_correctly_signed_firmware_is_served(
    registry, store, prefix, push_image, tmp_path, otaflux_factory
) -> None:
    signer, ecdsa_signer, stranger = (
        ed25519.Ed25519PrivateKey.generate(),
        ec.generate_private_key(ec.SECP256R1()),
        ed25519.Ed25519PrivateKey.generate(),
    )
    keys = []
    for name, key in (("ed.pub", signer), ("ec.pub", ecdsa_signer)):
        (tmp_path / name).write_bytes(_public_pem(key))
        keys.append(str(tmp_path / name))

    good = push_image(f"{prefix}dev-09", "1.0.0", b"good firmware")
    signatures.push_signature(store, f"{prefix}dev-09", signatures.sign(signer, good.digest))
    ecdsa = push_image(f"{prefix}dev-10", "1.0.0", b"ecdsa-signed firmware")
    signatures.push_signature(store, f"{prefix}dev-10", signatures.sign(ecdsa_signer, ecdsa.digest))
    push_image(f"{prefix}dev-11", "1.0.0", b"never signed")
    foreign = push_image(f"{prefix}dev-12", "1.0.0", b"signed by someone else")
    signatures.push_signature(store, f"{prefix}dev-12", signatures.sign(stranger, foreign.digest))
    # Tampered: a correctly signed release whose tag is then re-pushed with other bytes; the stored
    # signature still covers the old digest.
    original = push_image(f"{prefix}dev-13", "1.0.0", b"the reviewed firmware")
    signatures.push_signature(store, f"{prefix}dev-13", signatures.sign(signer, original.digest))
    tampered = push_image(f"{prefix}dev-13", "1.0.0", b"the tampered firmware")
    forged = signatures.sign(signer, original.digest).model_copy(update={"manifest_digest": tampered.digest})
    signatures.push_signature(store, f"{prefix}dev-13", forged)  # a signature moved onto the new digest

    server = otaflux_factory(
        {
            "REGISTRY_URL": registry.url,
            "REPOSITORY_PREFIX": prefix,
            "SIGNATURE_PUBLIC_KEYS": ",".join(keys),
        }
    )
    assert server.get("/firmware?device=dev-09")[2] == b"good firmware"
    assert server.get("/firmware?device=dev-10")[2] == b"ecdsa-signed firmware"
    manifest = json.loads(server.get("/v1/manifest?device=dev-09")[2])
    assert manifest["signature"]["keyId"] == signatures.key_id(signer.public_key())
    assert manifest["signature"]["algorithm"] == "ed25519"

    for device, reason in (
        ("dev-11", "no signature"),
        ("dev-12", "unknown key"),
        ("dev-13", "does not verify"),
    ):
        for path in ("/version", "/firmware", "/v1/manifest"):
            status, _, body = server.get(f"{path}?device={device}")
            assert status == 502, (device, path, status)
            assert reason.encode() in body and b"refused" in body
    log = server.log_text()
    assert "refusing firmware for dev-11" in log and "refusing firmware for dev-13" in log
    assert server.metric("otaflux_signature_failures_total") == 3
    assert len(list((server.log.parent / "cache").rglob("image"))) == 2  # refused ones never downloaded


def test_bad_configuration_is_one_clear_line(tmp_path) -> None:
    import subprocess
    import sys

    cases = {
        "REGISTRY_URL (--registry-url) is required": {},
        "REGISTRY_INSECURE": {"REGISTRY_URL": "http://x", "REGISTRY_INSECURE": "maybe"},
        "SIGNATURE_PUBLIC_KEYS": {
            "REGISTRY_URL": "http://x",
            "SIGNATURE_PUBLIC_KEYS": str(tmp_path / "none.pem"),
        },
        "MQTT_URL": {"REGISTRY_URL": "http://x", "MQTT_URL": "http://broker"},
        "CACHE_SIZE": {"REGISTRY_URL": "http://x", "CACHE_SIZE": "-3"},
        "MQTT_CLIENT_CERT_PATH and MQTT_CLIENT_KEY_PATH": {
            "REGISTRY_URL": "http://x",
            "MQTT_URL": "mqtts://b",
            "MQTT_CLIENT_CERT_PATH": __file__,
        },
    }
    (tmp_path / "bad.pem").write_text("not a key")
    cases["bad.pem"] = {"REGISTRY_URL": "http://x", "SIGNATURE_PUBLIC_KEYS": str(tmp_path / "bad.pem")}
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("REGISTRY_", "MQTT_", "SIGNATURE_"))}
    for needle, env in cases.items():
        result = subprocess.run(
            [sys.executable, "-m", "otaflux"],
            env={**clean, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2, (needle, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], (needle, result.stderr)


def test_a_release_re_tagged_with_another_version_is_refused(
    registry, store, prefix, push_image, tmp_path, otaflux_factory
) -> None:
    """A validly signed 1.0.0 pushed again under the tag 9.9.9: the version OtaFlux announces comes from the
    signed manifest, so it refuses to serve it as 9.9.9, with the signature policy on or off."""
    signer = ed25519.Ed25519PrivateKey.generate()
    (tmp_path / "ed.pub").write_bytes(_public_pem(signer))
    repository = f"{prefix}dev-20"
    old = push_image(repository, "1.0.0", b"the old firmware")
    signatures.push_signature(store, repository, signatures.sign(signer, old.digest))
    raw = store.fetch_manifest(repository, "1.0.0").raw
    assert store.push_manifest(repository, "9.9.9", raw) == old.digest  # same bytes, a new tag
    for env in ({"SIGNATURE_PUBLIC_KEYS": str(tmp_path / "ed.pub")}, {}):
        server = otaflux_factory({"REGISTRY_URL": registry.url, "REPOSITORY_PREFIX": prefix, **env})
        for path in ("/version", "/firmware", "/v1/manifest"):
            status, _, body = server.get(f"{path}?device=dev-20")
            assert status == 502, (env, path, status, body)
            assert b"signed as version 1.0.0" in body and b"re-tagged" in body
        assert "refusing firmware for dev-20" in server.log_text()


def test_the_manifest_answer_carries_the_signed_security_version(
    registry, store, prefix, tmp_path, otaflux_factory
) -> None:
    binary = tmp_path / "fw.bin"
    binary.write_bytes(b"firmware with a security fix")
    store.push_image(f"{prefix}dev-21", "2.0.0", binary, version="2.0.0", board="esp32", security_version=3)
    server = otaflux_factory({"REGISTRY_URL": registry.url, "REPOSITORY_PREFIX": prefix})
    answer = json.loads(server.get("/v1/manifest?device=dev-21")[2])
    signed = json.loads(answer["manifest"])["annotations"]
    assert signed["io.weatherfleet.firmware.security-version"] == "3" == str(answer["securityVersion"])
    assert signed["org.opencontainers.image.version"] == "2.0.0" == answer["version"]


def test_the_signed_downgrade_authorisation_reaches_the_devices_sent_back(
    registry, fleet_repos, tmp_path, otaflux_factory
) -> None:
    from weatherfleet.rollout import authorisation

    key = ed25519.Ed25519PrivateKey.generate()
    rid = "weatherfleet/garden/r2@2.0.0"
    members = DEVICES[:6]
    signed = authorisation.sign(key, rid, ["2.0.0"], "1.1.0")
    halted = FleetPlan(
        rolloutId=rid,
        stable="1.1.0",
        candidate="2.0.0",
        threshold=open_share(rid, members, 50),
        halted=True,
        pins={members[0]: "1.0.0"},
        devices=members,
        authorisation=signed,
    )
    plan_path = tmp_path / "plan.json"
    _write_atomically(plan_path, RolloutPlan(fleets={"weatherfleet/garden": halted}).to_json())
    server = otaflux_factory(
        {"REGISTRY_URL": registry.url, "REPOSITORY_PREFIX": fleet_repos, "ROLLOUT_PLAN_PATH": str(plan_path)}
    )
    for device in members[1:]:
        answer = json.loads(server.get(f"/v1/manifest?device={device}")[2])
        assert answer["version"] == "1.1.0"
        assert answer["authorisation"] == signed.model_dump(by_alias=True)
        assert authorisation.verify(
            [key.public_key()], authorisation.Authorisation.model_validate(answer["authorisation"])
        )
    pinned = json.loads(server.get(f"/v1/manifest?device={members[0]}")[2])
    assert pinned["version"] == "1.0.0" and "authorisation" not in pinned  # not what it authorises


def test_every_release_manifest_carries_its_security_version_under_the_signature(tmp_path) -> None:
    from weatherfleet import oci
    from weatherfleet.oci import contract

    bundle = contract.BundleManifest(version="1.2.0", board="esp32", features=["bme280"], files=[])
    raw = oci.bundle_manifest_bytes(bundle.model_copy(update={"security_version": 2}))
    annotations = json.loads(raw)["annotations"]
    assert annotations[contract.ANNOTATION_SECURITY_VERSION] == "2"
    assert (
        json.loads(oci.bundle_manifest_bytes(bundle))["annotations"][contract.ANNOTATION_SECURITY_VERSION]
        == "0"
    )
    binary = tmp_path / "fw.bin"
    binary.write_bytes(b"image")
    image = json.loads(oci.image_manifest_bytes(binary, version="1.2.0", security_version=5))
    assert image["annotations"][contract.ANNOTATION_SECURITY_VERSION] == "5"
    # the digest (what is signed) changes with it: the counter cannot be edited without breaking the signature
    assert oci.image_manifest_bytes(binary, version="1.2.0", security_version=4) != oci.image_manifest_bytes(
        binary, version="1.2.0", security_version=5
    )
