"""Fixtures for the host half of the firmware: emulated devices and device sources."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from devicesim import Device

REPO = Path(__file__).resolve().parents[2]
DEVICE_SOURCES = REPO / "firmware" / "device"


def device_file(name: str) -> str:
    return (DEVICE_SOURCES / name).read_text()


@pytest.fixture
async def devices(tmp_path: Path) -> AsyncIterator[Callable[..., Device]]:
    """Make emulated devices (each in its own flash folder); all are powered off at the end."""
    made: list[Device] = []

    def make(device_id: str = "dev-01", **kwargs) -> Device:
        device = Device(device_id, tmp_path / f"{device_id}-{len(made)}", **kwargs)
        made.append(device)
        return device

    yield make
    for device in made:
        await device.stop()
