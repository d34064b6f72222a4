"""Bosch BME280 on I2C (address 0x76/0x77), register by register.

The emulator holds factory calibration like a real part (the datasheet's worked-example trimming values,
nudged per seed so a driver that ignores calibration reads wrong values) and, when a measurement
completes, stores the raw ADC words that the datasheet's integer compensation turns back into the model's
temperature, pressure and humidity: each compensation is monotonic in its ADC value, so the raw word is
found by binary search over the ADC range using the very formulas of the datasheet (section 4.2.3/8.2)."""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from dataclasses import dataclass

from .environment import Clock, World

CHIP_ID = 0x60
REG_CALIB_00, REG_CHIP_ID, REG_RESET, REG_CALIB_26 = 0x88, 0xD0, 0xE0, 0xE1
REG_CTRL_HUM, REG_STATUS, REG_CTRL_MEAS, REG_CONFIG, REG_DATA = 0xF2, 0xF3, 0xF4, 0xF5, 0xF7
OVERSAMPLING = (0, 1, 2, 4, 8, 16, 16, 16)


@dataclass(frozen=True)
class Calibration:
    T1: int = 27504
    T2: int = 26435
    T3: int = -1000
    P1: int = 36477
    P2: int = -10685
    P3: int = 3024
    P4: int = 2855
    P5: int = 140
    P6: int = -7
    P7: int = 15500
    P8: int = -14600
    P9: int = 6000
    H1: int = 75
    H2: int = 362
    H3: int = 0
    H4: int = 324
    H5: int = 50
    H6: int = 30

    def registers(self) -> dict[int, int]:
        """The calibration as it sits in NVM: 0x88..0xA1 and 0xE1..0xE7."""
        block1 = struct.pack(
            "<Hhh" + "H" + "h" * 8,
            self.T1,
            self.T2,
            self.T3,
            self.P1,
            self.P2,
            self.P3,
            self.P4,
            self.P5,
            self.P6,
            self.P7,
            self.P8,
            self.P9,
        )
        regs = {REG_CALIB_00 + i: b for i, b in enumerate(block1)}
        regs[0xA1] = self.H1 & 0xFF
        h2 = struct.pack("<h", self.H2)
        regs.update({0xE1: h2[0], 0xE2: h2[1], 0xE3: self.H3 & 0xFF})
        regs[0xE4] = (self.H4 >> 4) & 0xFF
        regs[0xE5] = ((self.H5 & 0x0F) << 4) | (self.H4 & 0x0F)
        regs[0xE6] = (self.H5 >> 4) & 0xFF
        regs[0xE7] = self.H6 & 0xFF
        return regs


