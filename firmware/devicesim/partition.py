"""Raw flash partitions of an emulated ESP32 and the second-stage bootloader's OTA slot selection.

Storage: one sparse host file per partition, stored bit-inverted so that a hole reads as erased flash
(0xFF) and 2 x 1.5 MiB app slots cost nothing for a device that never updates. Writes follow NOR
semantics (a write can only clear bits; erase sets a 4 KiB sector to 0xFF), so code that forgets to erase
corrupts its image just like on the board.

Boot state: the `otadata` partition holds two sectors with an `esp_ota_select_entry_t` each (sequence,
label, state, CRC). The bootloader boots the valid entry with the highest sequence; with rollback enabled
(as in MicroPython's OTA builds) a NEW image becomes PENDING_VERIFY when booted, and an image found still
PENDING_VERIFY at the next boot was never confirmed: it is marked ABORTED and the previous slot boots.
An image that fails verification (magic, checksum, SHA-256) is never booted.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from . import esp_image
from .flash import Flash

SECTOR = 4096
TYPE_APP, TYPE_DATA = 0, 1
SUBTYPE_FACTORY, SUBTYPE_OTA_0 = 0x00, 0x10
SUBTYPE_OTADATA, SUBTYPE_NVS, SUBTYPE_FAT = 0x00, 0x02, 0x81

STATE_NEW, STATE_PENDING_VERIFY, STATE_VALID, STATE_INVALID, STATE_ABORTED = 0, 1, 2, 3, 4
STATE_UNDEFINED = 0xFFFFFFFF
STATE_NAMES = {
    0: "new",
    1: "pending_verify",
    2: "valid",
    3: "invalid",
    4: "aborted",
    STATE_UNDEFINED: "undefined",
}
ENTRY = struct.Struct("<I20sII")  # ota_seq, seq_label, ota_state, crc


@dataclass(frozen=True)
class PartitionInfo:
    label: str
    type: int
    subtype: int
    offset: int
    size: int


def ota_layout(app_size: int = 0x180000) -> list[PartitionInfo]:
    """MicroPython's partitions-ota.csv for a 4 MiB ESP32: nvs, otadata, phy_init, ota_0, ota_1, vfs."""
    return [
        PartitionInfo("nvs", TYPE_DATA, SUBTYPE_NVS, 0x9000, 0x4000),
        PartitionInfo("otadata", TYPE_DATA, SUBTYPE_OTADATA, 0xD000, 0x2000),
        PartitionInfo("phy_init", TYPE_DATA, 0x01, 0xF000, 0x1000),
        PartitionInfo("ota_0", TYPE_APP, SUBTYPE_OTA_0, 0x10000, app_size),
        PartitionInfo("ota_1", TYPE_APP, SUBTYPE_OTA_0 + 1, 0x10000 + app_size, app_size),
        PartitionInfo("vfs", TYPE_DATA, SUBTYPE_FAT, 0x10000 + 2 * app_size, 0xF0000),
    ]


@dataclass(frozen=True)
class OtaEntry:
    sector: int
    seq: int
    state: int

    @property
    def state_name(self) -> str:
        return STATE_NAMES.get(self.state, hex(self.state))


