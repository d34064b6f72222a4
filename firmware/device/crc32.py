# CRC-32 (IEEE 802.3, the zlib/binascii polynomial) that allocates nothing per update.
#
# binascii.crc32 returns a fresh long integer whenever the CRC is >= 2**30 (on a 32-bit port small ints
# are 31-bit), i.e. on three chunks out of four: that is heap churn in the OTA chunk loop. Here the state
# is kept as two 16-bit halves, so every intermediate value is a small int and an update allocates
# nothing. The result is only assembled (and may allocate) once, in value().
from micropython import const
import array

_POLY = const(0xEDB88320)

_lo = array.array("H", bytes(512))
_hi = array.array("H", bytes(512))


def _build():
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ _POLY if c & 1 else c >> 1
        _lo[n] = c & 0xFFFF
        _hi[n] = c >> 16


_build()


class Crc32:
    def __init__(self):
        self.reset()

    def reset(self):
        self.lo = 0xFFFF
        self.hi = 0xFFFF

    def update(self, buf, n=-1):
        # the first n bytes of buf (all when n < 0); no slicing, so no allocation
        if n < 0:
            n = len(buf)
        lo = self.lo
        hi = self.hi
        tlo = _lo
        thi = _hi
        for i in range(n):
            idx = (lo ^ buf[i]) & 0xFF
            lo = ((lo >> 8) | ((hi & 0xFF) << 8)) ^ tlo[idx]
            hi = (hi >> 8) ^ thi[idx]
        self.lo = lo
        self.hi = hi

    def value(self):
        return ((self.hi ^ 0xFFFF) << 16) | (self.lo ^ 0xFFFF)


def crc32(data, crc=0):
    # one-shot CRC: binascii's when the interpreter has it (fast, C), else the table above
    try:
        import binascii

        return binascii.crc32(data, crc) & 0xFFFFFFFF
    except (ImportError, AttributeError):
        c = Crc32()
        crc ^= 0xFFFFFFFF
        c.lo = crc & 0xFFFF
        c.hi = crc >> 16
        c.update(data)
        return c.value()
