"""esp32.Partition over emulated flash: OTA slots, the bootloader's verification and rollback."""

from __future__ import annotations

import pytest

from devicesim import esp_image
from devicesim.flash import Flash
from devicesim.partition import STATE_ABORTED, STATE_VALID, PartitionTable

from .images import UPDATER, frozen, image


def test_image_format_is_checked_like_the_bootloader_does() -> None:
    good = esp_image.build_image(b"application")
    assert esp_image.parse_image(lambda o, n: good[o : o + n].ljust(n, b"\xff")) == b"application"
    for index in (0, 30, len(good) - 40, len(good) - 1):  # magic, payload, checksum, sha256
        bad = bytearray(good)
        bad[index] ^= 0x01
        assert esp_image.parse_image(lambda o, n, b=bytes(bad): b[o : o + n].ljust(n, b"\xff")) is None


def test_flash_is_nor_erased_to_ff_and_writes_only_clear_bits(tmp_path) -> None:
    table = PartitionTable(Flash(tmp_path))
    assert table.read("ota_1", 0, 4) == b"\xff" * 4
    table.write("ota_1", 0, b"\x0f\xf0")
    table.write("ota_1", 0, b"\xf0\xff")  # without an erase, bits can only go from 1 to 0
    assert table.read("ota_1", 0, 2) == b"\x00\xf0"
    table.erase("ota_1", 0, 4096)
    assert table.read("ota_1", 0, 2) == b"\xff\xff"
    with pytest.raises(OSError):
        table.set_boot("ota_1")  # no valid image there: ESP_ERR_OTA_VALIDATE_FAILED


async def test_unconfirmed_update_rolls_back_and_confirmed_update_stays(devices) -> None:
    device = devices("dev-02")
    device.flash_firmware(frozen("1"))
    device.install({"main.py": UPDATER, "update.bin": image("2"), "no-confirm": "1"})
    device.start()
    await device.wait_console("NOT CONFIRMING", timeout=30)
    await device.wait_console("BOOTED 1 ota_0", timeout=30, after=len(device.console) - 1)
    await device.wait_console("IDLE 1", timeout=30)
    assert [b.slot for b in device.boots[:3]] == ["ota_0", "ota_1", "ota_0"]
    assert any("rollback" in line for line in device.console), "the bootloader must say it rolled back"
    assert {e.state for e in device.partitions.entries()} == {STATE_ABORTED}
    # the same update, now confirming itself: it stays across power cycles
    await device.stop()
    device.flash.host_path("no-confirm").unlink()
    device.flash.host_path("gave-up").unlink()
    device.start()
    await device.wait_console("CONFIRMED ota_1", timeout=30)
    entries = device.partitions.entries()
    assert max(entries, key=lambda e: e.seq).state == STATE_VALID
    count = len(device.boots)
    device.power_cycle()
    await device.wait_for(lambda: len(device.boots) > count, 30, "a new boot")
    assert device.boots[-1].slot == "ota_1"


async def test_bootloader_skips_a_slot_whose_image_went_bad(devices) -> None:
    device = devices("dev-03")
    device.flash_firmware(frozen("1"))
    device.install({"main.py": UPDATER, "update.bin": image("2")})
    device.start()
    await device.wait_console("CONFIRMED ota_1", timeout=30)
    await device.stop()
    # a bit flips in the confirmed image: the bootloader must not run it
    device.partitions.write("ota_1", 40, b"\x00")
    device.flash.host_path("update.bin").unlink()
    device.start()
    await device.wait_console("IDLE 1", timeout=30)
    assert device.boots[-1].slot == "ota_0"
    assert any("failed verification" in line for line in device.console)
