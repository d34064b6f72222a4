"""The rollout plan ConfigMap: the contract between the operator (writer) and OtaFlux (reader).

One fleet, two keys: `<namespace>.<fleet>.json`, the FleetPlan as JSON without its device lists (in
`data`), and `<namespace>.<fleet>.members`, its members and exclusions as one exact, compact blob
(rollout.members; in `binaryData`: base64 in the API object, the raw bytes in the file the kubelet mounts).
The JSON carries the blob's sha256, so a reader never pairs a plan with another plan's members."""

from __future__ import annotations

import base64
from collections.abc import Mapping

from ..models.fleet import SensorFleet
from ..rollout import FleetPlan
from ..rollout.members import members_name
from .common import Object, labels, metadata

PLAN_CONFIGMAP = "weatherfleet-rollout-plan"


def plan_key(namespace: str, fleet: str) -> str:
    """The ConfigMap key (and mounted file name) of one fleet's plan: `<namespace>.<fleet>.json`."""
    return f"{namespace}.{fleet}.json"


def plan_key_of(fleet: SensorFleet) -> str:
    return plan_key(fleet.metadata.namespace, fleet.metadata.name)


def plan_json(plan: FleetPlan) -> str:
    """A FleetPlan as OtaFlux reads it (JSON by alias, keys in a stable order)."""
    return plan.model_dump_json(by_alias=True, indent=2) + "\n"


def plan_entries(key: str, plan: FleetPlan) -> tuple[dict[str, str], dict[str, str]]:
    """One fleet's `data` and `binaryData` entries: the packed plan's JSON under `key`, its member blob
    (base64, as the API object holds binary data) under `members_name(key)`."""
    packed, blob = plan.packed()
    return {key: plan_json(packed)}, {members_name(key): base64.b64encode(blob).decode()}


def plan_from_configmap(configmap: Object | None, key: str) -> FleetPlan | None:
    """One fleet's plan as the ConfigMap holds it, unpacked; None when it has none. ValueError when the
    entry does not parse or its member blob is missing or another plan's."""
    text = ((configmap or {}).get("data") or {}).get(key)
    if not text:
        return None
    plan = FleetPlan.model_validate_json(text)
    encoded = ((configmap or {}).get("binaryData") or {}).get(members_name(key))
    return plan.unpacked(base64.b64decode(encoded, validate=True) if encoded is not None else None)


def rollout_plan_configmap(plans: Mapping[str, FleetPlan], namespace: str) -> Object:
    """ConfigMap `weatherfleet-rollout-plan` in the operator's namespace: two keys per fleet (`plan_entries`),
    mounted into OtaFlux as a directory: every `*.json` file is one FleetPlan, its `.members` file beside."""
    data: dict[str, str] = {}
    binary: dict[str, str] = {}
    for key in sorted(plans):
        text, blob = plan_entries(key, plans[key])
        data.update(text)
        binary.update(blob)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(PLAN_CONFIGMAP, namespace, labels(None), []),
        "data": data,
        "binaryData": binary,
    }
