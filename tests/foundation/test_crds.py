"""The CRDs: generated from the models, checked in without drift, valid and structural."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from weatherfleet.crds import all_crds, file_name, to_yaml

sys.path.insert(0, str(Path(__file__).parent))  # printer_columns.py beside this file


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


# --- kubectl explain: every field documented ------------------------------------------------------------


def _undocumented(node, path):
    for name, child in (node.get("properties") or {}).items():
        here = f"{path}.{name}"
        if not child.get("description"):
            yield here
        yield from _undocumented(child, here)
    if isinstance(node.get("items"), dict):
        yield from _undocumented(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _undocumented(node["additionalProperties"], f"{path}{{}}")


@pytest.mark.parametrize("doc", all_crds(), ids=lambda d: d["spec"]["names"]["kind"])
def test_every_field_has_a_description(doc):
    """What `kubectl explain <kind>.<field>` prints comes from these descriptions, generated from the models'
    Field descriptions (and class docstrings for nested objects)."""
    schema = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert schema.get("description")
    assert list(_undocumented(schema, doc["spec"]["names"]["kind"])) == []


def test_the_checked_in_crds_carry_the_descriptions(build):
    crd = yaml.safe_load((build.repo / "crds" / "weatherfleet.io_weathersensors.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["properties"]["deviceId"]["description"].startswith("the board's identity: MQTT client id")


# --- kubectl get: printer columns as the apiserver evaluates them ----------------------------------------


def _columns(kind):
    crd = next(d for d in all_crds() if d["spec"]["names"]["kind"] == kind)
    return crd["spec"]["versions"][0]["additionalPrinterColumns"]


def _objects(build):
    """A sensor, its fleet and a release with the statuses the operator's reconcilers write."""
    from datetime import timedelta

    from weatherfleet.models import FirmwareRelease, SensorFleet, WeatherSensor
    from weatherfleet.models.common import Condition
    from weatherfleet.models.release import FirmwareReleaseStatus
    from weatherfleet.reconcilers.fleet import FleetObservation, reconcile_fleet
    from weatherfleet.reconcilers.sensor import SensorObservation, reconcile_sensor
    from weatherfleet.rollout import DeviceObservation

    sensor_doc = build.sensor(
        "dev-01", location="roof", sensors=[{"type": "bme280"}, {"type": "scd30"}, {"type": "sds011"}]
    )
    sensor = WeatherSensor.model_validate(sensor_doc)
    fleet_doc = build.fleet()
    fleet = SensorFleet.model_validate(fleet_doc)
    seen = build.now - timedelta(minutes=1)
    device = DeviceObservation(device_id="dev-01", online=True, reported_version="1.1.0")
    status = reconcile_sensor(
        sensor,
        fleet,
        SensorObservation(now=build.now, certificate_ready=True, last_seen=seen, device=device),
        "pw",
    ).status
    fleet_status = reconcile_fleet(fleet, FleetObservation(now=build.now, sensors=[sensor])).status
    release_doc = build.release()
    release_status = FirmwareReleaseStatus(
        observedGeneration=1,
        digest="sha256:" + "a" * 64,
        signatureVerified=True,
        conditions=[Condition(type="Ready", status="True", reason="Ready", message="ok")],
    )
    dump = {"by_alias": True, "mode": "json", "exclude_none": True}
    meta = {"creationTimestamp": "2026-03-01T11:00:00Z"}
    return {
        "WeatherSensor": {**sensor_doc, "metadata": {**sensor_doc["metadata"], **meta},
                          "status": status.model_dump(**dump)},
        "SensorFleet": {**fleet_doc, "metadata": {**fleet_doc["metadata"], **meta},
                        "status": fleet_status.model_dump(**dump)},
        "FirmwareRelease": {**release_doc, "metadata": {**release_doc["metadata"], **meta},
                            "status": FirmwareRelease.model_validate(
                                {**release_doc, "status": release_status.model_dump(**dump)}
                            ).status.model_dump(**dump)},
    }  # fmt: skip


def test_kubectl_get_ws_shows_every_sensor_of_a_board(build):
    from printer_columns import find_results, row

    sensor = _objects(build)["WeatherSensor"]
    # what the apiserver made of the old column: the first of three sensors only
    assert row(sensor, [{"name": "Sensors", "type": "string", "jsonPath": ".spec.sensors[*].type"}]) == {
        "Sensors": "bme280"
    }
    assert len(find_results(sensor, ".spec.sensors[*].type")) == 3
    shown = row(sensor, _columns("WeatherSensor"))
    assert shown["Sensors"] == "bme280,scd30,sds011"
    assert (shown["Location"], shown["Firmware"], shown["Online"]) == ("roof", "1.1.0", "True")
    assert shown["Last Seen"] == sensor["status"]["lastSeen"] and shown["Age"] == "2026-03-01T11:00:00Z"


@pytest.mark.parametrize("kind", ["WeatherSensor", "SensorFleet", "FirmwareRelease"])
def test_no_printer_column_depends_on_more_than_its_first_match(kind, build):
    """The apiserver keeps `results[0][0]`: a column whose path reaches several values on a real object
    shows a part as if it were the whole. Every path also names fields the schema has."""
    from printer_columns import find_results, parse

    obj = _objects(build)[kind]
    schema = _schema(kind)
    for column in _columns(kind):
        assert len(find_results(obj, column["jsonPath"])) <= 1, column
        node = schema
        for step, arg in parse(column["jsonPath"]):
            if step == "field":
                if arg == "metadata":
                    break
                assert arg in node.get("properties", {}), f"{column['jsonPath']}: no field {arg}"
                node = node["properties"][arg]
            else:
                node = node["items"]


def test_the_evaluator_follows_the_apiserver_on_filters_and_types():
    from printer_columns import cell

    obj = {
        "status": {
            "conditions": [
                {"type": "Ready", "status": "False"},
                {"type": "Online", "status": "True"},
                {"type": "Online", "status": "False"},
            ],
            "n": 5.0,
            "flag": True,
        }
    }
    online = {"type": "string", "jsonPath": '.status.conditions[?(@.type=="Online")].status'}
    assert cell(obj, online) == "True"  # two matches: the first wins
    assert cell(obj, {"type": "integer", "jsonPath": ".status.n"}) == 5
    assert cell(obj, {"type": "string", "jsonPath": ".status.n"}) == "5"  # Go prints 5.0 as 5
    assert cell(obj, {"type": "string", "jsonPath": ".status.flag"}) == "true"
    assert cell(obj, {"type": "integer", "jsonPath": ".status.flag"}) is None
    assert cell(obj, {"type": "date", "jsonPath": ".status.missing"}) is None
