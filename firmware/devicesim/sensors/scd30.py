"""Sensirion SCD30 on I2C (address 0x61): 16-bit commands, CRC-8 (poly 0x31, init 0xFF) on every word,
data-ready after each measurement interval, measurements as big-endian IEEE-754 floats."""

from __future__ import annotations

import struct

from .environment import Clock, World

CMD_START = 0x0010
CMD_STOP = 0x0104
CMD_INTERVAL = 0x4600
CMD_DATA_READY = 0x0202
CMD_READ = 0x0300
CMD_ASC = 0x5306
CMD_FRC = 0x5204
CMD_TEMP_OFFSET = 0x5403
CMD_ALTITUDE = 0x5102
CMD_FIRMWARE = 0xD100
CMD_RESET = 0xD304
FIRMWARE_VERSION = 0x0342


def crc8(data: bytes) -> int:
    crc = 0xFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x31) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def words(*values: int) -> bytes:
    """16-bit words, each followed by its CRC."""
    out = bytearray()
    for value in values:
        word = struct.pack(">H", value & 0xFFFF)
        out += word + bytes([crc8(word)])
    return bytes(out)


def float_words(value: float) -> bytes:
    msw, lsw = struct.unpack(">HH", struct.pack(">f", value))
    return words(msw, lsw)


class SCD30:
    def __init__(self, clock: Clock, world: World, address: int = 0x61) -> None:
        self.address, self.clock, self.world = address, clock, world
        self.failed = False
        self.interval = 2
        self.running = False
        self.asc = True
        self.temperature_offset = 0
        self.altitude = 0
        self.pressure = 0
        self._started = 0.0
        self._last_read_slot = 0
        self._response = b""
        self.bad_crc_writes = 0
        self.last_truth: dict[str, float] | None = None

    def _slot(self) -> int:
        """How many measurements have completed since continuous mode started."""
        return int((self.clock() - self._started) // self.interval) if self.running else 0

    def data_ready(self) -> bool:
        return self.running and self._slot() > self._last_read_slot

    def i2c_write(self, data: bytes) -> None:
        if self.failed:
            raise OSError(19, "ENODEV")
        if len(data) < 2:
            raise OSError(5, "EIO")
        command = (data[0] << 8) | data[1]
        argument = None
        if len(data) >= 5:
            word, crc = data[2:4], data[4]
            if crc8(word) != crc:
                self.bad_crc_writes += 1
                raise OSError(5, "EIO")  # the SCD30 NACKs an argument with a wrong CRC
            argument = (word[0] << 8) | word[1]
        self._response = b""
        if command == CMD_START:
            self.pressure = argument or 0
            if not self.running:
                self.running, self._started, self._last_read_slot = True, self.clock(), 0
        elif command == CMD_STOP:
            self.running = False
        elif command == CMD_INTERVAL:
            if argument is None:
                self._response = words(self.interval)
            elif 2 <= argument <= 1800:
                self.interval = argument
                if self.running:
                    self._started, self._last_read_slot = self.clock(), 0
        elif command == CMD_DATA_READY:
            self._response = words(1 if self.data_ready() else 0)
        elif command == CMD_READ:
            self._response = self._measurement()
        elif command == CMD_ASC:
            if argument is None:
                self._response = words(int(self.asc))
            else:
                self.asc = bool(argument)
        elif command == CMD_TEMP_OFFSET:
            if argument is None:
                self._response = words(self.temperature_offset)
            else:
                self.temperature_offset = argument
        elif command == CMD_ALTITUDE:
            if argument is None:
                self._response = words(self.altitude)
            else:
                self.altitude = argument
        elif command == CMD_FIRMWARE:
            self._response = words(FIRMWARE_VERSION)
        elif command == CMD_RESET:
            self.__init__(self.clock, self.world, self.address)
        elif command != CMD_FRC:
            raise OSError(5, "EIO")

    def _measurement(self) -> bytes:
        if not self.data_ready():
            # reading before data-ready returns the previous buffer on the real part; we return zeros
            return float_words(0.0) * 3
        self._last_read_slot = self._slot()
        when = self._started + self._last_read_slot * self.interval
        truth = self.world(when)
        self.last_truth = truth
        temperature = truth["temperature"] - self.temperature_offset / 100
        return float_words(truth["co2"]) + float_words(temperature) + float_words(truth["humidity"])

    def i2c_read(self, count: int) -> bytes:
        if self.failed:
            raise OSError(19, "ENODEV")
        out, self._response = self._response[:count], self._response[count:]
        return out.ljust(count, b"\xff")
