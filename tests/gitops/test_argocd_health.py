"""Argo CD health checks (Lua, in gitops/argocd/config/health) for WeatherSensor, SensorFleet and
FirmwareRelease, run by a real Lua 5.4 interpreter with `obj` set the way Argo CD sets it."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import gitops_build as gb
import gitops_schemas as gs
import jsonschema
import pytest

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


def health(script: str, obj: dict, tmp_path: Path) -> tuple[str, str]:
    source = tmp_path / "object.lua"
    source.write_text("return " + to_lua(obj) + "\n")
    result = subprocess.run(
        [lua(), str(HARNESS), str(source), str(HEALTH / script)],
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


SENSOR_CASES = {
    "no status yet": (None, "Progressing"),
    "empty conditions": ({"conditions": []}, "Progressing"),
    "ready": (
        {"observedGeneration": 1, "conditions": [cond("Ready", "True", "Provisioned", "certificate issued")]},
        "Healthy",
    ),
    "waiting for certificate": (
        {
            "observedGeneration": 1,
            "conditions": [
                cond("CertificateReady", "False", "NotIssued", "pending"),
                cond("Ready", "False", "NotProvisioned", "waiting for CertificateReady"),
            ],
        },
        "Progressing",
    ),
    "invalid spec": (
        {"observedGeneration": 1, "conditions": [cond("Ready", "False", "InvalidSpec", "spec.sensors[1]")]},
        "Degraded",
    ),
    "terminal reason on another condition": (
        {
            "observedGeneration": 1,
            "conditions": [
                cond("CertificateReady", "False", "IssuerNotFound", "ClusterIssuer nope"),
                cond("Ready", "False", "NotProvisioned", "waiting for CertificateReady"),
            ],
        },
        "Degraded",
    ),
    "ready but for an older generation": (
        {"observedGeneration": 1, "conditions": [cond("Ready", "True", "Provisioned")]},
        "Progressing",
    ),
}


@pytest.mark.parametrize("case", SENSOR_CASES)
def test_weathersensor_health(case: str, tmp_path: Path) -> None:
    status, expected = SENSOR_CASES[case]
    generation = 2 if case == "ready but for an older generation" else 1
    got, message = health("weathersensor.lua", resource("WeatherSensor", status, generation), tmp_path)
    assert got == expected, message
    if expected == "Degraded":
        assert message, "a Degraded status must say why"


def _fleet_status(ready: dict, phase: str = "Idle", reason: str = "") -> dict:
    return {
        "observedGeneration": 1,
        "conditions": [ready],
        "rollout": {"phase": phase, "version": "1.1.0", "reason": reason, "wave": 1, "percent": 5},
    }


FLEET_CASES = {
    "no status yet": (None, "Progressing"),
    "ready, no rollout": (_fleet_status(cond("Ready", "True", "Reconciled", "3 sensors")), "Healthy"),
    "ready, rollout progressing": (
        _fleet_status(cond("Ready", "True", "Reconciled"), phase="Progressing"),
        "Healthy",
    ),
    "rollout halted": (
        _fleet_status(
            cond("Ready", "True", "Reconciled"), phase="Halted", reason="2 of 5 devices rolled back"
        ),
        "Degraded",
    ),
    "not ready yet": (
        _fleet_status(cond("Ready", "False", "NotReady", "BrokerAccess pending")),
        "Progressing",
    ),
    "broker config too large": (
        _fleet_status(cond("Ready", "False", "BrokerConfigTooLarge", "ACL over 1 MiB")),
        "Degraded",
    ),
}


@pytest.mark.parametrize("case", FLEET_CASES)
def test_sensorfleet_health(case: str, tmp_path: Path) -> None:
    status, expected = FLEET_CASES[case]
    got, message = health("sensorfleet.lua", resource("SensorFleet", status), tmp_path)
    assert got == expected, message
    if case == "rollout halted":
        assert "1.1.0" in message and "rolled back" in message


RELEASE_CASES = {
    "no status yet": (None, "Progressing"),
    "resolved and verified": (
        {
            "observedGeneration": 1,
            "digest": "sha256:" + "a" * 64,
            "conditions": [
                cond("Resolved", "True", "Resolved"),
                cond("SignatureVerified", "True", "Verified"),
            ],
        },
        "Healthy",
    ),
    "ready condition": (
        {"observedGeneration": 1, "conditions": [cond("Ready", "True", "Available")]},
        "Healthy",
    ),
    "registry unreachable": (
        {
            "observedGeneration": 1,
            "conditions": [cond("Resolved", "False", "RegistryUnreachable", "timeout")],
        },
        "Progressing",
    ),
    "tag missing": (
        {
            "observedGeneration": 1,
            "conditions": [cond("Resolved", "False", "TagNotFound", "1.2.0 not in repo")],
        },
        "Degraded",
    ),
    "bad signature": (
        {
            "observedGeneration": 1,
            "conditions": [
                cond("Resolved", "True", "Resolved"),
                cond("SignatureVerified", "False", "SignatureInvalid", "does not verify"),
            ],
        },
        "Degraded",
    ),
    "resolved, signature pending": (
        {"observedGeneration": 1, "conditions": [cond("Resolved", "True", "Resolved")]},
        "Progressing",
    ),
}


@pytest.mark.parametrize("case", RELEASE_CASES)
def test_firmwarerelease_health(case: str, tmp_path: Path) -> None:
    status, expected = RELEASE_CASES[case]
    got, message = health("firmwarerelease.lua", resource("FirmwareRelease", status), tmp_path)
    assert got == expected, message


def test_application_health_passes_the_child_status_through(tmp_path: Path) -> None:
    app = {
        "kind": "Application",
        "metadata": {"name": "x"},
        "status": {"health": {"status": "Degraded", "message": "m"}},
    }
    assert health("application.lua", app, tmp_path) == ("Degraded", "m")
    assert (
        health("application.lua", {"kind": "Application", "metadata": {"name": "x"}}, tmp_path)[0]
        == "Progressing"
    )


def test_the_three_scripts_share_one_list_of_terminal_reasons() -> None:
    def terminal_block(script: str) -> str:
        text = (HEALTH / script).read_text()
        return text[text.index("local terminal = {") : text.index("}", text.index("local terminal = {"))]

    blocks = {terminal_block(s) for s in ("weathersensor.lua", "sensorfleet.lua", "firmwarerelease.lua")}
    assert len(blocks) == 1


def test_argocd_cm_carries_each_script_under_its_resource_key() -> None:
    (config,) = gb.build(gb.GITOPS / "argocd" / "config")
    assert config["metadata"] == {**config["metadata"], "name": "argocd-cm", "namespace": "argocd"}
    for group_kind, script in {
        "weatherfleet.io_WeatherSensor": "weathersensor.lua",
        "weatherfleet.io_SensorFleet": "sensorfleet.lua",
        "weatherfleet.io_FirmwareRelease": "firmwarerelease.lua",
        "argoproj.io_Application": "application.lua",
    }.items():
        assert config["data"][f"resource.customizations.health.{group_kind}"] == (HEALTH / script).read_text()


@pytest.mark.parametrize(
    ("kind", "cases"),
    [("WeatherSensor", SENSOR_CASES), ("SensorFleet", FLEET_CASES), ("FirmwareRelease", RELEASE_CASES)],
)
def test_samples_use_the_status_fields_the_crds_define(kind: str, cases: dict) -> None:
    """The health checks read real field names: every sample status validates against the CRD."""
    schemas = gs.CrdSchemas()
    schemas.add_files(sorted(gb.CRDS.glob("*.yaml")))
    status_schema = schemas._schemas[("weatherfleet.io", kind, "v1alpha1")]["properties"]["status"]
    for name, (status, _) in cases.items():
        if status is not None:
            errors = [e.message for e in jsonschema.Draft4Validator(status_schema).iter_errors(status)]
            assert errors == [], f"{kind} sample {name!r}: {errors}"
