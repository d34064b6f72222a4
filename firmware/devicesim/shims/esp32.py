"""`esp32`: Partition (OTA slots over the device's emulated flash, boot state and rollback via the
emulated bootloader), NVS (atomic commits), and the small helpers of the module."""

from __future__ import annotations

import types
from typing import TYPE_CHECKING

from ..flash import NvsStore
from ..partition import SECTOR, TYPE_APP, TYPE_DATA

if TYPE_CHECKING:
    from ..device import Boot


class Partition:
    BOOT, RUNNING = 0, 1
    TYPE_APP, TYPE_DATA = TYPE_APP, TYPE_DATA
    _boot: Boot

    def __init__(self, id, block_size: int = SECTOR) -> None:
        table = self._table()
        if id == Partition.RUNNING:
            label = table.running
        elif id == Partition.BOOT:
            active = table._active()
            label = table.slot_of(active) if active else table.running
        else:
            label = id
        try:
            self._info = table.info(label)
        except KeyError:
            raise ValueError("partition not found") from None
        self.block_size = block_size

    @classmethod
    def _table(cls):
        cls._boot.check()
        return cls._boot.device.partitions

    @classmethod
    def find(cls, type=TYPE_APP, subtype=0xFF, label=None, block_size=SECTOR):
        table = cls._table()
        return [
            cls(p.label, block_size)
            for p in table.layout
            if p.type == type
            and (subtype == 0xFF or p.subtype == subtype)
            and (label is None or p.label == label)
        ]

    @classmethod
    def get_running(cls):
        return cls(cls.RUNNING)

    @classmethod
    def mark_app_valid_cancel_rollback(cls) -> None:
        cls._table().mark_valid()

    def info(self) -> tuple:
        p = self._info
        return (p.type, p.subtype, p.offset, p.size, p.label, False)

    def readblocks(self, block_num: int, buf, offset: int = 0) -> None:
        data = self._table().read(self._info.label, block_num * self.block_size + offset, len(buf))
        buf[:] = data

    def writeblocks(self, block_num: int, buf, offset: int | None = None) -> None:
        table = self._table()
        start = block_num * self.block_size
        if offset is None:
            # MicroPython erases the blocks first when no offset is given
            table.erase_range(self._info.label, start, len(buf))
            table.write(self._info.label, start, bytes(buf))
        else:
            table.write(self._info.label, start + offset, bytes(buf))

    def ioctl(self, cmd: int, arg: int):
        if cmd in (1, 2, 3):  # init, deinit, sync
            return 0
        if cmd == 4:
            return self._info.size // self.block_size
        if cmd == 5:
            return self.block_size
        if cmd == 6:
            self._table().erase(self._info.label, arg * self.block_size, self.block_size)
            return 0
        return None

    def set_boot(self) -> None:
        self._table().set_boot(self._info.label)

    def get_next_update(self):
        table = self._table()
        slots = table.app_slots()
        current = table.running if table.running in slots else slots[-1]
        return type(self)(slots[(slots.index(current) + 1) % len(slots)], self.block_size)

    def __repr__(self) -> str:
        p = self._info
        return f"<Partition type={p.type}, subtype={p.subtype}, address={p.offset}, size={p.size}, label={p.label}>"

    def __eq__(self, other) -> bool:
        return isinstance(other, Partition) and other._info == self._info

    def __hash__(self) -> int:
        return hash(self._info)


class NVS:
    _boot: Boot

    def __init__(self, namespace: str) -> None:
        self._boot.check()
        self._store = NvsStore(self._boot.device.flash)
        self._namespace = namespace
        self._values = dict(self._store.load().get(namespace, {}))

    def set_i32(self, key: str, value: int) -> None:
        self._values[key] = ["i32", int(value)]

    def get_i32(self, key: str) -> int:
        kind, value = self._values.get(key, [None, None])
        if kind != "i32":
            raise OSError(-4354, "ESP_ERR_NVS_NOT_FOUND")
        return value

    def set_blob(self, key: str, value) -> None:
        self._values[key] = ["blob", bytes(value).hex()]

    def get_blob(self, key: str, buffer) -> int:
        kind, value = self._values.get(key, [None, None])
        if kind != "blob":
            raise OSError(-4354, "ESP_ERR_NVS_NOT_FOUND")
        data = bytes.fromhex(value)
        buffer[: len(data)] = data
        return len(data)

    def erase_key(self, key: str) -> None:
        if self._values.pop(key, None) is None:
            raise OSError(-4354, "ESP_ERR_NVS_NOT_FOUND")

    def commit(self) -> None:
        self._boot.check()
        self._store.commit(self._namespace, self._values)


def make_esp32(boot: Boot) -> types.ModuleType:
    module = types.ModuleType("esp32")
    module.Partition = type("Partition", (Partition,), {"_boot": boot})
    module.NVS = type("NVS", (NVS,), {"_boot": boot})
    module.mcu_temperature = lambda: 41
    module.raw_temperature = lambda: 106
    module.wake_on_ext0 = module.wake_on_ext1 = module.wake_on_touch = lambda *a, **k: None
    module.idf_heap_info = lambda caps: [(111_000, 60_000, 50_000, 55_000)]
    module.HEAP_DATA, module.HEAP_EXEC = 4, 1
    return module
