"""Reading a folder of CR files: the desired state for `weatherfleet render` and for the local mode.

Every YAML file below the folder (multi-document; kustomize's own files and hidden paths skipped) is
parsed; weatherfleet resources are validated with the models, other API groups are counted and skipped.
Every problem is collected with the file, the document (1-based) and the field, never only the first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from . import GROUP
from .models import KINDS
from .models.common import validation_messages
from .reconcilers.hydrate import Resources, consistency_problems

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
