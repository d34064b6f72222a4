"""The API server's storage and API semantics, independent of HTTP: objects, resourceVersions, watch events,
status split, finalizers, garbage collection, CRD validation and pruning, server-side apply.

Single-threaded by design: everything runs on the server's event loop, so a write and the watch events it
causes are atomic, as etcd + the watch cache make them for a real apiserver."""

from __future__ import annotations

import asyncio
import base64
import copy
import secrets
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import jsonpatch

from . import apply as ssa
from . import schema as schemas
from .errors import ApiError, check_configmap_size
from .resources import BUILTINS, KOPF_PEERING_CRDS, ResourceType, from_crd
from .selectors import field_matcher, label_matcher


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- the store ------------------------------------------------------------------------------------------


@dataclass
class Watcher:
    key: tuple[str, str]
    namespace: str | None
    labels: Callable[[dict[str, str]], bool]
    fields: Callable[[dict[str, Any]], bool]
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)

    def wants(self, key: tuple[str, str], obj: dict[str, Any]) -> bool:
        meta = obj["metadata"]
        return (
            key == self.key
            and (self.namespace is None or meta.get("namespace") == self.namespace)
            and self.labels(meta.get("labels") or {})
            and self.fields(obj)
        )


@dataclass
class Write:
    actor: str
    verb: str
    resource: str
    namespace: str | None
    name: str | None
    subresource: str | None
    changed: bool
    agent: str = ""


