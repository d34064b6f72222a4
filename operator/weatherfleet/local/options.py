"""What `weatherfleet up` is told (UpOptions) and the fixed names and addresses of the local system: the
operator namespace and peering, the signing key ConfigMap OtaFlux mounts, the releases' repository prefix
and the operator settings the local mode changes."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from ..provisioning.deviceconfig import Timing

# http_ok lives with the other readiness checks; re-exported for local.processes, which imports it here
from ..services.process import http_ok as http_ok

REPOSITORY_PREFIX = "firmware/"
HOST = "127.0.0.1"
OPERATOR_NAMESPACE = "weatherfleet"  # where the operator keeps the rollout plan, as gitops/base installs it
SIGNING_CONFIGMAP = ("firmware-signing-key", "ed25519.pub")  # what OtaFlux mounts (gitops/base/otaflux)
PEERING = "weatherfleet"

# The operator settings the local mode changes from their defaults: reaction times for one machine and a
# person watching (a cluster runs with the defaults). Everything else is the Deployment's configuration.
LOCAL_OPERATOR_SETTINGS = {
    "WEATHERFLEET_ROLLOUT_SECONDS": "2",
    "WEATHERFLEET_RESYNC_SECONDS": "60",
    "WEATHERFLEET_STATUS_REFRESH_SECONDS": "10",
    "WEATHERFLEET_STATUS_SETTLE_SECONDS": "3",
    "WEATHERFLEET_LEADER_SETTLE_SECONDS": "2",
    "WEATHERFLEET_BACKOFF_MAX_SECONDS": "15",
    "WEATHERFLEET_RELEASE_RESYNC_SECONDS": "30",
    "WEATHERFLEET_READINGS_SECONDS": "10",
}


class UpOptions(BaseModel):
    directory: Path
    workdir: Path
    sensors: int | None = None
    registry: Literal["auto", "distribution", "layout"] = "auto"
    timing: Timing | None = None
    factory_version: str = "1.0.0"
    day_seconds: float = 86400.0  # the emulated weather's day; the demo compresses it into minutes
    operator_settings: dict[str, str] = Field(
        default_factory=dict,
        description="more WEATHERFLEET_* settings for the operator (e.g. time compression)",
    )
    start_timeout: float = 120.0