class PartitionTable:
    """The partitions of one device and the boot decision. The running slot is decided by `boot()`."""

    def __init__(self, flash: Flash, layout: list[PartitionInfo] | None = None) -> None:
        self.flash = flash
        self.layout = layout or ota_layout()
        self.directory = flash.root / "partitions"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.running: str | None = None
        self.boot_log: list[str] = []

    # -- raw access -----------------------------------------------------------------------------------
    def info(self, label: str) -> PartitionInfo:
        for part in self.layout:
            if part.label == label:
                return part
        raise KeyError(label)

    def _file(self, label: str) -> Path:
        path = self.directory / f"{label}.bin"
        if not path.exists():
            with path.open("wb") as handle:
                handle.truncate(self.info(label).size)
        return path

    def read(self, label: str, offset: int, length: int) -> bytes:
        part = self.info(label)
        if offset < 0 or length < 0 or offset + length > part.size:
            raise OSError(22, "EINVAL")
        with self._file(label).open("rb") as handle:
            handle.seek(offset)
            stored = handle.read(length)
        return bytes(b ^ 0xFF for b in stored.ljust(length, b"\0"))

    def write(self, label: str, offset: int, data: bytes) -> None:
        """NOR write (bits only go 1 -> 0), counted for power cuts byte by byte."""
        part = self.info(label)
        data = bytes(data)
        if offset < 0 or offset + len(data) > part.size:
            raise OSError(22, "EINVAL")

        def program(count: int) -> None:
            with self._file(label).open("r+b") as handle:
                handle.seek(offset)
                old = handle.read(count).ljust(count, b"\0")
                handle.seek(offset)
                handle.write(bytes(o | (d ^ 0xFF) for o, d in zip(old, data[:count], strict=True)))

        self.flash.write_through(len(data), program)

    def erase(self, label: str, offset: int, length: int) -> None:
        part = self.info(label)
        if offset % SECTOR or length % SECTOR or offset + length > part.size:
            raise OSError(22, "EINVAL")

        def clear(_count: int) -> None:
            with self._file(label).open("r+b") as handle:
                handle.seek(offset)
                handle.write(b"\0" * length)

        self.flash.write_through(1, clear)

    # -- images ---------------------------------------------------------------------------------------
    def app_slots(self) -> list[str]:
        return [p.label for p in self.layout if p.type == TYPE_APP and p.subtype >= SUBTYPE_OTA_0]

    def application(self, label: str) -> bytes | None:
        """The application inside the slot, or None when the image is not valid."""
        try:
            return esp_image.parse_image(lambda offset, n: self.read(label, offset, n))
        except (OSError, struct.error, IndexError):
            return None

    def flash_image(self, label: str, image: bytes) -> None:
        """Factory flashing (esptool): not counted, never cut."""
        armed, self.flash._cut_at = self.flash._cut_at, None
        try:
            self.erase_range(label, 0, len(image))
            self.write(label, 0, image)
        finally:
            self.flash._cut_at = armed

    def erase_range(self, label: str, offset: int, length: int) -> None:
        start = offset - offset % SECTOR
        end = offset + length + (-(offset + length) % SECTOR)
        for sector in range(start, end, SECTOR):
            self.erase(label, sector, SECTOR)

    # -- otadata --------------------------------------------------------------------------------------
    def entries(self) -> list[OtaEntry]:
        """The valid otadata entries (sequence set and CRC correct)."""
        found = []
        for sector in (0, 1):
            seq, _label, state, crc = ENTRY.unpack(self.read("otadata", sector * SECTOR, ENTRY.size))
            if seq != 0xFFFFFFFF and crc == zlib.crc32(struct.pack("<I", seq)):
                found.append(OtaEntry(sector, seq, state))
        return found

    def _write_entry(self, sector: int, seq: int, state: int) -> None:
        self.erase("otadata", sector * SECTOR, SECTOR)
        entry = ENTRY.pack(seq, b"\xff" * 20, state, zlib.crc32(struct.pack("<I", seq)))
        self.write("otadata", sector * SECTOR, entry)

    def _active(self) -> OtaEntry | None:
        usable = [e for e in self.entries() if e.state not in (STATE_INVALID, STATE_ABORTED)]
        return max(usable, key=lambda e: e.seq, default=None)

    def slot_of(self, entry: OtaEntry) -> str:
        slots = self.app_slots()
        return slots[(entry.seq - 1) % len(slots)]

    def set_boot(self, label: str) -> None:
        """esp_ota_set_boot_partition: verify the image, then write a NEW entry to the other sector."""
        slots = self.app_slots()
        if label not in slots:
            raise OSError(22, "EINVAL")
        if self.application(label) is None:
            raise OSError(-5379, "ESP_ERR_OTA_VALIDATE_FAILED")
        entries = self.entries()
        newest = max(entries, key=lambda e: e.seq, default=None)
        seq = newest.seq if newest else 0
        index = slots.index(label)
        seq += 1
        while (seq - 1) % len(slots) != index:
            seq += 1
        sector = 1 - newest.sector if newest else 0
        self._write_entry(sector, seq, STATE_NEW)

    def mark_valid(self) -> None:
        """esp_ota_mark_app_valid_cancel_rollback: the running image confirms itself."""
        active = self._active()
        if active and self.running == self.slot_of(active) and active.state != STATE_VALID:
            self._write_entry(active.sector, active.seq, STATE_VALID)

    def running_state(self) -> str:
        active = self._active()
        if active and self.running == self.slot_of(active):
            return active.state_name
        return "valid"

    def boot(self) -> str:
        """Run the bootloader: choose, maybe roll back, and return the slot that boots."""
        self.boot_log = []
        while True:
            active = self._active()
            if active is None:
                break
            slot = self.slot_of(active)
            if active.state == STATE_PENDING_VERIFY:
                self.boot_log.append(f"{slot} was not confirmed: rollback")
                self._write_entry(active.sector, active.seq, STATE_ABORTED)
                continue
            if self.application(slot) is None:
                self.boot_log.append(f"{slot} failed verification")
                self._write_entry(active.sector, active.seq, STATE_INVALID)
                continue
            if active.state == STATE_NEW:
                self._write_entry(active.sector, active.seq, STATE_PENDING_VERIFY)
            self.running = slot
            return slot
        # no usable otadata: the first slot with a valid image (factory flashing puts it in ota_0)
        for slot in self.app_slots():
            if self.application(slot) is not None:
                self.running = slot
                return slot
        self.running = None
        raise RuntimeError("no bootable application in any slot")

    def rolled_back(self) -> bool:
        return any("rollback" in line for line in self.boot_log)
