"""Benchmarks cannot rot: every bench/*.py runs with --quick, finishes, and prints its figures.

Only that the figures are printed is checked, never their values: the benchmarks measure (ratios, per-unit
costs on a shared machine), the tests elsewhere assert behaviour. A new benchmark without a line here
fails `test_every_benchmark_has_a_smoke_run`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"

# benchmark -> a line it prints once it measured something (a figure follows the text)
FIGURES = {
    "board.py": r"boards sustained publishing every 5 s on this machine: \d+",
    "firmware.py": r"bytes allocated per chunk after warm-up: mean [\d.]+",
    "fleet.py": r"largest fleet sustained on this machine: \d+ boards",
    "ingest.py": r"headroom \(sustained rate / needed rate\).*: [\d.]+",
    "operator.py": r"(?m)^steady-state writes per sensor per hour: [\d.]+$",
    "otaflux.py": r"/version req/s.*\d",
    "render_scale.py": r"ratio \d+/\d+ \(total\): [\d.]+",
    "rollout.py": r"wave open -> updated, median, announcements off: [\d.]+ min",
}


def benchmarks() -> list[str]:
    return sorted(p.name for p in BENCH.glob("*.py") if not p.name.startswith("_"))


def test_every_benchmark_has_a_smoke_run() -> None:
    assert benchmarks() == sorted(FIGURES)


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", sorted(FIGURES))
def test_benchmark_quick_run_prints_its_figures(name: str, tmp_path: Path) -> None:
    # Run from an unrelated directory: a benchmark finds what it needs through the installed packages and
    # its own folder, not through the working directory.
    # ...and in the environment a person has, not the suite's: tests/operator sets short WEATHERFLEET_*
    # timers in this process at import, which the benchmark's operator would otherwise inherit (with a 5 s
    # status refresh the steady state never settles and the run waits out its timeout)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WEATHERFLEET_", "KUBECONFIG"))}
    proc = subprocess.run(
        [sys.executable, str(BENCH / name), "--quick"],
        capture_output=True,
        text=True,
        timeout=840,
        cwd=tmp_path,
        env=env,
    )
    output = f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, output
    assert re.search(FIGURES[name], proc.stdout), output
