"""Power cuts at random bytes of an image update (download into the next slot, the switch, the
bootloader's state changes, the confirmation): the board always boots a verified image, and the update
completes once power stays on."""

from __future__ import annotations

import random

from .images import UPDATER, frozen, image

CUTS = 60


async def _measure_units(devices) -> int:
    device = devices("dev-04")
    device.flash_firmware(frozen("1"))
    device.install({"main.py": UPDATER, "update.bin": image("2")})
    before = device.flash.bytes_written
    device.start()
    await device.wait_console("CONFIRMED", timeout=60)
    await device.stop()
    return device.flash.bytes_written - before


async def test_power_cut_at_random_bytes_always_boots_a_good_slot(devices) -> None:
    total = await _measure_units(devices)
    assert total > 12_000, "the update must write the whole image"
    rng = random.Random(20261125)
    offsets = [*sorted(rng.sample(range(total), CUTS - 4)), 0, 1, total - 2, total - 1]
    for offset in offsets:
        device = devices("dev-05")
        device.flash_firmware(frozen("1"))
        device.install({"main.py": UPDATER, "update.bin": image("2")})
        device.flash.arm_power_cut(offset)
        device.start()
        await device.wait_console("CONFIRMED", timeout=60)
        assert device.flash.cuts == 1, f"cut at {offset} never happened"
        for record in device.boots:
            assert record.slot in ("ota_0", "ota_1"), f"cut at {offset}: a boot without a bootable slot"
            assert device.partitions.application(record.slot) is not None
            assert record.error is None, f"cut at {offset}: boot {record.number} raised {record.error}"
        assert device.boots[-1].slot == "ota_1"
        await device.stop()
