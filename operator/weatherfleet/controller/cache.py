"""The objects the operator watches, as last seen on the watch streams (and as returned by our own
writes, so a reconcile right after a write does not compare against a stale copy)."""

from __future__ import annotations

import threading
from typing import Any

Object = dict[str, Any]


def resource_version(obj: Object | None) -> int:
    try:
        return int((obj or {}).get("metadata", {}).get("resourceVersion") or 0)
    except (TypeError, ValueError):
        return 0


def controller_uid(obj: Object) -> str | None:
    """The uid of the object's controller (its owner reference with controller: true), if any."""
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return ref.get("uid")
    return None


class ObjectCache:
    """kind -> namespace -> name -> object; reads are by kind and namespace, so that is the index, plus
    one by controller uid (the children of one resource, without going through all of a namespace's)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._objects: dict[str, dict[str, dict[str, Object]]] = {}
        self._owned: dict[str, set[tuple[str, str, str]]] = {}

    def put(self, obj: Object) -> None:
        meta = obj["metadata"]
        with self._lock:
            names = self._objects.setdefault(obj["kind"], {}).setdefault(meta.get("namespace") or "", {})
            old = names.get(meta["name"])
            # Watch events and write responses race; keep the newer resourceVersion (numeric in
            # practice, and only compared between copies of the same object).
            if old is None or resource_version(obj) >= resource_version(old):
                names[meta["name"]] = obj
                key = (obj["kind"], meta.get("namespace") or "", meta["name"])
                self._unindex(old, key)
                uid = controller_uid(obj)
                if uid:
                    self._owned.setdefault(uid, set()).add(key)

    def _unindex(self, old: Object | None, key: tuple[str, str, str]) -> None:
        uid = controller_uid(old) if old else None
        if uid and uid in self._owned:
            self._owned[uid].discard(key)
            if not self._owned[uid]:
                del self._owned[uid]

    def remove(self, kind: str, namespace: str | None, name: str) -> None:
        with self._lock:
            old = self._objects.get(kind, {}).get(namespace or "", {}).pop(name, None)
            self._unindex(old, (kind, namespace or "", name))

    def owned_by(self, uid: str) -> list[Object]:
        """The cached objects whose controller is the resource with this uid."""
        with self._lock:
            keys = sorted(self._owned.get(uid, ()))
            return [o for kind, ns, name in keys if (o := self._objects.get(kind, {}).get(ns, {}).get(name))]

    def get(self, kind: str, namespace: str | None, name: str) -> Object | None:
        with self._lock:
            return self._objects.get(kind, {}).get(namespace or "", {}).get(name)

    def list(self, kind: str, namespace: str | None = None) -> list[Object]:
        with self._lock:
            spaces = self._objects.get(kind, {})
            chosen = [spaces.get(namespace or "", {})] if namespace is not None else list(spaces.values())
            return [o for names in chosen for _, o in sorted(names.items())]
