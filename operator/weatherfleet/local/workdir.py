"""The local mode's working directory: where every service keeps its state, so `up` again resumes.

<workdir>/
  kubeconfig            for kubectl and the operator: the embedded API server
  apiserver/            the API server's objects (state.json, as etcd keeps them) and its serving certificate
  mounts/<pod>/<vol>/   ConfigMaps and Secrets as the processes read them (kubelet-style volumes)
  state.json            ports, the objects applied from the CR folder (written atomically)
  pids.json             processes of the running `up` (to clean up after a crash)
  signing/              the firmware signing key pair (Ed25519), made on first start
  mosquitto/            broker config, ACL, persistence, log
  registry/             docker-registry storage, or oci-layout/ for the embedded registry
  otaflux/              OtaFlux cache and log
  store/weather.sqlite  ingest's embedded store
  devices/<id>/         each emulated device's flash and filesystem
  firmware/             built bundles
  timeline.jsonl        rollout and OTA events, for the report
  logs/                 one log per process
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from pydantic import BaseModel, Field


class LocalState(BaseModel):
    """What survives a restart besides the services' own data."""

    ports: dict[str, int] = Field(default_factory=dict)
    applied: list[list] = Field(
        default_factory=list,
        description="[apiVersion, kind, namespace, name] of each CR applied from the folder",
    )


def write_atomically(path: Path, text: str) -> None:
    """Readers (OtaFlux polling the plan, a second `up`) never see a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class _Folder:
    """`workdir.<name>`: the folder <workdir>/<name>/, made on first use."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, workdir: Workdir, owner: type | None = None) -> Path:
        return workdir.folder(self.name)


class _File:
    """`workdir.<name>`: a file directly in the working directory."""

    def __init__(self, filename: str) -> None:
        self.filename = filename

    def __get__(self, workdir: Workdir, owner: type | None = None) -> Path:
        return workdir.root / self.filename


class Workdir:
    """The layout above: each folder made when it is first asked for."""

    signing = _Folder()
    mosquitto = _Folder()
    registry = _Folder()
    otaflux = _Folder()
    firmware = _Folder()
    logs = _Folder()
    timeline_path = _File("timeline.jsonl")
    pids_path = _File("pids.json")
    state_path = _File("state.json")

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def folder(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def store_path(self) -> Path:
        return self.folder("store") / "weather.sqlite"

    def device_dir(self, device_id: str) -> Path:
        return self.folder("devices") / device_id

    def load_state(self) -> LocalState:
        if not self.state_path.exists():
            return LocalState()
        try:
            return LocalState.model_validate_json(self.state_path.read_text())
        except ValueError as error:
            # a damaged state file must not lose the services' data: keep it aside and start afresh
            aside = self.state_path.with_suffix(".json.damaged")
            self.state_path.replace(aside)
            print(f"warning: {self.state_path} was unreadable ({error.__class__.__name__}); kept as {aside}")
            return LocalState()

    def save_state(self, state: LocalState) -> None:
        write_atomically(self.state_path, state.model_dump_json(by_alias=True, indent=2))

    def read_pids(self) -> dict[str, int]:
        try:
            return {k: int(v) for k, v in json.loads(self.pids_path.read_text()).items()}
        except (OSError, ValueError):
            return {}

    def write_pids(self, pids: dict[str, int]) -> None:
        write_atomically(self.pids_path, json.dumps(pids, indent=2, sort_keys=True))
