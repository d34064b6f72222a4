"""`weatherfleet render DIR`: every child of the CRs in DIR, as multi-document YAML on stdout.

The hydrated manifests a GitOps pipeline can commit or an Argo CD config-management plugin can serve. On
bad input it prints one line per problem to stderr, naming the file, the document (1-based) and the
field, prints nothing on stdout, and exits 1. Secrets are never printed (see reconcilers.hydrate).
"""

from __future__ import annotations

import argparse
import gc
import sys
from datetime import UTC, datetime
from pathlib import Path

import yaml

from ..crfiles import InvalidResources, load_resources
from ..reconcilers.hydrate import hydrate, warnings
from ..reconcilers.yamltext import dump_all


def render(
    folder: Path, now: datetime, plan_namespace: str, previous: Path | None = None
) -> tuple[str, list[str]]:
    """The YAML stream for `folder` and the warnings to print; raises InvalidResources. `previous`: the
    output of the previous render (what is deployed), from which alert rules gone since are deleted.

    The cyclic garbage collector is paused meanwhile: rendering builds large trees without cycles, and
    for 10,000 sensors the collector's repeated scans of them cost a quarter of the time."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        resources, _ = load_resources(folder)
        before = previous_output(previous) if previous is not None else None
        return dump_all(hydrate(resources, now, plan_namespace, before)), warnings(resources)
    finally:
        if was_enabled:
            gc.enable()


def previous_output(path: Path) -> list[dict]:
    """The objects of an earlier render (a YAML stream; a missing file is an empty one: the first render)."""
    if not path.exists():
        return []
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    docs = yaml.load_all(path.read_text(), Loader=loader)  # a safe loader: C when available
    return [doc for doc in docs if isinstance(doc, dict) and "kind" in doc]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", type=Path, metavar="DIR", help="folder with WeatherSensor, SensorFleet and "
                        "FirmwareRelease YAML (searched recursively; multi-document files are fine)")  # fmt: skip
    parser.add_argument("--plan-namespace", default="weatherfleet",
                        help="namespace of the rollout plan ConfigMap (the operator's; default weatherfleet)")  # fmt: skip
    parser.add_argument("--previous", type=Path, default=None, metavar="FILE",
                        help="the previous render's output (what is deployed): alert rules of sensors and fleets "
                        "gone since are deleted in Grafana (deleteRules); a missing FILE counts as empty")  # fmt: skip
    parser.add_argument("--now", type=datetime.fromisoformat, default=None,
                        help="evaluate rollout bake times at this ISO time instead of the current time")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    now = args.now or datetime.now(UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    try:
        text, notes = render(args.dir, now, args.plan_namespace, args.previous)
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
