"""The objects the operator watches, as last seen on the watch streams (and as returned by our own
writes, so a reconcile right after a write does not compare against a stale copy)."""

from __future__ import annotations

import threading
from typing import Any

Object = dict[str, Any]


def _rv(obj: Object) -> int:
    try:
        return int(obj["metadata"].get("resourceVersion") or 0)
    except (TypeError, ValueError):
        return 0


class ObjectCache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._objects: dict[tuple[str, str, str], Object] = {}

    def put(self, obj: Object) -> None:
        key = (obj["kind"], obj["metadata"].get("namespace") or "", obj["metadata"]["name"])
        with self._lock:
            old = self._objects.get(key)
            # Watch events and write responses race; keep the newer resourceVersion (numeric in
            # practice, and only compared for ordering between copies of the same object).
            if old is None or _rv(obj) >= _rv(old):
                self._objects[key] = obj

    def remove(self, kind: str, namespace: str | None, name: str) -> None:
        with self._lock:
            self._objects.pop((kind, namespace or "", name), None)

    def get(self, kind: str, namespace: str | None, name: str) -> Object | None:
        with self._lock:
            return self._objects.get((kind, namespace or "", name))

    def list(self, kind: str, namespace: str | None = None) -> list[Object]:
        with self._lock:
            return [
                o
                for (k, ns, _), o in sorted(self._objects.items())
                if k == kind and (namespace is None or ns == namespace)
            ]
