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


class ObjectCache:
    """kind -> namespace -> name -> object; reads are by kind and namespace, so that is the index."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._objects: dict[str, dict[str, dict[str, Object]]] = {}

    def put(self, obj: Object) -> None:
        meta = obj["metadata"]
        with self._lock:
            names = self._objects.setdefault(obj["kind"], {}).setdefault(meta.get("namespace") or "", {})
            old = names.get(meta["name"])
            # Watch events and write responses race; keep the newer resourceVersion (numeric in
            # practice, and only compared between copies of the same object).
            if old is None or resource_version(obj) >= resource_version(old):
                names[meta["name"]] = obj

    def remove(self, kind: str, namespace: str | None, name: str) -> None:
        with self._lock:
            self._objects.get(kind, {}).get(namespace or "", {}).pop(name, None)

    def get(self, kind: str, namespace: str | None, name: str) -> Object | None:
        with self._lock:
            return self._objects.get(kind, {}).get(namespace or "", {}).get(name)

    def list(self, kind: str, namespace: str | None = None) -> list[Object]:
        with self._lock:
            spaces = self._objects.get(kind, {})
            chosen = [spaces.get(namespace or "", {})] if namespace is not None else list(spaces.values())
            return [o for names in chosen for _, o in sorted(names.items())]
