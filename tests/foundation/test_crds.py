"""The CRDs: generated from the models, checked in without drift, valid and structural."""

from __future__ import annotations

import subprocess
import sys

import jsonschema
import kubernetes_validate
import pytest
import yaml

from weatherfleet.crds import all_crds, file_name, to_yaml


def test_checked_in_crds_match_the_models(build):
    """Fails when someone changes a model and forgets `weatherfleet crds --write crds`."""
    for doc in all_crds():
        path = build.repo / "crds" / file_name(doc)
        assert path.exists(), f"{path} is missing: run weatherfleet crds --write crds"
        assert path.read_text() == to_yaml(doc), (
            f"{path} drifted from the models: run weatherfleet crds --write crds"
        )


def test_crds_command_prints_the_same_documents():
    out = subprocess.run(
        [sys.executable, "-m", "weatherfleet.cli", "crds"], check=True, capture_output=True, text=True
    ).stdout
    assert list(yaml.safe_load_all(out)) == all_crds()


@pytest.mark.parametrize("doc", all_crds(), ids=lambda d: d["spec"]["names"]["kind"])
def test_crd_passes_kubernetes_validate_strict(doc):
    kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def _untyped_nodes(node, path="$"):
    """Structural schemas need a type on every node (apart from the explicit escape hatches)."""
    if not isinstance(node, dict):
        return
    if (
        "type" not in node
        and not node.get("x-kubernetes-int-or-string")
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        yield path
    for key in ("anyOf", "oneOf", "allOf"):
        if key in node:
            yield f"{path}.{key} (not structural at this level)"
    for name, child in node.get("properties", {}).items():
        yield from _untyped_nodes(child, f"{path}.{name}")
    if "items" in node:
        yield from _untyped_nodes(node["items"], f"{path}[]")


@pytest.mark.parametrize("doc", all_crds(), ids=lambda d: d["spec"]["names"]["kind"])
def test_crd_schema_is_structural(doc):
    version = doc["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert list(_untyped_nodes(version["schema"]["openAPIV3Schema"])) == []
    assert doc["spec"]["names"]["categories"] == ["weatherfleet"]


def test_names_columns_and_immutability():
    crds = {d["spec"]["names"]["kind"]: d for d in all_crds()}
    assert {k: d["spec"]["names"]["shortNames"] for k, d in crds.items()} == {
        "WeatherSensor": ["ws"],
        "SensorFleet": ["fleet"],
        "FirmwareRelease": ["fwrel"],
    }
    columns = [c["name"] for c in crds["WeatherSensor"]["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert columns == ["Location", "Sensors", "Firmware", "Desired", "Online", "Config", "Last Seen", "Age"]
    spec = crds["WeatherSensor"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["properties"]["deviceId"]["x-kubernetes-validations"] == [
        {"rule": "self == oldSelf", "message": "deviceId is immutable"}
    ]
    assert "deviceId" in spec["required"]


def _schema(kind):
    crd = next(d for d in all_crds() if d["spec"]["names"]["kind"] == kind)
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_example_resources_validate_against_the_generated_schemas(build):
    """The API server would accept gitops/examples: each document checked against its CRD's schema."""
    seen = set()
    for path in sorted(build.examples.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            errors = list(jsonschema.Draft4Validator(_schema(doc["kind"])).iter_errors(doc))
            assert errors == [], f"{path.name}: {[e.message for e in errors]}"
            seen.add(doc["kind"])
    assert seen == {"WeatherSensor", "SensorFleet", "FirmwareRelease"}


def test_schema_rejects_what_the_model_rejects_where_openapi_can_say_it(build):
    """Patterns and bounds live in the CRD too, so `kubectl apply` refuses bad input before the operator."""
    validator = jsonschema.Draft4Validator(_schema("WeatherSensor"))
    bad_id = build.with_path(build.sensor(), "spec.deviceId", "Dev_01")
    bad_addr = build.with_path(build.sensor(), "spec.sensors.0", {"type": "bme280", "i2c": {"address": 200}})
    bad_type = build.with_path(build.sensor(), "spec.sensors.0.type", "dht22")
    for doc in (bad_id, bad_addr, bad_type):
        assert list(validator.iter_errors(doc)), doc["spec"]
    assert not list(validator.iter_errors(build.sensor()))
