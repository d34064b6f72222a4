"""The shortened demo in the suite: every check of the story holds (exit code 0), and its report renders
in headless Chromium with the measurement charts and the rollout timeline (screenshot kept)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from .chromium import render
from .processes import processes_of

pytestmark = pytest.mark.slow


def test_the_shortened_demo_holds_and_its_report_renders(tmp_path, artifacts_dir):
    workdir = tmp_path / "demo"
    report = artifacts_dir / "demo-report.html"
    result = subprocess.run(
        [sys.executable, "-m", "weatherfleet.cli", "demo", "--fast", "--workdir", str(workdir), "--report", str(report)],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    output = result.stdout + result.stderr
    (artifacts_dir / "demo-output.txt").write_text(output)
    assert result.returncode == 0, output[-5000:]
    assert "the story held" in output
    assert processes_of(workdir) == [], "the demo left processes behind"

    dom = render(report, artifacts_dir / "demo-report.png", tmp_path / "profile", size="1200,3000")
    checks = re.findall(r'<tr class="check (ok|fail)"><td>([^<]+)</td>', dom)
    assert len(checks) >= 12 and all(state == "ok" for state, _ in checks), checks
    names = " | ".join(name for _, name in checks)
    for expected in ("three waves", "halted by the failure threshold in wave 1", "rolled back to 1.1.0",
                     "never fetched 1.2.0", "stays on 1.1.0"):  # fmt: skip
        assert expected in names
    # measurements per location: temperature of all four locations, CO2 where there is an SCD30
    charts = dict(re.findall(r'<svg class="chart"[^>]*aria-label="([^"]+)"[^>]*>(.*?)</svg>', dom, re.S))
    assert {"temperature (degC)", "humidity (percent)", "pressure (hPa)", "co2 (ppm)", "pm25 (ug/m3)"} <= set(
        charts
    )
    series = re.findall(r'data-series="([^"]+)" data-points="(\d+)"', charts["temperature (degC)"])
    assert {name for name, _ in series} == {"balcony", "greenhouse", "street", "roof"}
    assert all(int(points) >= 5 for _, points in series)
    assert set(re.findall(r'data-series="([^"]+)"', charts["co2 (ppm)"])) == {"greenhouse", "roof"}
    # the rollout timeline: 1.1.0 in three waves then complete, 1.2.0 in wave 1 then halted
    timeline = re.search(r'<svg class="timeline rollout".*?</svg>', dom, re.S).group(0)
    segments = re.findall(r'class="segment" data-label="([^"]+)"', timeline)
    assert segments == ["wave 1: 20%", "wave 2: 50%", "wave 3: 100%", "complete", "wave 1: 20%", "halted"]
    assert 'class="marker" data-label="halted: ' in timeline
    firmware = re.search(r'<svg class="timeline firmware".*?</svg>', dom, re.S).group(0)
    assert "rolled_back 1.2.0" in firmware
