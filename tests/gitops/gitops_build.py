"""Build the kustomizations under gitops/ offline and load what they produce."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
GITOPS = REPO / "gitops"
CRDS = REPO / "crds"
SHARED_SCHEMAS = REPO.parent / "shared" / "schemas"
KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")

# A proxy that refuses every connection: any remote base, remote resource or Helm chart pulled at build
# time fails the build instead of quietly reaching the network.
OFFLINE_ENV = {
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "http_proxy": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "NO_PROXY": "",
    "no_proxy": "",
}


class BuildError(Exception):
    pass


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        raise BuildError("kubectl is not on PATH: install it (it bundles kustomize) to build gitops/")
    return path


def kustomization_dirs() -> list[Path]:
    """Every directory under gitops/ that holds a kustomization."""
    found = {p.parent for name in KUSTOMIZATION_FILES for p in GITOPS.rglob(name)}
    return sorted(found)


@cache
def build_text(directory: Path) -> str:
    result = subprocess.run(
        [kubectl(), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        env={**os.environ, **OFFLINE_ENV},
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        shown = directory.relative_to(REPO) if directory.is_relative_to(REPO) else directory
        raise BuildError(f"kubectl kustomize {shown} failed:\n{result.stderr.strip()}")
    return result.stdout


def build(directory: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(build_text(directory)) if doc]


def key(obj: dict) -> tuple[str, str, str]:
    return obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


def find(objects: list[dict], kind: str, name: str) -> dict:
    """The one object of this kind whose name is `name` or, for generated ConfigMaps, `name-<hash>`."""
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    if not matches and kind in {"ConfigMap", "Secret"}:
        matches = [
            o
            for o in objects
            if o["kind"] == kind and re.fullmatch(re.escape(name) + r"-[a-z0-9]{10}", o["metadata"]["name"])
        ]
    if len(matches) != 1:
        raise LookupError(f"expected one {kind} {name}, found {len(matches)}")
    return matches[0]
