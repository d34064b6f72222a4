"""Fixtures of the device-firmware tests: the MicroPython (WebAssembly) interpreter must be present."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from mpy_harness import node


@pytest.fixture(scope="session", autouse=True)
def _interpreter_present() -> None:
    node()
