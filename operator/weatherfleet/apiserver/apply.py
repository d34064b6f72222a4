"""Server-side apply, a faithful-enough subset: field ownership per apply manager, conflicts, removal of
fields a manager stopped applying, and `force` to take ownership. Lists are atomic (as `x-kubernetes-
list-type: atomic`); real servers merge `map`/`set` lists item by item."""

from __future__ import annotations

import copy
from typing import Any

Path = tuple[str, ...]
IDENTITY: set[Path] = {("apiVersion",), ("kind",), ("metadata", "name"), ("metadata", "namespace")}


def leaves(obj: Any, prefix: Path = ()) -> set[Path]:
    if isinstance(obj, dict) and obj:
        out: set[Path] = set()
        for key, value in obj.items():
            out |= leaves(value, (*prefix, key))
        return out
    return {prefix} if prefix else set()


_MISSING = object()


def get_path(obj: Any, path: Path) -> Any:
    for part in path:
        if not isinstance(obj, dict) or part not in obj:
            return _MISSING
        obj = obj[part]
    return obj


def remove_path(obj: dict[str, Any], path: Path) -> None:
    """Remove a leaf and the maps it leaves empty behind (as the applier created them)."""
    parents = []
    node: Any = obj
    for part in path[:-1]:
        if not isinstance(node, dict) or part not in node:
            return
        parents.append((node, part))
        node = node[part]
    if isinstance(node, dict):
        node.pop(path[-1], None)
    for parent, part in reversed(parents):
        if parent[part] == {} and len(parents) > 1:
            del parent[part]
        else:
            break


def merge(base: Any, applied: Any) -> Any:
    if isinstance(base, dict) and isinstance(applied, dict):
        out = dict(base)
        for key, value in applied.items():
            out[key] = merge(base.get(key), value)
        return out
    return copy.deepcopy(applied)


class Conflict(Exception):
    def __init__(self, conflicts: list[tuple[str, str]]) -> None:
        super().__init__(conflicts)
        self.conflicts = conflicts


def apply(
    current: dict[str, Any] | None,
    applied: dict[str, Any],
    manager: str,
    force: bool,
    managed: dict[str, set[Path]],
) -> tuple[dict[str, Any], dict[str, set[Path]]]:
    """The object after `manager` applies `applied`, and the new ownership map. Raises Conflict."""
    new_paths = leaves(applied) - IDENTITY
    managed = {m: set(p) for m, p in managed.items()}
    current = current or {}
    conflicts = []
    for other, paths in managed.items():
        if other == manager:
            continue
        for path in sorted(paths & new_paths):
            if get_path(current, path) != get_path(applied, path):
                if force:
                    paths.discard(path)
                else:
                    conflicts.append((other, ".".join(path)))
    if conflicts:
        raise Conflict(conflicts)
    others: set[Path] = set().union(*(p for m, p in managed.items() if m != manager))
    result = copy.deepcopy(current)
    for path in sorted(managed.get(manager, set()) - new_paths - others, key=len, reverse=True):
        remove_path(result, path)
    result = merge(result, applied)
    managed[manager] = new_paths
    return result, {m: p for m, p in managed.items() if p}


def fields_v1(paths: set[Path]) -> dict[str, Any]:
    """Ownership in the wire format of metadata.managedFields[].fieldsV1."""
    root: dict[str, Any] = {}
    for path in paths:
        node = root
        for part in path:
            node = node.setdefault(f"f:{part}", {})
    return root
