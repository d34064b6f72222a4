"""The layout works without path tricks: the design card's folders are the packages, nothing at the
repository root shadows one, and a plain (non-editable) install carries everything it needs."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _setuptools() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]


def test_every_package_folder_is_listed_in_pyproject():
    config = _setuptools()
    roots = config["package-dir"]
    listed = set(config["packages"])
    found = set()
    for name, folder in roots.items():
        for init in (REPO / folder).rglob("__init__.py"):
            if "__pycache__" in init.parts:
                continue
            relative = init.parent.relative_to(REPO / folder).parts
            found.add(".".join((name, *relative)))
    missing = found - listed
    assert not missing, f"package folders not in pyproject's [tool.setuptools] packages: {sorted(missing)}"
    assert listed <= found, f"listed but absent: {sorted(listed - found)}"


def test_repository_root_imports_the_real_packages():
    # sys.path[0] is the working directory for `python -c`: the root's otaflux/ must be the package itself
    code = "import otaflux, otaflux.server, weatherfleet.firmware.build as b; print(otaflux.__file__, b.DEFAULT_SOURCE)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    package, sources = out.stdout.split()
    assert Path(package) == REPO / "otaflux" / "__init__.py"
    assert (Path(sources) / "boot.py").is_file()


@pytest.mark.slow
def test_plain_install_runs_from_an_empty_directory(tmp_path):
    """`pip install .` (a wheel, not editable) carries the OtaFlux package and the device sources."""
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(REPO)],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    # the wheel's copy comes first on the path, ahead of the development install's finder
    env = {**os.environ, "PYTHONPATH": str(target)}
    help_text = subprocess.run(
        [sys.executable, "-m", "otaflux", "--help"], cwd=empty, env=env, capture_output=True, text=True
    )
    assert help_text.returncode == 0, help_text.stderr
    assert "usage: otaflux" in help_text.stdout
    out = empty / "bundle"
    build = subprocess.run(
        [sys.executable, "-m", "weatherfleet", "firmware", "build", "--features", "bme280,influx",
         "--version", "1.0.0", "--out", str(out)],
        cwd=empty, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    where = subprocess.run(
        [sys.executable, "-c", "import weatherfleet.firmware.build as b; print(b.DEFAULT_SOURCE)"],
        cwd=empty, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert Path(where.stdout.strip()).is_relative_to(target)
    manifest = (out / "manifest.json").read_text()
    assert "bme280.mpy" in manifest and "__init__" not in manifest
