"""Server-side printing, as kube-apiserver does it for custom resources: `kubectl get` asks for a
`meta.k8s.io/v1` Table and shows the CRD's additionalPrinterColumns (`-o wide` adds those with a priority
above 0). Only the JSONPath forms printer columns use are understood: `.a.b`, `[n]`, `[*]` and
`[?(@.field=="value")]`."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

_STEP = re.compile(
    r"\.([A-Za-z0-9_-]+)|\[(\*|-?\d+)\]|\[\?\(@\.([A-Za-z0-9_.-]+)\s*==\s*[\"']([^\"']*)[\"']\)\]"
)


def jsonpath(obj: Any, path: str) -> list[Any]:
    """Every value `path` selects in `obj` (an empty list when nothing matches)."""
    values = [obj]
    pos = 0
    path = path.strip()
    if path.startswith("{") and path.endswith("}"):
        path = path[1:-1]
    while pos < len(path):
        m = _STEP.match(path, pos)
        if m is None:
            raise ValueError(f"unsupported JSONPath {path!r} at {path[pos:]!r}")
        pos = m.end()
        key, index, filter_key, filter_value = m.groups()
        out: list[Any] = []
        for value in values:
            if key is not None:
                if isinstance(value, dict) and key in value:
                    out.append(value[key])
            elif index is not None:
                if isinstance(value, list):
                    if index == "*":
                        out.extend(value)
                    elif -len(value) <= int(index) < len(value):
                        out.append(value[int(index)])
            elif isinstance(value, list):
                for item in value:
                    found = jsonpath(item, "." + filter_key)
                    if found and str(found[0]) == filter_value:
                        out.append(item)
        values = out
    return values


def age(timestamp: str | None, now: datetime | None = None) -> str:
    """kubectl's short age: 45s, 12m, 3h5m, 2d4h, 400d."""
    if not timestamp:
        return "<unknown>"
    try:
        then = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return timestamp
    seconds = max(0, int(((now or datetime.now(UTC)) - then).total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if hours < 3:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if days < 2:
        return f"{hours}h"
    if days < 8:
        return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"
    return f"{days}d"


def _cell(obj: dict[str, Any], column: dict[str, Any]) -> Any:
    try:
        values = jsonpath(obj, column["jsonPath"])
    except ValueError:
        return "<error>"
    if not values:
        return None
    if column.get("type") == "date":
        return age(values[0]) if isinstance(values[0], str) else values[0]
    if len(values) == 1:
        return values[0]
    return ",".join(str(v) for v in values)


def table(
    objects: list[dict[str, Any]], columns: list[dict[str, Any]], resource_version: str, include_object: str
) -> dict[str, Any]:
    """The Table for these objects: Name, then the printer columns (or Created At without any)."""
    if not columns:
        columns = [{"name": "Created At", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]
    definitions = [
        {
            "name": "Name",
            "type": "string",
            "format": "name",
            "description": "Name of the resource",
            "priority": 0,
        }
    ] + [
        {
            "name": c["name"],
            "type": c.get("type", "string"),
            "format": c.get("format", ""),
            "description": c.get("description", ""),
            "priority": c.get("priority", 0),
        }
        for c in columns
    ]
    rows = []
    for obj in objects:
        row: dict[str, Any] = {"cells": [obj["metadata"]["name"], *(_cell(obj, c) for c in columns)]}
        if include_object == "Object":
            row["object"] = obj
        elif include_object != "None":
            row["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj["metadata"],
            }
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": definitions,
        "rows": rows,
    }


def wants_table(accept: str) -> bool:
    return any("as=Table" in part and "g=meta.k8s.io" in part for part in accept.split(","))
