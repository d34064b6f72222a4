"""OTA end to end: the real device code on an emulated board updates from a real OtaFlux (in front of the
real registry), reboots into the new slot, confirms, and reports every step on sensors/<id>/ota; and the
failure paths: a corrupted byte, a wrong signature, a connection closed mid-download, a release that
raises on boot."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devicesim.provision import build_bundle, device_config, provision
from weatherfleet import oci

from .ota_fixtures import (
    OTA_FEATURES,
    OTA_HEAP,
    RELEASE_1_1,
    FaultProxy,
    Keys,
    OtaFlux,
    release,
    source_variant,
)
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
    device = devices(device_id, heap=OTA_HEAP)
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
    new_source = source_variant(tmp_path, "1.1.0", appends={"payload.py": RELEASE_1_1})
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


def failed_reasons(events: list[dict], version: str) -> list[str]:
    return [
        e.get("reason") or ""
        for e in events
        if e["event"] == "failed" and e.get("version") in (version, None)
    ]


async def test_one_corrupted_byte_is_refused_and_the_next_check_succeeds(
    devices, mosquitto, mqtt_subscriber, local_ca, registry, prefix, keys, proxy, tmp_path
) -> None:
    device_id = "dev-08"
    store = oci.connect(registry.url)
    collector = mqtt_subscriber(mosquitto, f"sensors/{device_id}/#")
    release(
        store,
        prefix + device_id,
        "1.1.0",
        source_variant(tmp_path, "1.1.0", appends={"payload.py": RELEASE_1_1}),
        keys,
        tmp_path,
    )
    proxy.faults.corrupt_blob_byte = True
    device = await start_device(devices, device_id, mosquitto, local_ca, proxy, keys)
    await wait_for(collector, lambda ms: "confirmed" in names(ota_events(collector, device_id)), 150, device)
    sequence = names(ota_events(collector, device_id))
    assert "failed" in sequence and sequence.index("failed") < sequence.index("installed"), sequence
    reasons = failed_reasons(ota_events(collector, device_id), "1.1.0")
    assert any("sha256" in r or "crc" in r.lower() or "digest" in r for r in reasons), reasons


async def test_a_wrong_signature_is_refused_before_any_download(
    devices, mosquitto, mqtt_subscriber, local_ca, registry, prefix, keys, tmp_path
) -> None:
    """OtaFlux checks signatures too (it answers 502 for this release); here it does not, as a
    compromised or misconfigured server would not: the device's own check must hold."""
    device_id = "dev-09"
    server = OtaFlux(tmp_path / "unchecked", registry.url, prefix, []).start()
    proxy = FaultProxy(server.port)
    store = oci.connect(registry.url)
    collector = mqtt_subscriber(mosquitto, f"sensors/{device_id}/#")
    stranger = Keys.make(tmp_path / "stranger", "stranger")
    release(
        store,
        prefix + device_id,
        "1.1.0",
        source_variant(tmp_path, "1.1.0", appends={"payload.py": RELEASE_1_1}),
        stranger,
        tmp_path,
    )
    device = await start_device(devices, device_id, mosquitto, local_ca, proxy, keys)
    await wait_for(collector, lambda ms: "failed" in names(ota_events(collector, device_id)), 90, device)
    reasons = failed_reasons(ota_events(collector, device_id), "1.1.0")
    assert any("signature" in r or "key" in r for r in reasons), reasons
    assert proxy.blob_requests() == [], "nothing may be downloaded for an untrusted manifest"
    assert "installed" not in names(ota_events(collector, device_id))
    assert len(device.boots) == 1
    await device.stop()
    proxy.close()
    server.stop()


async def test_a_download_cut_mid_file_resumes_and_completes(
    devices, mosquitto, mqtt_subscriber, local_ca, registry, prefix, keys, proxy, tmp_path
) -> None:
    device_id = "dev-10"
    store = oci.connect(registry.url)
    collector = mqtt_subscriber(mosquitto, f"sensors/{device_id}/#")
    release(
        store,
        prefix + device_id,
        "1.1.0",
        source_variant(tmp_path, "1.1.0", appends={"payload.py": RELEASE_1_1}),
        keys,
        tmp_path,
    )
    proxy.faults.close_blob_after = 700
    device = await start_device(devices, device_id, mosquitto, local_ca, proxy, keys)
    await wait_for(collector, lambda ms: "confirmed" in names(ota_events(collector, device_id)), 150, device)
    assert proxy.faults.close_blob_after is None, "the cut happened"
    ranges = [r for _m, _p, r in proxy.blob_requests() if r]
    assert ranges and ranges[0].startswith("bytes=700-"), f"expected a resume from byte 700, got {ranges}"


