"""The kubelet's part for the local processes: ConfigMap and Secret volumes. Each volume is a folder that
holds the object's keys as files, written the way the kubelet writes them (a timestamped folder, a
`..data` symlink swapped atomically, one symlink per key), so a reader such as OtaFlux sees either the old
or the new set of files, never half of each. Volumes are re-synced every `poll_seconds`; a callback runs
when one changed (the local broker reloads its ACL on it, as a config-reloader sidecar would).

What differs from a kubelet: files are re-synced within a second rather than within a minute, and Secret
files are 0600 (one local user) instead of the pod's defaultMode."""

from __future__ import annotations

import base64
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from kubernetes import client
from kubernetes.client.rest import ApiException

log = logging.getLogger(__name__)
DATA = "..data"


@dataclass
class Volume:
    kind: Literal["ConfigMap", "Secret"]
    namespace: str
    name: str
    directory: Path
    items: dict[str, str] | None = None  # key -> path in the folder; None: every key under its own name
    optional: bool = False
    on_change: Callable[[Volume], None] | None = None
    content: dict[str, bytes] | None = field(default=None, repr=False)  # what the folder holds now

    @property
    def ready(self) -> bool:
        return self.content is not None

    def path(self, key: str) -> Path:
        return self.directory / ((self.items or {}).get(key) or key)


def _files(volume: Volume, obj: dict | None) -> dict[str, bytes] | None:
    if obj is None:
        return {} if volume.optional else None
    if volume.kind == "Secret":
        data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
    else:
        data = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
        data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
    if volume.items is not None:
        missing = [k for k in volume.items if k not in data]
        if missing and not volume.optional:
            return None
        return {volume.items[k]: data[k] for k in volume.items if k in data}
    return data


def write_atomically(directory: Path, files: dict[str, bytes], mode: int) -> None:
    """kubelet's AtomicWriter: the new set of files in a fresh timestamped folder, `..data` pointed at it
    with one rename, a symlink per top-level entry, then the old folder removed."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = "..{}".format(datetime.now(UTC).strftime("%Y_%m_%d_%H_%M_%S.%f"))
    target = directory / stamp
    target.mkdir()
    for relative, content in files.items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(content)
    old = os.readlink(directory / DATA) if (directory / DATA).is_symlink() else None
    tmp_link = directory / "..data_tmp"
    tmp_link.unlink(missing_ok=True)
    os.symlink(stamp, tmp_link)
    os.replace(tmp_link, directory / DATA)
    tops = {Path(relative).parts[0] for relative in files}
    for top in tops:
        link = directory / top
        if not link.is_symlink():
            if link.exists():
                continue  # never replace a real file someone put there
            os.symlink(f"{DATA}/{top}", link)
    for entry in directory.iterdir():
        if entry.is_symlink() and entry.name not in tops and not entry.name.startswith(".."):
            entry.unlink()  # a key that went away
    if old and old != stamp:
        _remove_tree(directory / old)


def _remove_tree(path: Path) -> None:
    if not path.exists():
        return
    for child in sorted(path.rglob("*"), reverse=True):
        child.rmdir() if child.is_dir() and not child.is_symlink() else child.unlink()
    path.rmdir()


class VolumeSync:
    """Keeps every added Volume's folder equal to its object; thread-safe to add volumes while running."""

    def __init__(self, api: client.ApiClient, poll_seconds: float = 0.5) -> None:
        self.core = client.CoreV1Api(api)
        self.api = api
        self.poll_seconds = poll_seconds
        self.volumes: list[Volume] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, volume: Volume) -> Volume:
        with self._lock:
            self.volumes.append(volume)
        self.sync(volume)
        return volume

    def _read(self, volume: Volume) -> dict | None:
        try:
            if volume.kind == "Secret":
                obj = self.core.read_namespaced_secret(volume.name, volume.namespace)
            else:
                obj = self.core.read_namespaced_config_map(volume.name, volume.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return self.api.sanitize_for_serialization(obj)

    def sync(self, volume: Volume) -> bool:
        """Bring one folder up to date; True when its files changed."""
        files = _files(volume, self._read(volume))
        if files is None or files == volume.content:
            return False
        write_atomically(volume.directory, files, 0o600 if volume.kind == "Secret" else 0o644)
        first = volume.content is None
        volume.content = files
        log.info(
            "volume %s %s/%s %s", volume.kind, volume.namespace, volume.name, "ready" if first else "updated"
        )
        if volume.on_change is not None:
            try:
                volume.on_change(volume)
            except Exception:
                log.exception("reacting to a change of %s/%s failed", volume.namespace, volume.name)
        return True

    def sync_all(self) -> None:
        with self._lock:
            volumes = list(self.volumes)
        for volume in volumes:
            try:
                self.sync(volume)
            except (ApiException, OSError) as exc:
                log.warning("volume %s/%s not synced: %s", volume.namespace, volume.name, exc)

    def wait(self, volume: Volume, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not volume.ready and time.monotonic() < deadline:
            time.sleep(0.1)
            if self._thread is None:
                self.sync(volume)
        return volume.ready

    def start(self) -> VolumeSync:
        self._thread = threading.Thread(target=self._run, name="kubelet-volumes", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            self.sync_all()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
