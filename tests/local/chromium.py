"""Render a page in headless Chromium (Debian `chromium`): the DOM after layout and a screenshot."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def render(page: Path, screenshot: Path, profile: Path, size: str = "1200,2400") -> str:
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.fail("chromium is not installed: run `sudo apt-get install -y chromium` (it is in dev.sh)")
    result = subprocess.run(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", f"--window-size={size}", f"--screenshot={screenshot}",
         "--dump-dom", page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert screenshot.exists() and screenshot.stat().st_size > 10_000, "no screenshot written"
    return result.stdout
