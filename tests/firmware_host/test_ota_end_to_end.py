"""OTA end to end: the real device code on an emulated board updates from a real OtaFlux (in front of the
real registry), reboots into the new slot, confirms, and reports every step on sensors/<id>/ota; and the
failure paths: a corrupted byte, a wrong signature, a connection closed mid-download, a release that
raises on boot."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devicesim.provision import build_bundle, device_config, provision
from weatherfleet import oci

from .ota_fixtures import OTA_FEATURES, FaultProxy, Keys, OtaFlux, release, source_variant
from .test_end_to_end import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return Keys.make(tmp_path / "keys", "release")


@pytest.fixture
def prefix() -> str:
    return f"e2e{uuid.uuid4().hex[:8]}/"


@pytest.fixture
def otaflux(registry, prefix: str, keys: Keys, tmp_path: Path) -> Iterator[OtaFlux]:
    server = OtaFlux(tmp_path / "otaflux", registry.url, prefix, [keys.public]).start()
    yield server
    server.stop()


@pytest.fixture
def proxy(otaflux: OtaFlux) -> Iterator[FaultProxy]:
    server = FaultProxy(otaflux.port)
    yield server
    server.close()


def ota_events(collector, device_id: str) -> list[dict]:
    return [json.loads(m.payload) for m in list(collector.messages) if m.topic == f"sensors/{device_id}/ota"]


def names(events: list[dict]) -> list[str]:
    return [e["event"] for e in events]


async def start_device(
    devices, device_id, mosquitto, local_ca, proxy: FaultProxy, keys: Keys, version="1.0.0", source=None
):
    issued = local_ca.issue(device_id)
    config = device_config(
        device_id,
        broker=(mosquitto.host, mosquitto.port),
        version=version,
        features=OTA_FEATURES,
        interval=1,
        ota=("127.0.0.1", proxy.port),
        signing_keys=[keys.device_text],
    )
    config["ota"]["checkIntervalSeconds"] = 10
    device = devices(device_id)
    provision(
        device,
        config,
        build_bundle(version, OTA_FEATURES, source),
        ca=issued.ca,
        cert=issued.cert,
        key=issued.key,
    )
    device.start()
    return device


async def test_update_reboot_confirm_and_report_every_step(
    devices, mosquitto, mqtt_subscriber, local_ca, registry, prefix, keys, proxy, tmp_path
) -> None:
    device_id = "dev-07"
    store = oci.connect(registry.url)
    collector = mqtt_subscriber(mosquitto, f"sensors/{device_id}/#")
    new_source = source_variant(tmp_path, "1.1.0", appends={"payload.py": "\n# release 1.1.0\n"})
    release(store, prefix + device_id, "1.1.0", new_source, keys, tmp_path)
    device = await start_device(devices, device_id, mosquitto, local_ca, proxy, keys)

    await wait_for(collector, lambda ms: "confirmed" in names(ota_events(collector, device_id)), 120, device)
    events = ota_events(collector, device_id)
    sequence = names(events)
    for before, after in [("downloading", "installed"), ("installed", "booted"), ("booted", "confirmed")]:
        assert before in sequence and sequence.index(before) < sequence.index(after), sequence
    assert all(
        e.get("version") == "1.1.0" for e in events if e["event"] in ("installed", "booted", "confirmed")
    )
    assert len(device.boots) >= 2, "the device rebooted into the new slot"
    # file-level delta: only the changed file was fetched
    fetched = {path for _m, path, _r in proxy.blob_requests()}
    assert len(fetched) == 1, fetched
    # measurements now carry the new version
    measurements = f"sensors/{device_id}/measurements"
    await wait_for(
        collector,
        lambda ms: any(m.topic == measurements and b"firmware=1.1.0" in m.payload for m in ms),
        60,
        device,
    )
