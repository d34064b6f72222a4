"""Firmware per device: build a bundle per feature set with `weatherfleet.firmware`, sign it, push it to
every device's repository (`firmware/<deviceId>`, the layout OtaFlux serves and `{deviceId}` releases
name) the way `weatherfleet firmware push` does, and verify what the registry now holds."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from .. import oci
from ..firmware import build as fw_build
from ..firmware import push as fw_push
from ..firmware import signing
from ..models import WeatherSensor

DEVICE_SOURCE = fw_build.DEFAULT_SOURCE


def build_bundles(
    sensors: list[WeatherSensor],
    version: str,
    out: Path,
    *,
    source: Path = DEVICE_SOURCE,
    emit: fw_build.Emit = "mpy",
) -> dict[str, Path]:
    """deviceId -> bundle folder; one build per distinct feature set (.mpy, what boards and the emulated
    boards on the MicroPython VM run)."""
    by_features: dict[tuple[str, ...], Path] = {}
    result = {}
    for sensor in sensors:
        features = tuple(sensor.spec.firmware_features())
        if features not in by_features:
            folder = Path(out) / f"{version}-{'-'.join(features)}"
            if folder.exists():
                shutil.rmtree(folder)
            fw_build.build(list(features), version, folder, board=sensor.spec.board, source=source, emit=emit)
            by_features[features] = folder
        result[sensor.spec.device_id] = by_features[features]
    return result


def bundle_files(folder: Path) -> dict[str, bytes]:
    """The files of a built bundle as a board gets them (flat file names, plus nothing else)."""
    _manifest, files = fw_build.load_bundle(folder)
    return {name: path.read_bytes() for name, path in files.items()}


def push_release(
    registry_url: str,
    bundles: dict[str, Path],
    version: str,
    private_key: Path,
    public_key: Path,
    repository_prefix: str = "firmware/",
    on_pushed: Callable[[str, str], None] | None = None,
) -> dict[str, str]:
    """Push each device's bundle as `<prefix><device>:<version>` signed with the key; returns
    deviceId -> manifest digest after checking the stored signature verifies."""
    store = oci.connect(registry_url, insecure=True)
    key = signing.read_private_key(private_key)
    public = signing.read_public_key(public_key)
    digests = {}
    for device, folder in sorted(bundles.items()):
        ref = fw_push.Reference(registry_url, f"{repository_prefix}{device}", version)
        fw_push.push_bundle(store, ref, folder, key=key)
        digests[device] = fw_push.verify_pushed(store, ref, [public])
        if on_pushed:
            on_pushed(device, digests[device])
    return digests
