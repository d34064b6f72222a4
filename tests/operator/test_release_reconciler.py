"""The pure FirmwareRelease reconciler: per-device releases with required signatures verify per device,
report how many devices resolved/verified/missing, and list the devices that cannot be offered it; the
fleet excludes exactly those."""

from __future__ import annotations

from datetime import UTC, datetime

from weatherfleet.models import FirmwareRelease, SensorFleet, WeatherSensor
from weatherfleet.reconcilers.fleet import FleetObservation, reconcile_fleet
from weatherfleet.reconcilers.release import SHARED, ArtifactCheck, ReleaseObservation, reconcile_release

NOW = datetime(2026, 1, 1, tzinfo=UTC)
DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64


def release(
    repository: str = "registry.example:5000/firmware/{deviceId}", required: bool = True
) -> FirmwareRelease:
    signature = {"required": required}
    if required:
        signature["publicKeyRef"] = {"name": "firmware-signing-key", "key": "ed25519.pub"}
    return FirmwareRelease.model_validate(
        {
            "metadata": {"name": "firmware-1-1-0", "namespace": "weatherfleet", "generation": 1},
            "spec": {
                "version": "1.1.0",
                "artifact": {"repository": repository, "tag": "1.1.0", "kind": "bundle"},
                "signature": signature,
            },
        }
    )


def good(device: str, digest: str = DIGEST_A) -> ArtifactCheck:
    return ArtifactCheck(
        repository=f"registry.example:5000/firmware/{device}",
        digest=digest,
        kind="bundle",
        version="1.1.0",
        size=1000,
        crc32=7,
        sha256="c" * 64,
        signature=True,
        signature_reason="Verified",
        signature_message="ed25519 signature by key k1",
    )


def conditions(status) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in status.conditions}


def test_every_device_verified_is_ready_with_counts():
    devices = ["a-01", "b-01", "c-01"]
    result = reconcile_release(
        release(),
        ReleaseObservation(now=NOW, devices=devices, artifacts={d: good(d) for d in devices}),
    )
    status = result.status
    assert conditions(status) == {
        "Resolved": ("True", "Resolved"),
        "SignatureVerified": ("True", "Verified"),
        "Ready": ("True", "Ready"),
    }
    assert status.signature_verified is True
    assert status.devices.model_dump() == {
        "total": 3, "resolved": 3, "verified": 3, "missing": 0, "invalid": 0, "digests": 1,
    }  # fmt: skip
    assert status.digest == DIGEST_A  # one digest for all: reported as the release's
    assert status.unavailable_devices == []
    assert result.usable == devices


def test_missing_and_badly_signed_devices_are_listed_and_the_rest_stays_usable():
    devices = ["a-01", "b-01", "c-01", "d-01", "e-01"]
    artifacts = {
        "a-01": good("a-01"),
        "b-01": good("b-01", DIGEST_B),
        "c-01": good("c-01").model_copy(
            update={"signature": False, "signature_reason": "SignatureInvalid", "signature_message": "bad"}
        ),
        "d-01": ArtifactCheck(
            repository="r/d-01", problem="NotFound", problem_message="r/d-01:1.1.0 not found"
        ),
        "e-01": good("e-01").model_copy(update={"version": "1.0.9"}),
    }
    result = reconcile_release(release(), ReleaseObservation(now=NOW, devices=devices, artifacts=artifacts))
    status = result.status
    assert [(u.device_id, u.reason) for u in status.unavailable_devices] == [
        ("c-01", "SignatureInvalid"),
        ("d-01", "NotFound"),
        ("e-01", "VersionMismatch"),
    ]
    assert status.devices.model_dump() == {
        "total": 5, "resolved": 4, "verified": 3, "missing": 1, "invalid": 2, "digests": 2,
    }  # fmt: skip
    assert conditions(status)["Ready"] == ("True", "PartiallyAvailable")
    assert conditions(status)["SignatureVerified"] == ("True", "PartiallyVerified")
    assert status.digest is None  # two digests: none is "the" digest
    assert status.signature_verified is True
    ready = next(c for c in status.conditions if c.type == "Ready")
    assert "2 of 5 devices" in ready.message and "d-01 (NotFound)" in ready.message
    assert result.usable == ["a-01", "b-01"]
    assert any(e.type == "Warning" and e.reason == "PartiallyAvailable" for e in result.events)


def test_no_device_usable_is_not_ready_with_the_registry_s_reason():
    devices = ["a-01", "b-01"]
    artifacts = {
        d: ArtifactCheck(repository=f"r/{d}", problem="NotFound", problem_message="gone") for d in devices
    }
    status = reconcile_release(
        release(), ReleaseObservation(now=NOW, devices=devices, artifacts=artifacts)
    ).status
    assert conditions(status)["Ready"] == ("False", "NotFound")
    assert conditions(status)["Resolved"] == ("False", "NotFound")
    assert status.signature_verified is None
    assert status.devices.missing == 2


def test_unsigned_per_device_artifacts_when_signatures_are_required():
    devices = ["a-01"]
    check = good("a-01").model_copy(
        update={
            "signature": False,
            "signature_reason": "SignatureMissing",
            "signature_message": "no signature",
        }
    )
    status = reconcile_release(
        release(), ReleaseObservation(now=NOW, devices=devices, artifacts={"a-01": check})
    ).status
    assert conditions(status)["SignatureVerified"] == ("False", "SignatureMissing")
    assert conditions(status)["Ready"] == ("False", "SignatureMissing")
    assert status.signature_verified is False


def test_shared_repository_keeps_its_single_digest_status():
    rel = release("registry.example:5000/firmware/all")
    status = reconcile_release(rel, ReleaseObservation(now=NOW, artifacts={SHARED: good("all")})).status
    assert conditions(status) == {
        "Resolved": ("True", "Resolved"),
        "SignatureVerified": ("True", "Verified"),
        "Ready": ("True", "Ready"),
    }
    assert status.digest == DIGEST_A and status.devices is None


def test_fleet_excludes_unavailable_devices_and_says_why():
    devices = ["a-01", "b-01", "c-01"]
    artifacts = {
        "a-01": good("a-01"),
        "b-01": good("b-01"),
        "c-01": ArtifactCheck(repository="r/c-01", problem="NotFound", problem_message="gone"),
    }
    rel = release()
    rel.status = reconcile_release(
        rel, ReleaseObservation(now=NOW, devices=devices, artifacts=artifacts)
    ).status
    fleet = SensorFleet.model_validate(
        {
            "metadata": {"name": "garden", "namespace": "weatherfleet", "uid": "u1", "generation": 1},
            "spec": {
                "selector": {"matchLabels": {"weatherfleet.io/fleet": "garden"}},
                "rollout": {"release": "firmware-1-1-0", "waves": [{"percent": 100, "bakeTime": "1m"}]},
            },
        }
    )
    sensors = [
        WeatherSensor.model_validate(
            {
                "metadata": {
                    "name": d,
                    "namespace": "weatherfleet",
                    "labels": {"weatherfleet.io/fleet": "garden"},
                },
                "spec": {"deviceId": d, "location": "x", "sensors": [{"type": "bme280"}]},
            }
        )
        for d in devices
    ]
    result = reconcile_fleet(
        fleet, FleetObservation(now=NOW, sensors=sensors, releases={"firmware-1-1-0": rel})
    )
    assert "c-01" in result.plan.exclusions and "a-01" not in result.plan.exclusions
    available = next(c for c in result.status.conditions if c.type == "ReleaseAvailable")
    assert available.status == "True" and "c-01" in available.message and "NotFound" in available.message
    assert result.plan.version_for("c-01") != "1.1.0"