class Store:
    def __init__(self, history: int = 100_000) -> None:
        self.types: dict[tuple[str, str, str], ResourceType] = {}
        self.objects: dict[tuple[str, str], dict[tuple[str, str], dict[str, Any]]] = {}
        self.managed: dict[tuple[str, str, str, str], dict[str, set[ssa.Path]]] = {}
        self.rv = 1
        self.history: deque[tuple[int, tuple[str, str], str, dict[str, Any]]] = deque(maxlen=history)
        self.compacted_rv = 0
        self.watchers: list[Watcher] = []
        self.writes: list[Write] = []
        self.pruned: list[str] = []
        self.requests: Counter[str] = Counter()
        for rt in BUILTINS:
            self.register(rt)
        for name in ("default", "kube-system"):
            self._put(self.type_for("", "v1", "namespaces"), None, {"metadata": {"name": name}})
        for crd in KOPF_PEERING_CRDS:
            self.create(self.type_for("apiextensions.k8s.io", "v1", "customresourcedefinitions"), None, crd)

    # -- types --
    def register(self, rt: ResourceType) -> None:
        self.types[(rt.group, rt.version, rt.plural)] = rt
        self.objects.setdefault(rt.key, {})

    def type_for(self, group: str, version: str, plural: str) -> ResourceType:
        rt = self.types.get((group, version, plural))
        if rt is None:
            raise ApiError(404, "NotFound", f"the server could not find the requested resource ({plural})")
        return rt

    def _namespace_exists(self, namespace: str) -> bool:
        return ("", namespace) in self.objects[("", "namespaces")]

    # -- reads --
    def get(self, rt: ResourceType, namespace: str | None, name: str) -> dict[str, Any]:
        obj = self.objects[rt.key].get((namespace or "", name))
        if obj is None:
            group = f".{rt.group}" if rt.group else ""
            raise ApiError(404, "NotFound", f'{rt.plural}{group} "{name}" not found')
        return obj

    def list(
        self, rt: ResourceType, namespace: str | None, labels: str | None = None, fields: str | None = None
    ) -> tuple[list[dict[str, Any]], int]:
        lm, fm = label_matcher(labels), field_matcher(fields)
        items = [
            o
            for (ns, _), o in sorted(self.objects[rt.key].items())
            if (namespace is None or ns == namespace) and lm(o["metadata"].get("labels") or {}) and fm(o)
        ]
        return items, self.rv

    # -- watch --
    def watch(
        self,
        rt: ResourceType,
        namespace: str | None,
        since: str | None,
        labels: str | None = None,
        fields: str | None = None,
    ) -> Watcher:
        """Register a watcher and queue what it missed; raises 410 when `since` was compacted away."""
        watcher = Watcher(rt.key, namespace, label_matcher(labels), field_matcher(fields))
        if since in (None, "", "0"):
            for obj in self.list(rt, namespace, labels, fields)[0]:
                watcher.queue.put_nowait(("ADDED", obj))
        else:
            try:
                rv = int(since)
            except ValueError as exc:
                raise ApiError(400, "BadRequest", f"invalid resourceVersion {since!r}") from exc
            if rv < self.compacted_rv:
                raise ApiError(410, "Expired", f"too old resource version: {rv} ({self.compacted_rv})")
            for erv, key, etype, obj in self.history:
                if erv > rv and watcher.wants(key, obj):
                    watcher.queue.put_nowait((etype, obj))
        self.watchers.append(watcher)
        return watcher

    def unwatch(self, watcher: Watcher) -> None:
        if watcher in self.watchers:
            self.watchers.remove(watcher)

    def compact(self) -> None:
        """Forget the event history, as etcd compaction does: older resourceVersions now get 410 Gone."""
        self.history.clear()
        self.compacted_rv = self.rv

    def _emit(self, rt: ResourceType, etype: str, obj: dict[str, Any]) -> None:
        if len(self.history) == self.history.maxlen:
            self.compacted_rv = self.history[0][0]
        self.history.append((self.rv, rt.key, etype, obj))
        for watcher in self.watchers:
            if watcher.wants(rt.key, obj):
                watcher.queue.put_nowait((etype, obj))

    # -- writes --
    def _next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    def _put(self, rt: ResourceType, namespace: str | None, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        meta["resourceVersion"] = self._next_rv()
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", now_rfc3339())
        self.objects[rt.key][(namespace or "", meta["name"])] = obj
        return obj

    def _admit(self, rt: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
        """Mutating + validating admission for what this server knows: Secrets, CRDs' schemas."""
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        if rt.kind == "Secret" and "stringData" in obj:
            data = obj.setdefault("data", {}) or {}
            for key, value in obj.pop("stringData").items():
                data[key] = base64.b64encode(value.encode()).decode()
            obj["data"] = data
        if rt.kind == "ConfigMap":
            check_configmap_size(obj)
        if rt.custom:
            assert rt.schema is not None
            body = {k: v for k, v in obj.items() if k != "metadata"}
            pruned: list[str] = []
            body = schemas.prune(body, rt.schema, "", pruned)
            if pruned:
                self.pruned += [f"{rt.kind}/{obj['metadata'].get('name')}: {p}" for p in pruned]
            body = schemas.default(body, rt.schema)
            causes = schemas.validate({**body, "metadata": {}}, rt.schema)
            if old is not None:
                causes += schemas.transition_rules(body, old, rt.schema)
            if causes:
                name = obj["metadata"].get("name") or obj["metadata"].get("generateName", "")
                group = f".{rt.group}" if rt.group else ""
                detail = ", ".join(f"{f}: {m}" for f, m in causes)
                raise ApiError(422, "Invalid", f'{rt.kind}{group} "{name}" is invalid: {detail}', causes)
            obj = {"metadata": obj["metadata"], **body}
            obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        if rt.kind == "CustomResourceDefinition":
            for new_rt in from_crd(obj):
                self.register(new_rt)
            obj.setdefault("status", {})["conditions"] = [
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": ""}
            ]
            obj["status"]["acceptedNames"] = obj["spec"]["names"]
        return obj

    def create(self, rt: ResourceType, namespace: str | None, body: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise ApiError(
                    422, "Invalid", "metadata.name: Required value: name or generateName is required"
                )
            meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
        if rt.namespaced:
            namespace = namespace or meta.get("namespace")
            if not namespace:
                raise ApiError(400, "BadRequest", "the namespace of the object is required")
            if meta.get("namespace", namespace) != namespace:
                raise ApiError(400, "BadRequest", "the namespace of the object does not match the request")
            if not self._namespace_exists(namespace):
                raise ApiError(404, "NotFound", f'namespaces "{namespace}" not found')
            meta["namespace"] = namespace
        else:
            namespace = None
            meta.pop("namespace", None)
        if (namespace or "", meta["name"]) in self.objects[rt.key]:
            group = f".{rt.group}" if rt.group else ""
            raise ApiError(409, "AlreadyExists", f'{rt.plural}{group} "{meta["name"]}" already exists')
        for key in ("uid", "resourceVersion", "deletionTimestamp", "creationTimestamp"):
            meta.pop(key, None)
        meta["generation"] = 1
        if rt.status and rt.kind != "CustomResourceDefinition":
            obj.pop("status", None)
        obj = self._admit(rt, obj, None)
        obj = self._put(rt, namespace, obj)
        self._emit(rt, "ADDED", obj)
        return obj

    def update(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        new: dict[str, Any],
        subresource: str | None,
        precondition_rv: str | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Store a new version of an existing object. Returns (object, changed)."""
        old = self.get(rt, namespace, name)
        if precondition_rv and precondition_rv != old["metadata"]["resourceVersion"]:
            group = f".{rt.group}" if rt.group else ""
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {rt.plural}{group} "{name}": the object has been '
                "modified; please apply your changes to the latest version and try again",
            )
        new = copy.deepcopy(new)
        if new.get("metadata", {}).get("name", name) != name:
            raise ApiError(400, "BadRequest", "the name of the object does not match the name in the URL")
        if rt.status and subresource == "status":
            merged = copy.deepcopy(old)
            if "status" in new:
                merged["status"] = new["status"]
            else:
                merged.pop("status", None)
            new = merged
        elif rt.status:
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            else:
                new.pop("status", None)
        meta = new.setdefault("metadata", {})
        old_meta = old["metadata"]
        for key in ("uid", "creationTimestamp", "deletionTimestamp", "namespace", "generation", "name"):
            if key in old_meta:
                meta[key] = old_meta[key]
            else:
                meta.pop(key, None)
        if old_meta.get("deletionTimestamp") and set(meta.get("finalizers") or []) - set(
            old_meta.get("finalizers") or []
        ):
            raise ApiError(422, "Forbidden", "no new finalizers can be added if the object is being deleted")
        meta["resourceVersion"] = old_meta["resourceVersion"]
        if "managedFields" in old_meta and "managedFields" not in meta:
            meta["managedFields"] = old_meta["managedFields"]
        new = self._admit(rt, new, {k: v for k, v in old.items() if k != "metadata"})

        def content(o: dict[str, Any]) -> dict[str, Any]:
            return {k: v for k, v in o.items() if k not in ("metadata", "status")}

        if content(new) != content(old):
            meta["generation"] = old_meta.get("generation", 1) + 1
        if new == old:
            return old, False
        new = self._put(rt, namespace, new)
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self._remove(rt, namespace, name)
            return new, True
        self._emit(rt, "MODIFIED", new)
        return new, True

    def patch(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        content_type: str,
        body: Any,
        subresource: str | None,
        manager: str | None = None,
        force: bool = False,
    ) -> tuple[dict[str, Any], bool]:
        if content_type == "application/apply-patch+yaml":
            return self.apply(rt, namespace, name, body, subresource, manager, force)
        old = self.get(rt, namespace, name)
        if content_type == "application/json-patch+json":
            if not isinstance(body, list):
                raise ApiError(400, "BadRequest", "a JSON patch must be a list of operations")
            try:
                new = jsonpatch.JsonPatch(body).apply(old)
            except jsonpatch.JsonPatchTestFailed as exc:
                raise ApiError(
                    422, "Invalid", f"the server rejected our request: test failed: {exc}"
                ) from exc
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                raise ApiError(422, "Invalid", f"the server rejected our request: {exc}") from exc
        elif content_type in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            if content_type.startswith("application/strategic") and rt.custom:
                raise ApiError(
                    415, "UnsupportedMediaType", "strategic merge patch is not supported for custom resources"
                )
            if not isinstance(body, dict):
                raise ApiError(400, "BadRequest", "a merge patch must be a JSON object")
            new = merge_patch(old, body)
        else:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format: "
                f"accepted media types include: application/json-patch+json, "
                f"application/merge-patch+json, application/apply-patch+yaml ({content_type})",
            )
        precondition = (body.get("metadata") or {}).get("resourceVersion") if isinstance(body, dict) else None
        return self.update(rt, namespace, name, new, subresource, precondition)

    def apply(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        body: dict[str, Any],
        subresource: str | None,
        manager: str | None,
        force: bool,
    ) -> tuple[dict[str, Any], bool]:
        if not manager:
            raise ApiError(400, "BadRequest", "PATCH with apply requires a fieldManager")
        if (
            not isinstance(body, dict)
            or body.get("apiVersion") != rt.api_version
            or body.get("kind") != rt.kind
        ):
            raise ApiError(400, "BadRequest", f"apply needs apiVersion {rt.api_version} and kind {rt.kind}")
        if (body.get("metadata") or {}).get("name", name) != name:
            raise ApiError(400, "BadRequest", "the name of the object does not match the name in the URL")
        body = copy.deepcopy(body)
        if rt.status:
            body = {
                k: v
                for k, v in body.items()
                if (k == "status") == (subresource == "status") or k in ("apiVersion", "kind", "metadata")
            }
        key = (rt.group, rt.plural, namespace or "", name)
        current = self.objects[rt.key].get((namespace or "", name))
        try:
            result, owned = ssa.apply(current, body, manager, force, self.managed.get(key, {}))
        except ssa.Conflict as exc:
            causes = [(path, f'conflict with "{other}"') for other, path in exc.conflicts]
            raise ApiError(
                409,
                "Conflict",
                f"Apply failed with {len(causes)} conflicts: "
                + "; ".join(f"{m} using {f}" for f, m in causes),
                causes,
            ) from exc
        result.setdefault("metadata", {})["managedFields"] = [
            {
                "manager": m,
                "operation": "Apply",
                "apiVersion": rt.api_version,
                "fieldsType": "FieldsV1",
                "fieldsV1": ssa.fields_v1(p),
            }
            for m, p in sorted(owned.items())
        ]
        if current is None:
            obj = self.create(rt, namespace, result)
            self.managed[key] = owned
            return obj, True
        obj, changed = self.update(rt, namespace, name, result, subresource)
        if changed or owned != self.managed.get(key):
            self.managed[key] = owned
        return obj, changed

    def delete(
        self, rt: ResourceType, namespace: str | None, name: str, preconditions: dict[str, str] | None = None
    ) -> dict[str, Any]:
        obj = self.get(rt, namespace, name)
        meta = obj["metadata"]
        for key in ("uid", "resourceVersion"):
            wanted = (preconditions or {}).get(key)
            if wanted and wanted != meta.get(key):
                raise ApiError(
                    409,
                    "Conflict",
                    f"Precondition failed: {key} in precondition: {wanted}, in object meta: {meta.get(key)}",
                )
        if meta.get("finalizers"):
            if meta.get("deletionTimestamp"):
                return obj
            obj = copy.deepcopy(obj)
            obj["metadata"]["deletionTimestamp"] = now_rfc3339()
            obj["metadata"]["deletionGracePeriodSeconds"] = 0
            obj = self._put(rt, namespace, obj)
            self._emit(rt, "MODIFIED", obj)
            return obj
        return self._remove(rt, namespace, name)

    def _remove(self, rt: ResourceType, namespace: str | None, name: str) -> dict[str, Any]:
        obj = self.objects[rt.key].pop((namespace or "", name))
        self.managed.pop((rt.group, rt.plural, namespace or "", name), None)
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = self._next_rv()
        self._emit(rt, "DELETED", obj)
        if rt.kind == "Namespace":
            for other in list(self.types.values()):
                if other.namespaced:
                    for (ns, child), _ in list(self.objects[other.key].items()):
                        if ns == name and (ns, child) in self.objects[other.key]:
                            self.delete(other, ns, child)
        self._collect_garbage(obj["metadata"]["uid"])
        return obj

    def _live_uids(self) -> set[str]:
        return {o["metadata"]["uid"] for objs in self.objects.values() for o in objs.values()}

    def _collect_garbage(self, owner_uid: str) -> None:
        """Background cascading deletion: dependents whose every owner is gone are deleted."""
        live = self._live_uids()
        seen = set()
        for rt in list(self.types.values()):
            if rt.key in seen:
                continue
            seen.add(rt.key)
            for (ns, name), obj in list(self.objects[rt.key].items()):
                refs = obj["metadata"].get("ownerReferences") or []
                uids = {r.get("uid") for r in refs}
                if owner_uid in uids and not (uids & live) and (ns, name) in self.objects[rt.key]:
                    self.delete(rt, ns or None, name)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out
