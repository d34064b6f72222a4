"""What etcd is to kube-apiserver, in one file: the store's objects, their field managers and the
resourceVersion counter, saved as JSON (written atomically, mode 0600: Secrets are in it) and loaded back,
so a restarted local system finds every object, status and Secret where it left them.

Watch history is not kept: a client that resumes a watch from before the restart gets 410 Gone and lists
again, as after an etcd compaction."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .resources import from_crd
from .store import Store

FORMAT = 1


def snapshot(store: Store) -> dict[str, Any]:
    """The store as plain JSON data (call it on the server's loop: the store is single-threaded)."""
    return {
        "format": FORMAT,
        "resourceVersion": store.rv,
        "objects": [
            {"resource": list(key), "object": obj}
            for key, objects in store.objects.items()
            for obj in objects.values()
        ],
        "managed": [
            {"key": list(key), "managers": {m: sorted(list(p) for p in paths) for m, paths in owned.items()}}
            for key, owned in store.managed.items()
        ],
    }


def restore(data: dict[str, Any], history: int = 100_000) -> Store:
    """A store holding exactly what `snapshot` saved (CRDs first, so their kinds are served again)."""
    if data.get("format") != FORMAT:
        raise ValueError(f"unknown API server state format {data.get('format')!r}")
    store = Store(history=history)
    entries = [(tuple(e["resource"]), e["object"]) for e in data.get("objects") or []]
    for key, obj in entries:
        if key == ("apiextensions.k8s.io", "customresourcedefinitions"):
            for rt in from_crd(obj):
                store.register(rt)
    for key in store.objects:
        store.objects[key] = {}
    for key, obj in entries:
        if key not in store.objects:
            continue  # its CRD is gone
        meta = obj["metadata"]
        store.objects[key][(meta.get("namespace") or "", meta["name"])] = obj
    for entry in data.get("managed") or []:
        store.managed[tuple(entry["key"])] = {
            manager: {tuple(p) for p in paths} for manager, paths in entry["managers"].items()
        }
    store.rv = max(int(data.get("resourceVersion") or 1), store.rv)
    store.compacted_rv = store.rv
    return store


def save(store: Store, path: Path) -> None:
    """Write the snapshot atomically (a crash mid-write leaves the previous file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(snapshot(store), out, separators=(",", ":"))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: Path) -> Store | None:
    """The saved store, or None when there is no file yet."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    return restore(json.loads(text))
