"""The rollout plan ConfigMap: the contract between the operator (writer) and OtaFlux (reader)."""

from __future__ import annotations

from collections.abc import Mapping

from ..models.fleet import SensorFleet
from ..rollout import FleetPlan
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


def rollout_plan_configmap(plans: Mapping[str, FleetPlan], namespace: str) -> Object:
    """ConfigMap `weatherfleet-rollout-plan` in the operator's namespace: one key per fleet, keyed by
    `plan_key` (mounted into OtaFlux as a directory: every `*.json` file is one FleetPlan)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(PLAN_CONFIGMAP, namespace, labels(None), []),
        "data": {key: plan_json(plans[key]) for key in sorted(plans)},
    }
