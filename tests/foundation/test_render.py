"""`weatherfleet render DIR`: the hydrated manifests of the example fleet, and clear errors on bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

CERT_MANAGER_KINDS = {"Certificate": "cert-manager.io_certificates.yaml"}


def run_render(folder: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "weatherfleet.cli", "render", str(folder), *extra],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def rendered() -> tuple[str, list[dict]]:
    from weatherfleet.commands.render import render  # noqa: F401  (import check before the subprocess)

    examples = Path(__file__).resolve().parents[2] / "gitops" / "examples"
    result = run_render(examples, "--now", "2026-03-01T12:00:00+00:00")
    assert result.returncode == 0, result.stderr
    return result.stdout, [d for d in yaml.safe_load_all(result.stdout) if d is not None]


def test_examples_render_every_child(rendered):
    _, docs = rendered
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert names == {
        ("Certificate", "balcony-01"),
        ("Certificate", "greenhouse-01"),
        ("Certificate", "street-01"),
        ("ConfigMap", "nanomq-acl"),
        ("ConfigMap", "garden-dashboard"),
        ("ConfigMap", "garden-alerts"),
        ("ConfigMap", "weatherfleet-rollout-plan"),
    }
    for doc in docs:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "weatherfleet"
        assert labels["app.kubernetes.io/part-of"] == "weatherfleet"
        assert doc["metadata"]["namespace"] == "weatherfleet"
        # From files there is no uid to own by; Secrets (passwords) never go to stdout, hence to git.
        assert "ownerReferences" not in doc["metadata"]
        assert doc["kind"] != "Secret"
    device_certs = [d for d in docs if d["kind"] == "Certificate"]
    for cert in device_certs:
        assert cert["metadata"]["labels"]["weatherfleet.io/device"] == cert["spec"]["commonName"]
        assert cert["metadata"]["labels"]["weatherfleet.io/fleet"] == "garden"


def test_render_output_is_sorted_and_deterministic(rendered, build):
    text, docs = rendered
    keys = [(d["apiVersion"], d["kind"], d["metadata"]["namespace"], d["metadata"]["name"]) for d in docs]
    assert keys == sorted(keys)
    again = run_render(build.examples, "--now", "2026-03-01T12:00:00+00:00")
    assert again.stdout == text  # byte for byte: GitOps diffs only show real changes


def test_the_plan_opens_the_first_wave_with_pins(rendered):
    import json

    from weatherfleet.reconcilers.plan import plan_from_configmap

    _, docs = rendered
    plan_cm = next(d for d in docs if d["metadata"]["name"] == "weatherfleet-rollout-plan")
    plan = json.loads(plan_cm["data"]["weatherfleet.garden.json"])
    assert plan["candidate"] == "1.1.0" and plan["percent"] == 5.0 and plan["halted"] is False
    assert plan["pins"] == {"street-01": "1.0.0"}
    assert plan["members"]["count"] == 3  # the list itself is in binaryData (reconcilers.plan)
    members = plan_from_configmap(plan_cm, "weatherfleet.garden.json").devices
    assert members == ["balcony-01", "greenhouse-01", "street-01"]


def test_rendered_built_in_objects_pass_kubernetes_validate_strict(rendered):
    _, docs = rendered
    checked = 0
    for doc in docs:
        if doc["apiVersion"] in ("v1", "apps/v1"):
            kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
            checked += 1
    assert checked == 4


def test_rendered_cert_manager_objects_match_the_cert_manager_crd(rendered, build):
    schemas = build.shared_schemas
    if not (schemas / CERT_MANAGER_KINDS["Certificate"]).exists():
        pytest.skip(
            f"cert-manager CRD schemas not found in {schemas} (the shared/ folder beside the repository)"
        )
    _, docs = rendered
    certs = [d for d in docs if d["apiVersion"].startswith("cert-manager.io/")]
    assert len(certs) == 3  # one per device; the broker certificate belongs to gitops
    for doc in certs:
        crd = yaml.safe_load((schemas / CERT_MANAGER_KINDS[doc["kind"]]).read_text())
        version = next(v for v in crd["spec"]["versions"] if v["name"] == doc["apiVersion"].split("/")[-1])
        errors = list(jsonschema.Draft4Validator(version["schema"]["openAPIV3Schema"]).iter_errors(doc))
        assert errors == [], [e.message for e in errors]


def test_cert_manager_schema_check_can_fail(build):
    """The check above is not vacuous: a wrong usage is refused by the cert-manager schema."""
    path = build.shared_schemas / CERT_MANAGER_KINDS["Certificate"]
    if not path.exists():
        pytest.skip(f"cert-manager CRD schemas not found in {build.shared_schemas}")
    crd = yaml.safe_load(path.read_text())
    schema = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")["schema"]["openAPIV3Schema"]
    bad = {"apiVersion": "cert-manager.io/v1", "kind": "Certificate", "metadata": {"name": "x"},
           "spec": {"secretName": "x", "issuerRef": {"name": "ca"}, "usages": ["client-auth"]}}  # fmt: skip
    assert list(jsonschema.Draft4Validator(schema).iter_errors(bad))


# --- bad input -----------------------------------------------------------------------------------------


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def _assert_refused(result: subprocess.CompletedProcess, *expected: str) -> str:
    assert result.returncode == 1
    assert result.stdout == ""  # nothing half-rendered for a pipeline to commit
    for words in expected:
        assert words in result.stderr, result.stderr
    return result.stderr


def test_bad_field_names_file_document_and_field(tmp_path, build):
    good, bad = build.sensor("dev-01"), build.sensor("dev-02")
    bad["spec"]["sensors"] = [{"type": "bme280", "i2c": {"address": 200}}]
    _write(tmp_path, "fleet.yaml", yaml.safe_dump(build.fleet()))
    path = _write(tmp_path, "sensors.yaml", yaml.safe_dump_all([good, bad]))
    _assert_refused(
        run_render(tmp_path),
        f"error: {path}: document 2: spec.sensors[0].i2c.address: 200: input should be less than or equal "
        "to 119 (WeatherSensor dev-02)",
        "nothing rendered",
    )


def test_broken_yaml_names_the_document_and_line(tmp_path, build):
    path = _write(tmp_path, "sensors.yaml", yaml.safe_dump(build.sensor()) + "---\nspec: [unclosed\n")
    _assert_refused(run_render(tmp_path), f"{path}: document 2: not valid YAML (line ")


def test_unknown_kind_and_missing_api_version(tmp_path, build):
    station = {**build.sensor(), "kind": "WeatherStation"}
    nameless = {"kind": "WeatherSensor", "metadata": {"name": "x"}}
    path = _write(tmp_path, "a.yaml", yaml.safe_dump_all([station, nameless]))
    _assert_refused(
        run_render(tmp_path),
        f"{path}: document 1: kind: 'WeatherStation' is not one of FirmwareRelease, SensorFleet, WeatherSensor",
        f"{path}: document 2: apiVersion: required field is missing",
    )


def test_every_problem_is_reported_not_only_the_first(tmp_path, build):
    _write(tmp_path, "a.yaml", yaml.safe_dump(build.with_path(build.sensor("a"), "spec.deviceId", "A")))
    _write(tmp_path, "b.yaml", yaml.safe_dump(build.with_path(build.release(), "spec.version", "v2")))
    stderr = _assert_refused(
        run_render(tmp_path), "a.yaml: document 1: spec.deviceId", "b.yaml: document 1: spec.version"
    )
    assert "2 problem(s)" in stderr


def test_cross_resource_conflicts_are_refused(tmp_path, build):
    one, two = build.sensor("dev-01"), build.sensor("dev-01")
    two["metadata"]["name"] = "other"
    _write(tmp_path, "s.yaml", yaml.safe_dump_all([one, two]))
    wide = build.fleet("wide")
    wide["spec"]["selector"] = {"matchLabels": {}}
    wide["spec"]["broker"] = {"aclConfigMap": "acl-2", "credentialsSecret": "pwd-2", "host": "broker-2"}
    _write(tmp_path, "f.yaml", yaml.safe_dump_all([build.fleet(), wide]))
    _assert_refused(
        run_render(tmp_path),
        "deviceId dev-01 is used by 2 WeatherSensors in namespace weatherfleet",
        "is selected by more than one SensorFleet: garden, wide",
    )


def test_fleets_sharing_a_broker_are_refused(tmp_path, build):
    other = build.fleet("other")
    _write(tmp_path, "f.yaml", yaml.safe_dump_all([build.fleet(), other]))
    _assert_refused(run_render(tmp_path), "share the aclConfigMap 'nanomq-acl': one broker serves one fleet")


def test_not_a_directory_and_non_mapping_documents(tmp_path):
    _assert_refused(run_render(tmp_path / "missing"), "not a directory")
    _write(tmp_path, "list.yaml", "- a\n- b\n")
    _assert_refused(run_render(tmp_path), "list.yaml: document 1: expected a mapping, got list")


def test_other_objects_and_kustomization_are_skipped_with_warnings(tmp_path, build):
    _write(tmp_path, "kustomization.yaml", "resources: [s.yaml]\n")
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "firmware-signing-key"}}
    lonely = build.sensor("lonely", fleet="nobody")
    fleet = build.fleet(rollout={"release": "fw-9-9-9"})
    _write(tmp_path, "s.yaml", yaml.safe_dump_all([config, lonely, build.sensor("dev-01"), fleet]))
    result = run_render(tmp_path)
    assert result.returncode == 0, result.stderr
    kinds = [(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(result.stdout)]
    assert ("Certificate", "dev-01") in kinds and ("Certificate", "lonely") not in kinds
    assert "warning: WeatherSensor weatherfleet/lonely: no SensorFleet selects it" in result.stderr
    assert "FirmwareRelease fw-9-9-9 not found" in result.stderr


def test_hidden_folders_are_not_read(tmp_path, build):
    (tmp_path / ".git").mkdir()
    _write(tmp_path / ".git", "junk.yaml", "not: [valid")
    (tmp_path / "fleet").mkdir()
    _write(tmp_path / "fleet", "s.yaml", yaml.safe_dump_all([build.fleet(), build.sensor("dev-01")]))
    result = run_render(tmp_path)
    assert result.returncode == 0, result.stderr
    assert "name: dev-01" in result.stdout  # found in the subfolder


def test_scale_bench_runs(build):
    """A tiny run of bench/render_scale.py so the benchmark keeps working (figures are not asserted)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("render_scale", build.repo / "bench" / "render_scale.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    row = bench.measure(30)
    # 30 certificates, ACL, dashboard, one alert ConfigMap and the plan.
    assert row["objects"] == 30 + 4
    assert row["total"] > 0
