"""Argo CD health checks (Lua, in gitops/argocd/config/health) for WeatherSensor, SensorFleet and
FirmwareRelease (one script under three keys) and for Applications, taken from the rendered `argocd-cm`
and run by a real Lua 5.4 interpreter with `obj` set the way Argo CD sets it."""

from __future__ import annotations

import ast
import functools
import json
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import gitops_build as gb
import gitops_schemas as gs
import jsonschema
import pytest

from weatherfleet.models import FirmwareRelease, SensorFleet, WeatherSensor

HEALTH = gb.GITOPS / "argocd" / "config" / "health"
HARNESS = Path(__file__).parent / "lua" / "harness.lua"


def lua() -> str:
    path = shutil.which("lua5.4")
    if path is None:
        pytest.fail("lua5.4 is not installed (apt-get install lua5.4; dev.sh installs it)")
    return path


def to_lua(value: object) -> str:
    """A Python value (JSON-like) as a Lua constructor; lists become sequences, as in Argo CD."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # JSON string escapes are valid Lua escapes for this content
    if isinstance(value, list):
        return "{" + ", ".join(to_lua(v) for v in value) + "}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"[{json.dumps(k)}] = {to_lua(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))


@functools.cache
def argocd_cm() -> dict[str, str]:
    (config,) = gb.build(gb.GITOPS / "argocd" / "config")
    return config["data"]


def health(group_kind: str, obj: dict, tmp_path: Path) -> tuple[str, str]:
    """What the script argocd-cm carries for `group_kind` answers for `obj`."""
    source = tmp_path / "object.lua"
    source.write_text("return " + to_lua(obj) + "\n")
    script = tmp_path / "health.lua"
    script.write_text(argocd_cm()[f"resource.customizations.health.{group_kind}"])
    result = subprocess.run(
        [lua(), str(HARNESS), str(source), str(script)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    status, message = result.stdout.split("\n", 1)
    return status, message.strip()


def cond(type_: str, status: str, reason: str, message: str = "") -> dict:
    return {"type": type_, "status": status, "reason": reason, "message": message}


def resource(kind: str, status: dict | None, generation: int = 1) -> dict:
    obj = {
        "apiVersion": "weatherfleet.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": "x", "namespace": "weatherfleet", "generation": generation},
        "spec": {},
    }
    if status is not None:
        obj["status"] = status
    return obj


# --- statuses as the operator's reconcilers write them ---------------------------------------------------

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DUMP = {"by_alias": True, "mode": "json", "exclude_none": True}


def _sensor(**spec) -> WeatherSensor:
    doc = {
        "metadata": {
            "name": "dev-01",
            "namespace": "weatherfleet",
            "generation": 1,
            "labels": {"fleet": "f"},
        },
        "spec": {"deviceId": "dev-01", "location": "roof", "sensors": [{"type": "bme280"}], **spec},
    }
    return WeatherSensor.model_validate(doc)


def _fleet(release: str | None = "fw", status: dict | None = None) -> SensorFleet:
    doc = {
        "metadata": {"name": "f", "namespace": "weatherfleet", "generation": 1},
        "spec": {"selector": {"matchLabels": {"fleet": "f"}}, "broker": {"kind": "mosquitto"},
                 "rollout": {"release": release} if release else {}},
    }  # fmt: skip
    if status is not None:
        doc["status"] = status
    return SensorFleet.model_validate(doc)


def _release(
    status: dict | None = None, repository: str = "registry.example:5000/firmware/dev-01"
) -> FirmwareRelease:
    doc = {
        "metadata": {"name": "fw", "namespace": "weatherfleet", "generation": 1},
        "spec": {"version": "1.1.0", "artifact": {"repository": repository, "tag": "1.1.0"},
                 "signature": {"required": True, "publicKeyRef": {"name": "keys", "key": "ed25519.pub"}}},
    }  # fmt: skip
    if status is not None:
        doc["status"] = status
    return FirmwareRelease.model_validate(doc)


def _sensor_status(**observed) -> dict:
    from weatherfleet.reconcilers.sensor import SensorObservation, reconcile_sensor

    fleet = observed.pop("fleet", _fleet())
    result = reconcile_sensor(_sensor(), fleet, SensorObservation(now=NOW, **observed), "pw")
    return result.status.model_dump(**DUMP)


def _fleet_status(release: FirmwareRelease | None = None, rollout: dict | None = None, **observed) -> dict:
    from weatherfleet.reconcilers.fleet import FleetObservation, reconcile_fleet

    fleet = _fleet(status={"rollout": rollout} if rollout else None)
    releases = {"fw": release} if release is not None else {}
    observation = FleetObservation(now=NOW, sensors=[_sensor()], releases=releases, **observed)
    return reconcile_fleet(fleet, observation).status.model_dump(**DUMP)


def _sensor_cases() -> dict:
    from weatherfleet.messages import ConfigReport

    seen = NOW - timedelta(minutes=1)
    return {
        "no status yet": (None, "Progressing"),
        "waiting for its certificate": (_sensor_status(certificate_ready=None), "Progressing"),
        "certificate not issued yet": (_sensor_status(certificate_ready=False), "Progressing"),
        "no fleet selects it (yet)": (_sensor_status(fleet=None), "Progressing"),
        "ready": (_sensor_status(certificate_ready=True, last_seen=seen), "Healthy"),
        "the board refused its desired configuration": (
            _sensor_status(
                certificate_ready=True,
                last_seen=seen,
                config=ConfigReport(generation=0, rejected=1, error="no driver for scd30"),
            ),
            "Degraded",
        ),
        "invalid spec (written by the controller)": (
            {
                "observedGeneration": 1,
                "conditions": [cond("Ready", "False", "InvalidSpec", "spec.sensors[1]")],
            },
            "Degraded",
        ),
        "ready but for an older generation": (_sensor_status(certificate_ready=True), "Progressing", 2),
    }


def _fleet_cases() -> dict:
    verified = _release({"signatureVerified": True, "conditions": [cond("Ready", "True", "Ready")]})
    halted = {"release": "fw", "version": "1.1.0", "phase": "Halted", "reason": "2 of 5 devices rolled back"}
    return {
        "no status yet": (None, "Progressing"),
        "release waiting for its signature check": (_fleet_status(_release()), "Progressing"),
        "per-device release, checked where served": (
            _fleet_status(
                _release(
                    {
                        "conditions": [
                            cond("Resolved", "Unknown", "PerDeviceRepository"),
                            cond("SignatureVerified", "Unknown", "PerDeviceRepository"),
                            cond("Ready", "False", "PerDeviceRepository"),
                        ]
                    },
                    repository="registry.example:5000/firmware/{deviceId}",
                )
            ),
            "Progressing",
        ),
        "release not created yet": (_fleet_status(None), "Progressing"),
        "ready, rollout progressing": (_fleet_status(verified), "Healthy"),
        "ready, no release selected": (_fleet_status_without_release(), "Healthy"),
        "rollout halted": (_fleet_status(verified, rollout=halted), "Degraded"),
        "broker configuration too large": ("too large", "Degraded"),
    }


def _fleet_status_without_release() -> dict:
    from weatherfleet.reconcilers.fleet import FleetObservation, reconcile_fleet

    fleet = _fleet(release=None)
    return reconcile_fleet(fleet, FleetObservation(now=NOW, sensors=[_sensor()])).status.model_dump(**DUMP)


# FirmwareRelease statuses: the operator resolves releases against a registry, so these are written out,
# with the condition reasons its release code sets, for a shared repository and for per-device ones (both
# how the operator reported them, PerDeviceRepository, and per device: NoDevices, PartiallyAvailable).
RELEASE_CASES = {
    "no status yet": (None, "Progressing"),
    "resolved and verified": (
        {
            "observedGeneration": 1,
            "digest": "sha256:" + "a" * 64,
            "signatureVerified": True,
            "conditions": [
                cond("Ready", "True", "Ready", "release can be rolled out"),
                cond("Resolved", "True", "Resolved"),
                cond("SignatureVerified", "True", "Verified"),
            ],
        },
        "Healthy",
    ),
    "registry unreachable": (
        {"observedGeneration": 1, "conditions": [
            cond("Ready", "False", "NotResolved", "registry unreachable"),
            cond("Resolved", "False", "RegistryUnreachable", "timeout"),
            cond("SignatureVerified", "Unknown", "NotResolved")]},
        "Progressing",
    ),
    "artifact not pushed yet": (
        {"observedGeneration": 1, "conditions": [
            cond("Ready", "False", "NotResolved", "artifact not resolved"),
            cond("Resolved", "False", "NotFound", "1.2.0 not in repo"),
            cond("SignatureVerified", "Unknown", "NotResolved")]},
        "Progressing",
    ),
    "registry refuses (credentials)": (
        {"observedGeneration": 1, "conditions": [
            cond("Ready", "False", "NotResolved", "registry refused the request"),
            cond("Resolved", "False", "RegistryRefused", "401"),
            cond("SignatureVerified", "Unknown", "NotResolved")]},
        "Degraded",
    ),
    "version mismatch": (
        {"observedGeneration": 1, "conditions": [
            cond("Ready", "False", "NotResolved", "version mismatch"),
            cond("Resolved", "False", "VersionMismatch", "annotated 1.0.9"),
            cond("SignatureVerified", "Unknown", "NotResolved")]},
        "Degraded",
    ),
    "signature fetch failed (registry error)": (
        {"observedGeneration": 1, "signatureVerified": False, "conditions": [
            cond("Ready", "False", "SignatureUnavailable", "503"),
            cond("Resolved", "True", "Resolved"),
            cond("SignatureVerified", "False", "SignatureUnavailable", "503")]},
        "Progressing",
    ),
    "bad signature": (
        {"observedGeneration": 1, "signatureVerified": False, "conditions": [
            cond("Ready", "False", "SignatureInvalid", "does not verify"),
            cond("Resolved", "True", "Resolved"),
            cond("SignatureVerified", "False", "SignatureInvalid", "does not verify")]},
        "Degraded",
    ),
    "unsigned artifact": (
        {"observedGeneration": 1, "signatureVerified": False, "conditions": [
            cond("Ready", "False", "SignatureMissing", "no signature"),
            cond("Resolved", "True", "Resolved"),
            cond("SignatureVerified", "False", "SignatureMissing", "no signature")]},
        "Degraded",
    ),
    "per-device repository, checked where served": (
        {"observedGeneration": 1, "conditions": [
            cond("Ready", "False", "PerDeviceRepository", "per-device artifacts are checked where they are served"),
            cond("Resolved", "Unknown", "PerDeviceRepository"),
            cond("SignatureVerified", "Unknown", "PerDeviceRepository")]},
        "Progressing",
    ),
    "per-device repository, no devices yet": (
        {"observedGeneration": 1, "conditions": [
            cond("Ready", "False", "NoDevices", "no WeatherSensor with OTA on channel stable here"),
            cond("Resolved", "Unknown", "NoDevices"),
            cond("SignatureVerified", "Unknown", "NoDevices")]},
        "Progressing",
    ),
    "per-device repository, one device's signature invalid, another's not required": (
        {"observedGeneration": 1, "signatureVerified": False, "conditions": [
            cond("Resolved", "True", "Resolved"),
            cond("SignatureVerified", "False", "SignatureInvalid", "no artifact verified: dev-02"),
            cond("Ready", "True", "PartiallyAvailable", "release can be rolled out to 1 of 2 devices")]},
        "Healthy",
    ),
    "written without a Ready condition, resolved and verified": (
        {"observedGeneration": 1, "digest": "sha256:" + "b" * 64, "conditions": [
            cond("Resolved", "True", "Resolved"),
            cond("SignatureVerified", "True", "Verified")]},
        "Healthy",
    ),
    "per-device repository, some devices excluded": (
        {"observedGeneration": 1, "signatureVerified": True, "conditions": [
            cond("Ready", "True", "PartiallyAvailable", "release can be rolled out to 2 of 3 devices"),
            cond("Resolved", "True", "PartiallyResolved"),
            cond("SignatureVerified", "True", "Verified")]},
        "Healthy",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(_sensor_cases()))
def test_weathersensor_health(case: str, tmp_path: Path) -> None:
    status, expected, *generation = _sensor_cases()[case]
    got, message = health(
        "weatherfleet.io_WeatherSensor", resource("WeatherSensor", status, *generation), tmp_path
    )
    assert got == expected, message
    assert message, "the health always says why"


@pytest.mark.parametrize("case", list(_fleet_cases()))
def test_sensorfleet_health(case: str, tmp_path: Path, monkeypatch) -> None:
    status, expected = _fleet_cases()[case]
    if status == "too large":
        from weatherfleet.reconcilers import fleet as fleet_mod

        monkeypatch.setattr(fleet_mod, "MAX_OBJECT_DATA", 10)
        status = _fleet_status(None)
    got, message = health("weatherfleet.io_SensorFleet", resource("SensorFleet", status), tmp_path)
    assert got == expected, message
    if case == "rollout halted":
        assert "1.1.0" in message and "rolled back" in message
    if case == "release waiting for its signature check":
        assert "signature not verified yet" in message


@pytest.mark.parametrize("phase", ["Progressing", "Paused", "Aborted", "RolledBack", "Complete"])
def test_a_rollout_a_person_steered_is_a_healthy_fleet(phase: str, tmp_path: Path) -> None:
    status = _fleet_status_without_release()
    status["rollout"] = {"phase": phase, "version": "1.1.0", "reason": "as asked"}
    got, message = health("weatherfleet.io_SensorFleet", resource("SensorFleet", status), tmp_path)
    assert got == "Healthy" and phase in message


@pytest.mark.parametrize("case", RELEASE_CASES)
def test_firmwarerelease_health(case: str, tmp_path: Path) -> None:
    status, expected = RELEASE_CASES[case]
    got, message = health("weatherfleet.io_FirmwareRelease", resource("FirmwareRelease", status), tmp_path)
    assert got == expected, message
    if case == "per-device repository, some devices excluded":
        assert "2 of 3" in message
    if status is not None and "digest" in status and expected == "Healthy":
        assert status["digest"] in message
    if case == "artifact not pushed yet":
        assert "NotFound: 1.2.0 not in repo" in message  # Resolved says why, not Ready's "not resolved"


def _terminal_reasons() -> set[str]:
    text = (HEALTH / "weatherfleet.lua").read_text()
    block = text[text.index("local terminal = {") : text.index("\n}", text.index("local terminal = {"))]
    return set(re.findall(r"(\w+) = true", block))


def _operator_strings() -> set[str]:
    root = gb.REPO / "operator" / "weatherfleet"
    return {
        node.value
        for path in root.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }


def test_every_terminal_reason_is_one_the_operator_writes() -> None:
    """No dead entries in the terminal list (a renamed reason would silently stop degrading anything)."""
    written = _operator_strings()
    assert _terminal_reasons() <= written, _terminal_reasons() - written


def test_waiting_is_never_terminal() -> None:
    """What the operator writes while it waits (for a signature check, a push, a registry, cert-manager,
    passwords, devices) must not make Argo CD call the resource Degraded."""
    waiting = {"SignatureNotVerified", "NotResolved", "NotFound", "RegistryUnreachable", "SignatureUnavailable",
               "PerDeviceRepository", "NoDevices", "NotIssued", "Pending", "CredentialsPending", "NotInFleet",
               "NotReady", "NotProvisioned", "NoPublicKey", "TelegramTokenMissing", "UpdatePending"}  # fmt: skip
    assert not (waiting & _terminal_reasons())


def test_application_health_passes_the_child_status_through(tmp_path: Path) -> None:
    app = {
        "kind": "Application",
        "metadata": {"name": "x"},
        "status": {"health": {"status": "Degraded", "message": "m"}},
    }
    assert health("argoproj.io_Application", app, tmp_path) == ("Degraded", "m")
    assert (
        health("argoproj.io_Application", {"kind": "Application", "metadata": {"name": "x"}}, tmp_path)[0]
        == "Progressing"
    )


def test_argocd_cm_carries_each_script_under_its_resource_key() -> None:
    (config,) = gb.build(gb.GITOPS / "argocd" / "config")
    assert config["metadata"] == {**config["metadata"], "name": "argocd-cm", "namespace": "argocd"}
    for group_kind, script in {
        "weatherfleet.io_WeatherSensor": "weatherfleet.lua",
        "weatherfleet.io_SensorFleet": "weatherfleet.lua",
        "weatherfleet.io_FirmwareRelease": "weatherfleet.lua",
        "argoproj.io_Application": "application.lua",
    }.items():
        assert config["data"][f"resource.customizations.health.{group_kind}"] == (HEALTH / script).read_text()


@pytest.mark.parametrize(
    ("kind", "cases"),
    [("WeatherSensor", "sensor"), ("SensorFleet", "fleet"), ("FirmwareRelease", RELEASE_CASES)],
)
def test_samples_use_the_status_fields_the_crds_define(kind: str, cases) -> None:
    """The health checks read real field names: every sample status validates against the CRD."""
    schemas = gs.CrdSchemas()
    schemas.add_files(sorted(gb.CRDS.glob("*.yaml")))
    status_schema = schemas._schemas[("weatherfleet.io", kind, "v1alpha1")]["properties"]["status"]
    cases = {"sensor": _sensor_cases, "fleet": _fleet_cases}[cases]() if isinstance(cases, str) else cases
    for name, (status, *_) in cases.items():
        if isinstance(status, dict):
            errors = [e.message for e in jsonschema.Draft4Validator(status_schema).iter_errors(status)]
            assert errors == [], f"{kind} sample {name!r}: {errors}"
