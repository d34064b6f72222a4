# Sensirion SCD30 (CO2, plus its own temperature/humidity) over I2C in continuous measurement mode.
#
# Every 16-bit word on the wire is followed by a CRC-8 (polynomial 0x31, init 0xFF, no final xor);
# measurements are big-endian IEEE-754 floats split over two words.
from micropython import const
import struct
import time

ADDRESS = const(0x61)
_CMD_START = const(0x0010)
_CMD_STOP = const(0x0104)
_CMD_INTERVAL = const(0x4600)
_CMD_READY = const(0x0202)
_CMD_READ = const(0x0300)
_CMD_VERSION = const(0xD100)


class SensorError(Exception):
    pass


def crc8(data, start=0, end=-1):
    if end < 0:
        end = len(data)
    crc = 0xFF
    for i in range(start, end):
        crc ^= data[i]
        for _ in range(8):
            crc = ((crc << 1) ^ 0x31) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def decode_float(buf, offset):
    """The float in the 6 bytes at offset: word, crc, word, crc (datasheet 1.5)."""
    for i in (offset, offset + 3):
        if crc8(buf, i, i + 2) != buf[i + 2]:
            raise SensorError("scd30: crc mismatch")
    b = bytes((buf[offset], buf[offset + 1], buf[offset + 3], buf[offset + 4]))
    return struct.unpack(">f", b)[0]


class SCD30:
    def __init__(self, i2c, address=ADDRESS, interval_s=2, pressure_mbar=0, sleep_ms=None):
        self.i2c = i2c
        self.address = address
        self._sleep_ms = sleep_ms or time.sleep_ms
        self._cmd = bytearray(5)
        self._word = bytearray(3)
        self._data = bytearray(18)
        self.firmware = self._read_word(_CMD_VERSION)
        self._command(_CMD_INTERVAL, interval_s)
        # argument: ambient pressure compensation in mbar, 0 = off
        self._command(_CMD_START, pressure_mbar)

    def _command(self, cmd, arg=None):
        c = self._cmd
        c[0] = cmd >> 8
        c[1] = cmd & 0xFF
        if arg is None:
            self.i2c.writeto(self.address, memoryview(c)[:2])
            return
        c[2] = arg >> 8
        c[3] = arg & 0xFF
        c[4] = crc8(c, 2, 4)
        self.i2c.writeto(self.address, c)

    def _read_into(self, cmd, buf):
        self._command(cmd)
        # the SCD30 needs a pause between the command and the read (interface description 1.1)
        self._sleep_ms(3)
        self.i2c.readfrom_into(self.address, buf)

    def _read_word(self, cmd):
        w = self._word
        self._read_into(cmd, w)
        if crc8(w, 0, 2) != w[2]:
            raise SensorError("scd30: crc mismatch")
        return (w[0] << 8) | w[1]

    def ready(self):
        return self._read_word(_CMD_READY) == 1

    def read(self):
        """(co2 ppm, temperature degC, humidity %) or None while no new measurement is ready."""
        if not self.ready():
            return None
        d = self._data
        self._read_into(_CMD_READ, d)
        return decode_float(d, 0), decode_float(d, 6), decode_float(d, 12)

    def stop(self):
        self._command(_CMD_STOP)
