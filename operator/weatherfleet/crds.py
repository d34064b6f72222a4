"""CustomResourceDefinitions generated from the pydantic models, so schema and validation never drift."""

from __future__ import annotations

import copy
from typing import Any

import yaml

from . import GROUP, VERSION
from .models import FirmwareRelease, SensorFleet, WeatherSensor
from .models.common import Model

CATEGORY = "weatherfleet"

_NAMES = {
    "WeatherSensor": ("weathersensors", "weathersensor", ["ws"]),
    "SensorFleet": ("sensorfleets", "sensorfleet", ["fleet"]),
    "FirmwareRelease": ("firmwarereleases", "firmwarerelease", ["fwrel"]),
}


def _column(name: str, type_: str, json_path: str, priority: int = 0) -> dict[str, Any]:
    """One printer column of `kubectl get` (priority 1: shown only with `-o wide`)."""
    column: dict[str, Any] = {"name": name, "type": type_, "jsonPath": json_path}
    if priority:
        column["priority"] = priority
    return column


def _condition_column(condition: str) -> dict[str, Any]:
    """The status (True, False, Unknown) of one condition, under the condition's name."""
    return _column(condition, "string", f'.status.conditions[?(@.type=="{condition}")].status')


_AGE = _column("Age", "date", ".metadata.creationTimestamp")
_PRINTER_COLUMNS: dict[str, list[dict[str, Any]]] = {
    "WeatherSensor": [
        _column("Location", "string", ".spec.location"),
        # The apiserver shows only the first match of a JSONPath (`.spec.sensors[*].type` would show one sensor
        # of several): the operator writes the list joined into the status.
        _column("Sensors", "string", ".status.sensorsSummary"),
        _column("Firmware", "string", ".status.firmware.reported"),
        _column("Desired", "string", ".status.firmware.desired"),
        _condition_column("Online"),
        _column("Config", "integer", ".status.config.appliedGeneration"),
        _column("Last Seen", "date", ".status.lastSeen"),
        _AGE,
    ],
    "SensorFleet": [
        _column("Broker", "string", ".spec.broker.kind"),
        _column("Sensors", "integer", ".status.sensors.total"),
        _column("Online", "integer", ".status.sensors.online"),
        _column("Release", "string", ".status.rollout.version"),
        _column("Rollout", "string", ".status.rollout.phase"),
        _column("Percent", "number", ".status.rollout.percent"),
        _condition_column("Ready"),
        _AGE,
    ],
    "FirmwareRelease": [
        _column("Version", "string", ".spec.version"),
        _column("Channel", "string", ".spec.channel"),
        _column("Kind", "string", ".spec.artifact.kind"),
        _column("Verified", "boolean", ".status.signatureVerified"),
        _condition_column("Ready"),
        _column("Digest", "string", ".status.digest", priority=1),
        _AGE,
    ],
}

# What `kubectl explain <kind>` says first.
_DESCRIPTIONS = {
    "WeatherSensor": "One ESP32 weather station board: its identity, location, sensors, features and firmware "
    "policy. The fleet that selects it gives it a client certificate and broker access, alerts when it goes "
    "silent and rolls firmware out to it.",
    "SensorFleet": "A set of WeatherSensors (by label) with one MQTT broker, one certificate policy, one Grafana "
    'dashboard with "no data" alerts, and one staged firmware rollout.',
    "FirmwareRelease": "One built and signed firmware version stored as an OCI artifact: the operator resolves "
    "its digest, checksums and signature before a fleet may roll it out.",
}

# Fields that may never change once set: enforced by the API server through CEL.
_IMMUTABLE = {"WeatherSensor": ["deviceId"]}


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    """Pydantic's JSON Schema made structural: refs inlined, nullables folded, no JSON-Schema-only keys."""
    if isinstance(node, list):
        return [_structural(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]])
        extra = {k: v for k, v in node.items() if k != "$ref"}
        return _structural({**target, **extra}, defs)
    node = dict(node)
    options = node.get("anyOf")
    if options is not None:
        real = [o for o in options if o.get("type") != "null"]
        if len(real) == 1 and len(real) < len(options):
            merged = {**{k: v for k, v in node.items() if k != "anyOf"}, **real[0]}
            merged["nullable"] = True
            if merged.get("default", 0) is None:
                del merged["default"]
            return _structural(merged, defs)
    if "const" in node:
        node["enum"] = [node.pop("const")]
    for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(node.get(bound), int | float) and not isinstance(node.get(bound), bool):
            node[plain] = node[bound]
            node[bound] = True
    if node.get("format") == "date-time":
        node["type"] = "string"
    for key in ("title", "$defs", "additionalProperties" if "properties" in node else "", "discriminator"):
        node.pop(key, None)
    if node.get("additionalProperties") is False:
        node.pop("additionalProperties")
    return {k: _structural(v, defs) for k, v in node.items()}


def _schema_for(model: type[Model], kind: str) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    schema = _structural(raw, raw.get("$defs", {}))
    props = schema["properties"]
    # The descriptions Kubernetes gives these fields in its own types (`kubectl explain` shows them).
    props["metadata"] = {"type": "object", "description": "Standard object's metadata."}
    props["apiVersion"] = {
        "type": "string",
        "description": "APIVersion defines the versioned schema of this representation of an object. Servers "
        "should convert recognized schemas to the latest internal value, and may reject unrecognized values.",
    }
    props["kind"] = {
        "type": "string",
        "description": "Kind is a string value representing the REST resource this object represents. Servers "
        "may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase.",
    }
    for field in _IMMUTABLE.get(kind, []):
        props["spec"]["properties"][field]["x-kubernetes-validations"] = [
            {"rule": "self == oldSelf", "message": f"{field} is immutable"}
        ]
    if kind == "WeatherSensor":
        # The API server then rejects two sensors of the same type, as the model does.
        sensors = props["spec"]["properties"]["sensors"]
        sensors["x-kubernetes-list-type"] = "map"
        sensors["x-kubernetes-list-map-keys"] = ["type"]
    conditions = props["status"]["properties"]["conditions"]
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]
    props["status"].pop("default", None)
    schema["description"] = _DESCRIPTIONS[kind]
    schema["required"] = ["spec"]
    return {"type": "object", **{k: v for k, v in schema.items() if k != "type"}}


def crd(kind: str) -> dict[str, Any]:
    model = {"WeatherSensor": WeatherSensor, "SensorFleet": SensorFleet, "FirmwareRelease": FirmwareRelease}[
        kind
    ]
    plural, singular, short = _NAMES[kind]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "weatherfleet", "app.kubernetes.io/part-of": "weatherfleet"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": singular,
                "shortNames": short,
                "categories": [CATEGORY],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": _PRINTER_COLUMNS[kind],
                    "schema": {"openAPIV3Schema": _schema_for(model, kind)},
                }
            ],
        },
    }


def all_crds() -> list[dict[str, Any]]:
    return [crd(kind) for kind in ("WeatherSensor", "SensorFleet", "FirmwareRelease")]


def file_name(doc: dict[str, Any]) -> str:
    return f"{doc['spec']['group']}_{doc['spec']['names']['plural']}.yaml"


def to_yaml(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc, sort_keys=True, default_flow_style=False, width=100)