async def test_a_release_that_raises_on_boot_is_rolled_back_and_never_fetched_again(
    devices, mosquitto, mqtt_subscriber, local_ca, registry, prefix, keys, proxy, tmp_path
) -> None:
    device_id = "dev-11"
    store = oci.connect(registry.url)
    collector = mqtt_subscriber(mosquitto, f"sensors/{device_id}/#")
    broken = source_variant(tmp_path, "1.1.0", appends={"app.py": "\nraise RuntimeError('broken release')\n"})
    release(store, prefix + device_id, "1.1.0", broken, keys, tmp_path)
    device = await start_device(devices, device_id, mosquitto, local_ca, proxy, keys)
    await wait_for(
        collector, lambda ms: "rolled_back" in names(ota_events(collector, device_id)), 180, device
    )
    rolled = [e for e in ota_events(collector, device_id) if e["event"] == "rolled_back"]
    assert rolled[0].get("version") == "1.1.0"
    assert "confirmed" not in names(ota_events(collector, device_id))
    assert "broken release" in device.console_text()
    blobs_after_rollback = len(proxy.blob_requests())
    manifests_after_rollback = sum(p.startswith("/v1/manifest") for _m, p, _r in proxy.faults.requests)
    # at least one more check (every 10 s) happens; it must not download the bad version again
    await device.wait_for(
        lambda: (
            sum(p.startswith("/v1/manifest") for _m, p, _r in proxy.faults.requests)
            > manifests_after_rollback
        ),
        60,
        "another OTA check",
    )
    await asyncio.sleep(1)
    assert len(proxy.blob_requests()) == blobs_after_rollback
    downloads = [
        e for e in ota_events(collector, device_id) if e["event"] == "downloading" and e.get("percent") == 0
    ]
    assert len(downloads) == 1, downloads
    status = [json.loads(m.payload) for m in collector.messages if m.topic == f"sensors/{device_id}/status"]
    assert status[-1]["firmware"] == "1.0.0" and status[-1]["online"] is True


async def test_image_update_goes_through_the_partitions_and_the_bootloader(
    devices, mosquitto, mqtt_subscriber, local_ca, registry, prefix, keys, proxy, tmp_path
) -> None:
    """kind=image: the device streams an ESP32 app image into esp32.Partition.get_next_update(),
    set_boot() verifies it, the bootloader boots it as PENDING_VERIFY, and the app's first publish marks
    it valid (mark_app_valid_cancel_rollback)."""
    from devicesim import esp_image
    from devicesim.partition import STATE_VALID
    from weatherfleet.firmware import push, signing

    device_id = "dev-14"
    store = oci.connect(registry.url)
    collector = mqtt_subscriber(mosquitto, f"sensors/{device_id}/#")
    binary = tmp_path / "micropython-1.1.0.bin"
    binary.write_bytes(
        esp_image.build_image(
            esp_image.application_zip({"fwinfo.py": "VERSION = '1.1.0'\n", "pad.bin": bytes(9000)})
        )
    )
    push.push_image(
        store,
        push.Reference("unused", prefix + device_id, "1.1.0"),
        binary,
        version="1.1.0",
        board="esp32-devkit-v1",
        features=list(OTA_FEATURES),
        key=signing.read_private_key(keys.private),
    )
    issued = local_ca.issue(device_id)
    config = device_config(
        device_id,
        broker=(mosquitto.host, mosquitto.port),
        version="1.0.0",
        features=OTA_FEATURES,
        interval=1,
        ota=("127.0.0.1", proxy.port),
        signing_keys=[keys.device_text],
    )
    config["ota"]["kind"] = "image"
    device = devices(device_id, heap=OTA_HEAP)
    provision(
        device, config, build_bundle("1.0.0", OTA_FEATURES), ca=issued.ca, cert=issued.cert, key=issued.key
    )
    device.start()
    await wait_for(collector, lambda ms: "confirmed" in names(ota_events(collector, device_id)), 120, device)
    assert [b.slot for b in device.boots[:2]] == ["ota_0", "ota_1"]
    assert device.partitions.application("ota_1") == esp_image.parse_image(
        lambda o, n: binary.read_bytes()[o : o + n]
    )
    newest = max(device.partitions.entries(), key=lambda e: e.seq)
    assert newest.state == STATE_VALID and device.partitions.slot_of(newest) == "ota_1"
