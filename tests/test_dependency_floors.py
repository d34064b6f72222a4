"""The lowest version pyproject.toml allows of a dependency is one the project runs with: pip may resolve
exactly that version (a constraints file, an older mirror, another package's upper bound), and names that
arrived later fail at import or call time.

Each floor is installed (the package alone, `pip install --no-deps --target`) and the project's own code
that uses it runs against it: every name imported from it, and the tests of that code."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# distribution -> (the project's modules that use it, the tests that exercise them)
FLOORS = {
    "influxdb3-python": (
        ["operator/weatherfleet/ingest/influx_store.py"],
        ["tests/ingest/test_influx_store.py"],
    ),
    "zstandard": (["otaflux/firmware.py"], ["tests/otaflux/test_zstd.py"]),
}


def floor(distribution: str) -> str:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in deps:
        match = re.fullmatch(rf"{re.escape(distribution)}\s*>=\s*([0-9][0-9.]*)(,.*)?", dep.strip())
        if match:
            return match.group(1)
    raise AssertionError(f"{distribution} has no >= floor in pyproject.toml")


def imported_names(module: Path, top: str) -> list[str]:
    """`from <top>[.x] import a, b` in the module -> ["<top>[.x].a", ...]; after `import <top>`, every
    `<top>.name` the module uses -> ["<top>.name", ...]."""
    names = []
    tree = ast.parse(module.read_text())
    imported = False
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == top:
            names += [f"{node.module}.{alias.name}" for alias in node.names]
        if isinstance(node, ast.Import) and any(a.name == top and a.asname is None for a in node.names):
            imported = True
    if imported:
        names += sorted(
            {
                f"{top}.{node.attr}"
                for node in ast.walk(tree)
                if isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == top
            }
        )
    return names


@pytest.mark.parametrize("distribution", sorted(FLOORS))
def test_the_lowest_allowed_version_runs_the_project(distribution: str, tmp_path: Path) -> None:
    version = floor(distribution)
    target = tmp_path / "floor"
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
         f"{distribution}=={version}"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert pip.returncode == 0, pip.stderr
    modules, tests = FLOORS[distribution]
    top = next(
        p.name
        for p in sorted(target.iterdir())
        if p.is_dir() and (p / "__init__.py").exists() and not p.name.endswith(".dist-info")
    )
    names = [n for m in modules for n in imported_names(REPO / m, top)]
    assert names, f"the project imports nothing from {top}?"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])}
    probe = "; ".join(
        [f"import importlib, {top}", f"assert {top}.__file__.startswith({str(target)!r}), {top}.__file__"]
        + [
            f"getattr(importlib.import_module({n.rsplit('.', 1)[0]!r}), {n.rsplit('.', 1)[1]!r})"
            for n in names
        ]
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, (
        f"{distribution}=={version} lacks a name the project uses:\n{result.stderr}"
    )
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
        env=env, cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert run.returncode == 0, f"with {distribution}=={version}:\n{run.stdout[-3000:]}"
