"""Power cuts at 50+ random bytes of a real bundle update: the real device code (boot.py's slot selection
and boot counter, ota.py, slots.py) on an emulated board, updating from a real OtaFlux and registry,
triggered by a retained MQTT notification. After every cut the board boots a good slot, comes back
online, and the update completes."""

from __future__ import annotations

import json
import random
import threading
import uuid

import pytest

from weatherfleet import identities, oci
from weatherfleet.mqtt import make_client

from .ota_fixtures import RELEASE_1_1, FaultProxy, Keys, OtaFlux, release, source_variant
from .test_ota_end_to_end import names, start_device

pytestmark = pytest.mark.slow
CUTS = 52
DEVICE = "dev-13"


def notify(settings, device_id: str, version: str) -> None:
    """What OtaFlux publishes on a new release: retained, QoS 1, {version, size}."""
    client = make_client(settings, f"test-notify-{uuid.uuid4().hex[:6]}")
    done = threading.Event()
    client.on_connect = lambda c, *_a: c.publish(
        f"ota/{device_id}", json.dumps({"version": version, "size": 1}), qos=1, retain=True
    )
    client.on_publish = lambda *_a: done.set()
    client.connect(settings.host, settings.port)
    client.loop_start()
    assert done.wait(15)
    client.loop_stop()
    client.disconnect()


def events_for(collector, device_id: str, since: int) -> list[dict]:
    return [
        json.loads(m.payload)
        for m in list(collector.messages)[since:]
        if m.topic == f"sensors/{device_id}/ota"
    ]


def measurements_for(collector, device_id: str, since: int) -> list[bytes]:
    topic = f"sensors/{device_id}/measurements"
    return [m.payload for m in list(collector.messages)[since:] if m.topic == topic]


async def run_once(devices, mosquitto, local_ca, proxy, keys, collector, cut_at: int | None):
    since = len(collector.messages)
    device = await start_device(devices, DEVICE, mosquitto, local_ca, proxy, keys)
    if cut_at is not None:
        device.flash.arm_power_cut(cut_at)
    start_units = device.flash.bytes_written
    await device.wait_for(lambda: "confirmed" in names(events_for(collector, DEVICE, since)), 90, "confirmed")
    # confirmed, and the new version is what measures now
    await device.wait_for(
        lambda: any(b"firmware=1.1.0" in p for p in measurements_for(collector, DEVICE, since)),
        60,
        "a measurement from 1.1.0",
    )
    units = device.flash.bytes_written - start_units
    await device.stop()
    return device, units


async def test_power_cut_anywhere_in_a_bundle_update_always_boots_a_good_slot(
    devices, mosquitto, mqtt_subscriber, mqtt_settings, local_ca, registry, keys_dir, tmp_path
) -> None:
    keys = Keys.make(keys_dir, "release")
    prefix = f"cut{uuid.uuid4().hex[:8]}/"
    server = OtaFlux(tmp_path / "otaflux", registry.url, prefix, [keys.public]).start()
    proxy = FaultProxy(server.port)
    try:
        store = oci.connect(registry.url)
        new = source_variant(
            tmp_path, "1.1.0", appends={"payload.py": RELEASE_1_1, "sensors.py": RELEASE_1_1}
        )
        release(store, prefix + DEVICE, "1.1.0", new, keys, tmp_path)
        notify(mqtt_settings(mosquitto, identities.OTAFLUX), DEVICE, "1.1.0")
        collector = mqtt_subscriber(mosquitto, f"sensors/{DEVICE}/#")
        _device, total = await run_once(devices, mosquitto, local_ca, proxy, keys, collector, None)
        assert total > 1000
        rng = random.Random(4242)
        offsets = sorted(rng.sample(range(total), CUTS))
        for offset in offsets:
            device, _units = await run_once(devices, mosquitto, local_ca, proxy, keys, collector, offset)
            assert device.flash.cuts == 1, f"cut at {offset}/{total} never happened"
            for record in device.boots:
                assert record.error is None, f"cut at {offset}: boot {record.number} raised {record.error}"
    finally:
        proxy.close()
        server.stop()


@pytest.fixture
def keys_dir(tmp_path):
    return tmp_path / "keys"
