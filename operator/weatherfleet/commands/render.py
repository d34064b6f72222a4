"""`weatherfleet render DIR`: every child of the CRs in DIR, as multi-document YAML on stdout.

The hydrated manifests a GitOps pipeline can commit or an Argo CD config-management plugin can serve. On
bad input it prints one line per problem to stderr, naming the file, the document (1-based) and the
field, prints nothing on stdout, and exits 1. Secrets are never printed (see reconcilers.hydrate).
"""

from __future__ import annotations

import argparse
import gc
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .. import GROUP
from ..models import KINDS
from ..models.common import validation_messages
from ..reconcilers.hydrate import Resources, consistency_problems, hydrate, warnings
from ..reconcilers.yamltext import dump_all

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# kustomize's own files sit beside the CRs in a GitOps folder; they are not resources.
_KUSTOMIZE_FILES = {"kustomization.yaml", "kustomization.yml", "Kustomization"}


@dataclass
class Problem:
    file: Path
    document: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = str(self.file) + (f": document {self.document}" if self.document is not None else "")
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class InvalidResources(Exception):
    def __init__(self, problems: list[Problem | str]) -> None:
        super().__init__(f"{len(problems)} problems")
        self.problems = problems


def resource_files(folder: Path) -> list[Path]:
    """YAML files below `folder`, in a stable order, without kustomize's own files and without hidden
    files or folders (`.git`, editor backups)."""
    files = [
        p
        for p in folder.rglob("*")
        if p.suffix in (".yaml", ".yml")
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ]
    return sorted(p for p in files if p.name not in _KUSTOMIZE_FILES)


def _documents(path: Path) -> tuple[list[Any], list[Problem]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [], [Problem(path, None, "", f"cannot read: {exc}")]
    docs: list[Any] = []
    try:
        docs.extend(yaml.load_all(text, Loader=_Loader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        return [], [Problem(path, len(docs) + 1, "", f"not valid YAML{line}: {problem}")]
    return docs, []


def load_resources(folder: Path) -> tuple[Resources, int]:
    """Parse and validate every weatherfleet resource below `folder`. Returns the resources and the number
    of documents skipped (other API groups); raises InvalidResources listing every problem found."""
    if not folder.is_dir():
        raise InvalidResources([Problem(folder, None, "", "not a directory")])
    resources = Resources()
    problems: list[Problem | str] = []
    skipped = 0
    for path in resource_files(folder):
        docs, bad = _documents(path)
        problems += bad
        for index, doc in enumerate(docs, start=1):
            if doc is None:
                continue
            if not isinstance(doc, dict):
                problems.append(Problem(path, index, "", f"expected a mapping, got {type(doc).__name__}"))
                continue
            api_version, kind = doc.get("apiVersion"), doc.get("kind")
            if not isinstance(api_version, str) or not api_version:
                problems.append(Problem(path, index, "apiVersion", "required field is missing"))
                continue
            if api_version.split("/")[0] != GROUP:
                skipped += 1
                continue
            if kind not in KINDS:
                problems.append(
                    Problem(path, index, "kind", f"{kind!r} is not one of {', '.join(sorted(KINDS))}")
                )
                continue
            try:
                obj = KINDS[kind].model_validate(doc)
            except ValidationError as exc:
                name = (
                    (doc.get("metadata") or {}).get("name") if isinstance(doc.get("metadata"), dict) else None
                )
                label = f"{kind} {name}" if name else kind
                for field, message in validation_messages(exc):
                    problems.append(Problem(path, index, field, f"{message} ({label})"))
                continue
            {"WeatherSensor": resources.sensors, "SensorFleet": resources.fleets,
             "FirmwareRelease": resources.releases}[kind].append(obj)  # fmt: skip
    if not problems:
        problems += consistency_problems(resources)
    if problems:
        raise InvalidResources(problems)
    return resources, skipped


def render(folder: Path, now: datetime, plan_namespace: str) -> tuple[str, list[str]]:
    """The YAML stream for `folder` and the warnings to print; raises InvalidResources.

    The cyclic garbage collector is paused meanwhile: rendering builds large trees without cycles, and
    for 10,000 sensors the collector's repeated scans of them cost a quarter of the time."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        resources, _ = load_resources(folder)
        return dump_all(hydrate(resources, now, plan_namespace)), warnings(resources)
    finally:
        if was_enabled:
            gc.enable()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", type=Path, metavar="DIR", help="folder with WeatherSensor, SensorFleet and "
                        "FirmwareRelease YAML (searched recursively; multi-document files are fine)")  # fmt: skip
    parser.add_argument("--plan-namespace", default="weatherfleet",
                        help="namespace of the rollout plan ConfigMap (the operator's; default weatherfleet)")  # fmt: skip
    parser.add_argument("--now", type=datetime.fromisoformat, default=None,
                        help="evaluate rollout bake times at this ISO time instead of the current time")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    now = args.now or datetime.now(UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    try:
        text, notes = render(args.dir, now, args.plan_namespace)
    except InvalidResources as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        print(
            f"weatherfleet render: {len(exc.problems)} problem(s) in {args.dir}; nothing rendered",
            file=sys.stderr,
        )
        return 1
    for note in notes:
        print(f"warning: {note}", file=sys.stderr)
    sys.stdout.write(text)
    return 0
