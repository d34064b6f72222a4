"""What the rollout knows of one device: its retained status and its last OTA event."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel

OtaState = Literal[
    "idle",
    "checking",
    "downloading",
    "verifying",
    "installed",
    "booted",
    "confirmed",
    "rolled_back",
    "failed",
]
FAILED_STATES = ("failed", "rolled_back")


class DeviceObservation(BaseModel):
    """What the operator knows of one device, from its retained status and its OTA events."""

    device_id: str
    online: bool = True
    reported_version: str | None = None
    ota_state: OtaState | None = None
    ota_version: str | None = None
    ota_reason: str | None = None
    ota_percent: int | None = None
    pinned_version: str | None = None
    member_since: datetime | None = None
