# Nova SDS011 particulate sensor over UART (9600 8N1), in query mode with sleep between readings so the
# laser (rated ~8000 h) only runs when a measurement is wanted.
#
# Data frame: AA C0 pm25_lo pm25_hi pm10_lo pm10_hi id_lo id_hi checksum AB, checksum = sum of the six
# data bytes & 0xFF. Commands: AA B4 cmd d1..d12 FF FF checksum AB (19 bytes), checksum over bytes 2..16.
from micropython import const
import time

_HEAD = const(0xAA)
_TAIL = const(0xAB)
_DATA = const(0xC0)
_REPLY = const(0xC5)
_CMD = const(0xB4)
_SET_MODE = const(2)
_QUERY = const(4)
_SLEEP = const(6)


class SensorError(Exception):
    pass


class FrameParser:
    """Byte-at-a-time frame assembly that resynchronises on garbage: bytes before a header are skipped, a
    frame with a bad checksum or tail is dropped, and parsing resumes at the next header inside it."""

    def __init__(self):
        self.frame = bytearray(10)
        self.pos = 0
        self.dropped = 0

    def feed(self, b):
        """True when b completed a valid frame (in self.frame)."""
        f = self.frame
        pos = self.pos
        if pos == 0:
            if b == _HEAD:
                f[0] = b
                self.pos = 1
            return False
        if pos == 1:
            if b == _DATA or b == _REPLY:
                f[1] = b
                self.pos = 2
            elif b != _HEAD:
                self.pos = 0
            return False
        f[pos] = b
        pos += 1
        if pos < 10:
            self.pos = pos
            return False
        self.pos = 0
        s = 0
        for i in range(2, 8):
            s += f[i]
        if f[9] == _TAIL and (s & 0xFF) == f[8]:
            return True
        self.dropped += 1
        self._resync()
        return False

    def _resync(self):
        # the real frame may begin inside the ten bytes just rejected (after a truncated frame, say):
        # continue from the first later header instead of throwing those bytes away
        f = self.frame
        for k in range(1, 10):
            if f[k] == _HEAD and (k == 9 or f[k + 1] == _DATA or f[k + 1] == _REPLY):
                n = 10 - k
                for i in range(n):
                    f[i] = f[k + i]
                self.pos = n
                return
        self.pos = 0


def checksum(buf, start, end):
    s = 0
    for i in range(start, end):
        s += buf[i]
    return s & 0xFF


class SDS011:
    def __init__(self, uart, sleep_ms=None, ticks_ms=None, ticks_diff=None):
        self.uart = uart
        self._sleep_ms = sleep_ms or time.sleep_ms
        self._ticks_ms = ticks_ms or time.ticks_ms
        self._ticks_diff = ticks_diff or time.ticks_diff
        self._cmd = bytearray(19)
        self._rx = bytearray(32)
        self.parser = FrameParser()
        self.set_query_mode()

    def _send(self, cmd, d1=0, d2=0):
        c = self._cmd
        for i in range(19):
            c[i] = 0
        c[0] = _HEAD
        c[1] = _CMD
        c[2] = cmd
        c[3] = d1
        c[4] = d2
        c[15] = 0xFF  # device id FFFF = all devices
        c[16] = 0xFF
        c[17] = checksum(c, 2, 17)
        c[18] = _TAIL
        self.uart.write(c)

    def set_query_mode(self):
        self._send(_SET_MODE, 1, 1)  # set (1) reporting mode to query (1)
        # the reply names the command it answers (byte 2) and the mode now in force (byte 4): a reply to
        # something else, or one saying the sensor still reports on its own, is not a confirmation
        f = self._wait(_REPLY, 1000, _SET_MODE)
        if f is None:
            raise SensorError("sds011: no reply to the query-mode command")
        if f[4] != 1:
            raise SensorError("sds011: still in active reporting mode (reply mode %d)" % f[4])

    def sleep(self):
        self._send(_SLEEP, 1, 0)
        self._wait(_REPLY, 1000)

    def wake(self):
        self._send(_SLEEP, 1, 1)
        self._wait(_REPLY, 1000)

    def _wait(self, kind, timeout_ms, command=None):
        start = self._ticks_ms()
        p = self.parser
        rx = self._rx
        while self._ticks_diff(self._ticks_ms(), start) < timeout_ms:
            n = self.uart.readinto(rx) if self.uart.any() else 0
            if not n:
                self._sleep_ms(10)
                continue
            for i in range(n):
                if p.feed(rx[i]) and p.frame[1] == kind and (command is None or p.frame[2] == command):
                    return p.frame
        return None

    def read(self, timeout_ms=1500):
        """(pm2.5, pm10) in ug/m3 from a queried frame."""
        self._send(_QUERY)
        f = self._wait(_DATA, timeout_ms)
        if f is None:
            raise SensorError("sds011: no valid frame")
        return ((f[3] << 8) | f[2]) / 10, ((f[5] << 8) | f[4]) / 10
