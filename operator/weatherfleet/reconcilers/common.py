"""What every reconciler shares: labels, owner references, events, and stable hashing of content."""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from ..models.common import ObjectMeta

# A Kubernetes object as a plain dict, ready for server-side apply or `yaml.safe_dump`.
Object = dict[str, Any]

MANAGED_BY = "app.kubernetes.io/managed-by"
PART_OF = "app.kubernetes.io/part-of"
FLEET_LABEL = "weatherfleet.io/fleet"
DEVICE_LABEL = "weatherfleet.io/device"
CONFIG_HASH_ANNOTATION = "weatherfleet.io/config-hash"
FIELD_MANAGER = "weatherfleet"


class Event(BaseModel):
    """A Kubernetes Event the caller should emit on the owning resource (the reconcilers only say which)."""

    model_config = ConfigDict(frozen=True)

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


def labels(fleet: str | None, device: str | None = None, **extra: str) -> dict[str, str]:
    """The labels every child carries, so `kubectl get -l app.kubernetes.io/managed-by=weatherfleet` finds
    them all and a fleet's or a device's children can be selected."""
    result = {MANAGED_BY: "weatherfleet", PART_OF: "weatherfleet"}
    if fleet:
        result[FLEET_LABEL] = fleet
    if device:
        result[DEVICE_LABEL] = device
    result.update(extra)
    return dict(sorted(result.items()))


def owner_references(api_version: str, kind: str, meta: ObjectMeta) -> list[Object]:
    """The controller owner reference to a CR. Empty when the CR has no uid (rendered from files, not read
    from the API): an owner reference without a uid is invalid, and garbage collection needs the uid."""
    if not meta.uid:
        return []
    return [
        {
            "apiVersion": api_version,
            "kind": kind,
            "name": meta.name,
            "uid": meta.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def metadata(
    name: str,
    namespace: str,
    labels_: dict[str, str],
    owners: list[Object],
    annotations: dict[str, str] | None = None,
) -> Object:
    meta: Object = {"name": name, "namespace": namespace, "labels": labels_}
    if annotations:
        meta["annotations"] = dict(sorted(annotations.items()))
    if owners:
        meta["ownerReferences"] = owners
    return meta


def sort_key(obj: Object) -> tuple[str, str, str, str]:
    """Children are sorted by kind, namespace and name so rendered output diffs stably in git."""
    meta = obj.get("metadata", {})
    return (obj.get("apiVersion", ""), obj.get("kind", ""), meta.get("namespace", ""), meta.get("name", ""))


def sorted_children(children: list[Object]) -> list[Object]:
    return sorted(children, key=sort_key)


def content_hash(*parts: str) -> str:
    """sha256 over the parts, each length-prefixed so ("ab", "c") and ("a", "bc") differ."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode()
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()
