"""Nova SDS011 particulate sensor on UART (9600 8N1).

Active mode: a 10-byte data frame `AA C0 pm25(le16) pm10(le16) id(2) checksum AB` every second (values in
0.1 ug/m3, checksum = low byte of the sum of the six data bytes). Commands are 19-byte frames
`AA B4 cmd d1..d12 FF FF checksum AB`; replies `AA C5 ...`. Query mode answers only command 4; sleep turns
the fan and laser off and ignores everything except the wake command. Optional line noise (garbage
between frames) and corruption (a flipped byte inside a frame) exercise the driver's resync."""

from __future__ import annotations

import random

from .environment import Clock, World

CMD_MODE, CMD_QUERY, CMD_SET_ID, CMD_SLEEP, CMD_FIRMWARE, CMD_PERIOD = 2, 4, 5, 6, 7, 8


def checksum(data: bytes) -> int:
    return sum(data) & 0xFF


def data_frame(pm25: float, pm10: float, device_id: int = 0xA160) -> bytes:
    a, b = min(9999, round(pm25 * 10)), min(9999, round(pm10 * 10))
    body = bytes([a & 0xFF, a >> 8, b & 0xFF, b >> 8, device_id >> 8, device_id & 0xFF])
    return b"\xaa\xc0" + body + bytes([checksum(body)]) + b"\xab"


def reply_frame(command: int, d1: int, d2: int, d3: int = 0, device_id: int = 0xA160) -> bytes:
    body = bytes([command, d1, d2, d3, device_id >> 8, device_id & 0xFF])
    return b"\xaa\xc5" + body + bytes([checksum(body)]) + b"\xab"


def command_frame(command: int, *data: int, device_id: int = 0xFFFF) -> bytes:
    """What a host sends (used by tests; the device driver builds its own)."""
    body = bytes([command, *data]).ljust(13, b"\0") + bytes([device_id >> 8, device_id & 0xFF])
    return b"\xaa\xb4" + body + bytes([checksum(body)]) + b"\xab"


class SDS011:
    def __init__(
        self,
        clock: Clock,
        world: World,
        seed: int = 0,
        noise: float = 0.0,
        corruption: float = 0.0,
        device_id: int = 0xA160,
    ) -> None:
        self.clock, self.world = clock, world
        self.rng = random.Random(seed)
        self.noise, self.corruption = noise, corruption
        self.device_id = device_id
        self.failed = False  # unplugged: silent
        self.query_mode = False
        self.sleeping = False
        self.period_minutes = 0
        self._next_frame = clock() + 1.0
        self._inbox = bytearray()
        self.frames_sent = 0
        self.laser_seconds = 0.0
        self._awake_since = clock()
        self.last_truth: dict[str, float] | None = None

    def _frame_now(self, t: float) -> bytes:
        truth = self.world(t)
        self.last_truth = truth
        frame = bytearray(data_frame(truth["pm25"], truth["pm10"], self.device_id))
        if self.corruption and self.rng.random() < self.corruption:
            frame[self.rng.randrange(2, 8)] ^= 1 << self.rng.randrange(8)
        out = bytes(frame)
        if self.noise and self.rng.random() < self.noise:
            out = bytes(self.rng.randrange(256) for _ in range(self.rng.randrange(1, 6))) + out
        self.frames_sent += 1
        return out

    def uart_poll(self) -> bytes:
        """Bytes the sensor has sent since the last poll."""
        if self.failed or self.sleeping or self.query_mode:
            return b""
        now, out = self.clock(), bytearray()
        period = 1.0 if self.period_minutes == 0 else 60.0 * self.period_minutes
        if now - self._next_frame > 10 * period:  # nobody listened for a long time: only recent frames
            self._next_frame = now - 4 * period
        while self._next_frame <= now:
            out += self._frame_now(self._next_frame)
            self._next_frame += period
        return bytes(out)

    def uart_receive(self, data: bytes) -> bytes:
        """Bytes written by the host; returns the immediate reply bytes."""
        if self.failed:
            return b""
        self._inbox += data
        out = bytearray()
        while True:
            start = self._inbox.find(b"\xaa\xb4")
            if start < 0:
                self._inbox = self._inbox[-1:] if self._inbox[-1:] == b"\xaa" else bytearray()
                break
            if len(self._inbox) - start < 19:
                del self._inbox[:start]
                break
            frame = bytes(self._inbox[start : start + 19])
            del self._inbox[: start + 19]
            if frame[18] != 0xAB or checksum(frame[2:17]) != frame[17]:
                continue
            out += self._command(frame[2], frame[3], frame[4])
        return bytes(out)

    def _command(self, command: int, d1: int, d2: int) -> bytes:
        if self.sleeping and command != CMD_SLEEP:
            return b""
        if command == CMD_MODE:
            if d1 == 1:
                self.query_mode = d2 == 1
            return reply_frame(CMD_MODE, d1, int(self.query_mode), device_id=self.device_id)
        if command == CMD_QUERY:
            return self._frame_now(self.clock())
        if command == CMD_SLEEP:
            if d1 == 1:
                now = self.clock()
                if d2 == 0 and not self.sleeping:
                    self.laser_seconds += now - self._awake_since
                elif d2 == 1 and self.sleeping:
                    self._awake_since, self._next_frame = now, now + 1.0
                self.sleeping = d2 == 0
            return reply_frame(CMD_SLEEP, d1, 0 if self.sleeping else 1, device_id=self.device_id)
        if command == CMD_PERIOD:
            if d1 == 1:
                self.period_minutes = d2
            return reply_frame(CMD_PERIOD, d1, self.period_minutes, device_id=self.device_id)
        if command == CMD_FIRMWARE:
            return reply_frame(CMD_FIRMWARE, 18, 11, 16, device_id=self.device_id)
        return b""
