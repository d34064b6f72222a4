"""The operator's writes to the Kubernetes API: server-side apply (field manager `weatherfleet`) that
skips objects already as desired, status merge patches, and Events. Synchronous (the `kubernetes`
package); the controller runs these calls in worker threads."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import logging
import os
import socket
import threading
from datetime import UTC, datetime
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException
from kubernetes.dynamic import DynamicClient

from .. import __version__
from ..reconcilers.common import FIELD_MANAGER
from . import metrics

log = logging.getLogger(__name__)
Object = dict[str, Any]
APPLIED_HASH = "weatherfleet.io/applied-hash"
# The replica (pod name, pid) is in the user agent, so audit logs tell replicas apart.
USER_AGENT = f"weatherfleet-operator/{__version__} ({socket.gethostname()}/{os.getpid()})"


def load_config() -> client.ApiClient:
    """In-cluster credentials when running in a pod, else $KUBECONFIG / ~/.kube/config."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    api = client.ApiClient()
    api.user_agent = USER_AGENT
    return api


def normalized(obj: Object) -> Object:
    """What the API server will store for this manifest: Secret stringData becomes base64 data, so a
    desired Secret compares equal to the live one."""
    obj = copy.deepcopy(obj)
    if obj.get("kind") == "Secret" and "stringData" in obj:
        data = obj.setdefault("data", {})
        for key, value in obj.pop("stringData").items():
            data[key] = base64.b64encode(value.encode()).decode()
    return obj


def contains(live: Any, desired: Any) -> bool:
    """Every field of `desired` has the same value in `live` (lists compare whole)."""
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(k in live and contains(live[k], v) for k, v in desired.items())
    return live == desired


def manifest_hash(obj: Object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def up_to_date(live: Object | None, desired: Object) -> bool:
    """The live object carries exactly what we last applied (hash; catches fields we stopped setting) and
    nobody changed it since (containment; catches drift)."""
    if live is None:
        return False
    annotations = (live.get("metadata") or {}).get("annotations") or {}
    wanted = (desired.get("metadata") or {}).get("annotations", {}).get(APPLIED_HASH)
    return annotations.get(APPLIED_HASH) == wanted and contains(live, desired)


class KubeClient:
    def __init__(self, api: client.ApiClient | None = None) -> None:
        self.api = api or load_config()
        self.dynamic = DynamicClient(self.api)
        self._resources: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()

    def resource(self, api_version: str, kind: str) -> Any:
        key = (api_version, kind)
        with self._lock:
            if key not in self._resources:
                self._resources[key] = self.dynamic.resources.get(api_version=api_version, kind=kind)
            return self._resources[key]

    # -- reads --
    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> Object | None:
        try:
            return self.resource(api_version, kind).get(name=name, namespace=namespace).to_dict()
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, api_version: str, kind: str, label_selector: str | None = None) -> list[Object]:
        """Every object of a kind in every namespace (one request), each with its kind and apiVersion."""
        found = self.resource(api_version, kind).get(label_selector=label_selector).to_dict()
        return [{**item, "apiVersion": api_version, "kind": kind} for item in found.get("items") or []]

    # -- writes --
    def apply(
        self, desired: Object, live: Object | None = None, manager: str = FIELD_MANAGER
    ) -> tuple[Object, bool]:
        """Server-side apply `desired` unless `live` is already as desired. Returns (object, wrote)."""
        obj = normalized(desired)
        meta = obj.setdefault("metadata", {})
        annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != APPLIED_HASH}
        meta["annotations"] = {**annotations, APPLIED_HASH: manifest_hash(obj)}
        if up_to_date(live, obj):
            return live, False  # type: ignore[return-value]
        kind = obj["kind"]
        result = self.resource(obj["apiVersion"], kind).server_side_apply(
            body=obj,
            name=meta["name"],
            namespace=meta.get("namespace"),
            field_manager=manager,
            force_conflicts=True,
        )
        metrics.API_WRITES.labels(kind=kind, verb="apply").inc()
        return result.to_dict(), True

    def apply_raw(self, obj: Object, manager: str) -> Object:
        """Apply without the skip logic or the hash annotation (partial objects such as a Deployment's
        pod-template annotation, or one key of the shared rollout plan under its own manager)."""
        result = self.resource(obj["apiVersion"], obj["kind"]).server_side_apply(
            body=obj,
            name=obj["metadata"]["name"],
            namespace=obj["metadata"].get("namespace"),
            field_manager=manager,
            force_conflicts=True,
        )
        metrics.API_WRITES.labels(kind=obj["kind"], verb="apply").inc()
        return result.to_dict()

    def delete(self, api_version: str, kind: str, namespace: str | None, name: str, uid: str) -> bool:
        """Delete exactly this object (uid precondition: never a newer one of the same name)."""
        try:
            self.resource(api_version, kind).delete(
                name=name,
                namespace=namespace,
                body={"preconditions": {"uid": uid}, "propagationPolicy": "Background"},
            )
        except ApiException as exc:
            if exc.status in (404, 409):
                return False
            raise
        metrics.API_WRITES.labels(kind=kind, verb="delete").inc()
        return True

    def patch_status(self, api_version: str, kind: str, namespace: str, name: str, status: Object) -> Object:
        """Merge-patch the status subresource (None values remove fields, lists are replaced)."""
        resource = self.resource(api_version, kind)
        path = resource.path(name=name, namespace=namespace) + "/status"
        result = self.dynamic.request(
            "patch", path, body={"status": status}, content_type="application/merge-patch+json"
        )
        metrics.API_WRITES.labels(kind=kind, verb="patch-status").inc()
        return result.to_dict() if hasattr(result, "to_dict") else result

    def event(self, involved: Object, type_: str, reason: str, message: str) -> None:
        """A core/v1 Event on a resource, as `kubectl describe` shows them. Best effort: never raises."""
        meta = involved["metadata"]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta.get("namespace") or "default"},
            "involvedObject": {
                "apiVersion": involved["apiVersion"],
                "kind": involved["kind"],
                "name": meta["name"],
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": "weatherfleet-operator"},
            "reportingComponent": "weatherfleet-operator",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self.resource("v1", "Event").create(body=body, namespace=body["metadata"]["namespace"])
            metrics.API_WRITES.labels(kind="Event", verb="create").inc()
        except ApiException as exc:
            log.warning("could not post an event", extra={"reason": reason, "status": exc.status})