def _tdiv(a: int, b: int) -> int:
    """C integer division (truncates toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def compensate_temperature(adc_t: int, c: Calibration) -> tuple[int, int]:
    """(t_fine, temperature in 0.01 degC): datasheet BME280_compensate_T_int32."""
    var1 = (((adc_t >> 3) - (c.T1 << 1)) * c.T2) >> 11
    var2 = (((((adc_t >> 4) - c.T1) * ((adc_t >> 4) - c.T1)) >> 12) * c.T3) >> 14
    t_fine = var1 + var2
    return t_fine, (t_fine * 5 + 128) >> 8


def compensate_pressure(adc_p: int, t_fine: int, c: Calibration) -> int:
    """Pressure in Pa as Q24.8: datasheet BME280_compensate_P_int64."""
    var1 = t_fine - 128000
    var2 = var1 * var1 * c.P6
    var2 = var2 + ((var1 * c.P5) << 17)
    var2 = var2 + (c.P4 << 35)
    var1 = ((var1 * var1 * c.P3) >> 8) + ((var1 * c.P2) << 12)
    var1 = (((1 << 47) + var1) * c.P1) >> 33
    if var1 == 0:
        return 0
    p = 1048576 - adc_p
    p = _tdiv(((p << 31) - var2) * 3125, var1)
    var1 = (c.P9 * (p >> 13) * (p >> 13)) >> 25
    var2 = (c.P8 * p) >> 19
    return ((p + var1 + var2) >> 8) + (c.P7 << 4)


def compensate_humidity(adc_h: int, t_fine: int, c: Calibration) -> int:
    """Relative humidity in %RH as Q22.10: datasheet bme280_compensate_H_int32."""
    v = t_fine - 76800
    v = ((((adc_h << 14) - (c.H4 << 20) - (c.H5 * v)) + 16384) >> 15) * (
        ((((((v * c.H6) >> 10) * (((v * c.H3) >> 11) + 32768)) >> 10) + 2097152) * c.H2 + 8192) >> 14
    )
    v = v - (((((v >> 15) * (v >> 15)) >> 7) * c.H1) >> 4)
    v = max(0, min(v, 419430400))
    return v >> 12


def _invert(f: Callable[[int], int], target: float, low: int, high: int, increasing: bool) -> int:
    """The ADC value in [low, high] whose compensated value is closest to `target`."""
    lo, hi = low, high
    while lo < hi:
        mid = (lo + hi) // 2
        below = f(mid) < target
        if below == increasing:
            lo = mid + 1
        else:
            hi = mid
    candidates = [x for x in (lo - 1, lo) if low <= x <= high]
    return min(candidates, key=lambda x: abs(f(x) - target))


def raw_for(values: dict[str, float], c: Calibration) -> tuple[int, int, int]:
    """(adc_T, adc_P, adc_H) that compensate to the given temperature (degC), pressure (hPa), humidity (%)."""
    adc_t = _invert(lambda x: compensate_temperature(x, c)[1], values["temperature"] * 100, 0, 0xFFFFF, True)
    t_fine, _ = compensate_temperature(adc_t, c)
    adc_p = _invert(
        lambda x: compensate_pressure(x, t_fine, c), values["pressure"] * 100 * 256, 0, 0xFFFFF, False
    )
    adc_h = _invert(lambda x: compensate_humidity(x, t_fine, c), values["humidity"] * 1024, 0, 0xFFFF, True)
    return adc_t, adc_p, adc_h


class BME280:
    """The chip behind one I2C address. `clock()` returns device seconds; `world(t)` the true values."""

    def __init__(self, clock: Clock, world: World, address: int = 0x76, seed: int = 0) -> None:
        self.address, self.clock, self.world = address, clock, world
        rng = random.Random(seed)
        self.calibration = Calibration(
            T1=27504 + rng.randint(-80, 80), P1=36477 + rng.randint(-150, 150), H2=362 + rng.randint(-10, 10)
        )
        self.failed = False  # set by tests: the chip stops answering (NACK)
        self.measurements = 0
        self._reset()

    def _reset(self) -> None:
        self.regs = bytearray(256)
        for reg, value in self.calibration.registers().items():
            self.regs[reg] = value
        self.regs[REG_CHIP_ID] = CHIP_ID
        self._store_raw(0x80000, 0x80000, 0x8000)  # "skipped" values after reset
        self._pointer = 0
        self._busy_until = 0.0
        self._pending = False
        self.last_truth: dict[str, float] | None = None

    def _store_raw(self, adc_t: int, adc_p: int, adc_h: int) -> None:
        self.regs[0xF7:0xFA] = bytes([(adc_p >> 12) & 0xFF, (adc_p >> 4) & 0xFF, (adc_p << 4) & 0xF0])
        self.regs[0xFA:0xFD] = bytes([(adc_t >> 12) & 0xFF, (adc_t >> 4) & 0xFF, (adc_t << 4) & 0xF0])
        self.regs[0xFD:0xFF] = bytes([(adc_h >> 8) & 0xFF, adc_h & 0xFF])

    def _measurement_seconds(self) -> float:
        meas, hum = self.regs[REG_CTRL_MEAS], self.regs[REG_CTRL_HUM]
        t, p, h = OVERSAMPLING[meas >> 5], OVERSAMPLING[(meas >> 2) & 7], OVERSAMPLING[hum & 7]
        ms = 1.25 + 2.3 * t + (2.3 * p + 0.575 if p else 0) + (2.3 * h + 0.575 if h else 0)
        return ms / 1000

    def _settle(self) -> None:
        """Latch a finished conversion into the data registers (the chip's shadowing)."""
        now = self.clock()
        mode = self.regs[REG_CTRL_MEAS] & 3
        if self._pending and now >= self._busy_until:
            self._pending = False
            self._latch(self._busy_until)
            if mode == 1 or mode == 2:
                self.regs[REG_CTRL_MEAS] &= 0xFC  # forced mode returns to sleep
        elif mode == 3 and now >= self._busy_until:
            self._latch(now)
            self._busy_until = now + self._measurement_seconds()

    def _latch(self, t: float) -> None:
        truth = self.world(t)
        adc_t, adc_p, adc_h = raw_for(truth, self.calibration)
        meas, hum = self.regs[REG_CTRL_MEAS], self.regs[REG_CTRL_HUM]
        self._store_raw(
            adc_t if meas >> 5 else 0x80000,
            adc_p if (meas >> 2) & 7 else 0x80000,
            adc_h if hum & 7 else 0x8000,
        )
        self.last_truth = truth
        self.measurements += 1

    # -- I2C transactions -----------------------------------------------------------------------------
    def i2c_write(self, data: bytes) -> None:
        if self.failed:
            raise OSError(19, "ENODEV")
        if not data:
            return
        self._pointer = data[0]
        # BME280 writes are (register, value) pairs after the first register
        pairs = [(data[0], data[1])] if len(data) > 1 else []
        pairs += [(data[i], data[i + 1]) for i in range(2, len(data) - 1, 2)]
        for reg, value in pairs:
            self._write_register(reg, value)

    def _write_register(self, reg: int, value: int) -> None:
        if reg == REG_RESET:
            if value == 0xB6:
                self._reset()
            return
        if reg == REG_CTRL_HUM:
            self.regs[reg] = value & 0x07
        elif reg == REG_CONFIG:
            self.regs[reg] = value & 0xFD
        elif reg == REG_CTRL_MEAS:
            self._settle()
            self.regs[reg] = value
            if value & 3:
                self._pending = (value & 3) != 3
                self._busy_until = self.clock() + self._measurement_seconds()

    def i2c_read(self, count: int) -> bytes:
        if self.failed:
            raise OSError(19, "ENODEV")
        self._settle()
        status = 0x08 if self._pending else 0x00
        self.regs[REG_STATUS] = status
        out = bytes(self.regs[(self._pointer + i) & 0xFF] for i in range(count))
        self._pointer = (self._pointer + count) & 0xFF
        return out
