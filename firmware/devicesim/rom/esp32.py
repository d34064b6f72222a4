# esp32, as the ESP32 port has it (MicroPython): Partition over the board's emulated partition table. The
# host keeps the partitions (files, NOR semantics, counted writes) and plays the second-stage bootloader
# (otadata, PENDING_VERIFY, rollback); this module only carries the calls.
from micropython import const

import _hw

_SECTOR = const(4096)


def _part(sub, text, data=None, into=None):
    _hw.args(ord(sub))
    t = text.encode()
    if data is None:
        return _hw.call(_hw.OP_PART, t, into)
    _hw.req[4] = len(t)
    return _hw.call(_hw.OP_PART, t, more=data)


class Partition:
    BOOT = const(0)
    RUNNING = const(1)
    TYPE_APP = const(0)
    TYPE_DATA = const(1)

    def __init__(self, id, block_size=_SECTOR):
        if id == 0 or id == 1:
            id = bytes(_part("g", str(id))).decode()
        info = bytes(_part("i", id)).decode().split(",")
        self._info = (int(info[0]), int(info[1]), int(info[2]), int(info[3]), id, False)
        self.block_size = block_size

    @classmethod
    def find(cls, type=TYPE_APP, subtype=0xFF, label=None, block_size=_SECTOR):
        text = bytes(_part("f", "%d,%d,%s" % (type, subtype, label or ""))).decode()
        return [cls(x, block_size) for x in text.split(",") if x]

    @classmethod
    def get_running(cls):
        return cls(cls.RUNNING)

    @staticmethod
    def mark_app_valid_cancel_rollback():
        _part("v", "")

    def info(self):
        return self._info

    def readblocks(self, block_num, buf, offset=0):
        _part("r", "%s,%d,%d" % (self._info[4], block_num * self.block_size + offset, len(buf)), None, buf)

    def writeblocks(self, block_num, buf, offset=None):
        # without an offset MicroPython erases the blocks first
        start = block_num * self.block_size + (offset or 0)
        _part("w", "%s,%d,%d" % (self._info[4], start, 1 if offset is None else 0), buf)

    def ioctl(self, cmd, arg):
        if cmd in (1, 2, 3):
            return 0
        if cmd == 4:
            return self._info[3] // self.block_size
        if cmd == 5:
            return self.block_size
        if cmd == 6:
            _part("e", "%s,%d,%d" % (self._info[4], arg * self.block_size, self.block_size))
            return 0

    def set_boot(self):
        _part("b", self._info[4])

    def get_next_update(self):
        return Partition(bytes(_part("n", "")).decode(), self.block_size)

    def __eq__(self, other):
        return isinstance(other, Partition) and other._info == self._info

    def __repr__(self):
        i = self._info
        return "<Partition type=%d, subtype=%d, address=%d, size=%d, label=%s, encrypted=0>" % i[:5]


HEAP_DATA = const(4)
HEAP_EXEC = const(1)


def idf_heap_info(capabilities):
    return []
