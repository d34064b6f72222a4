# Bosch BME280 (temperature, humidity, pressure) over I2C, forced mode.
#
# Compensation uses the datasheet's integer formulas (int32 temperature and humidity, int64 pressure):
# Python ints are exact on every port, so results do not depend on whether the port's floats are single
# (ESP32) or double precision, and they match the datasheet's worked example to the digit.
from micropython import const
import struct
import time

CHIP_ID = const(0x60)
_REG_ID = const(0xD0)
_REG_CALIB00 = const(0x88)  # 26 bytes: T1..T3, P1..P9, (A0 unused), H1
_REG_CALIB26 = const(0xE1)  # 7 bytes: H2..H6
_REG_CTRL_HUM = const(0xF2)
_REG_STATUS = const(0xF3)
_REG_CTRL_MEAS = const(0xF4)
_REG_DATA = const(0xF7)  # 8 bytes: press[3], temp[3], hum[2]
_OSRS_X1 = const(1)
_MODE_FORCED = const(1)
_STATUS_MEASURING = const(0x08)


class SensorError(Exception):
    pass


def _s8(v):
    return v - 256 if v & 0x80 else v


def _s12(v):
    return v - 4096 if v & 0x800 else v


class Calibration:
    def __init__(self, c00, c26):
        # c00: 26 bytes from 0x88, c26: 7 bytes from 0xE1 (datasheet table 16): T1 and P1 unsigned, the
        # other words signed, little-endian
        (self.t1, self.t2, self.t3, self.p1, self.p2, self.p3, self.p4, self.p5, self.p6, self.p7, self.p8,
         self.p9) = struct.unpack_from("<HhhHhhhhhhhh", c00)  # fmt: skip
        self.h1 = c00[25]
        self.h2 = struct.unpack_from("<h", c26)[0]
        self.h3 = c26[2]
        self.h4 = _s12((c26[3] << 4) | (c26[4] & 0x0F))
        self.h5 = _s12((c26[5] << 4) | (c26[4] >> 4))
        self.h6 = _s8(c26[6])


def _cdiv(a, b):
    # C integer division truncates toward zero; Python's // floors
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def compensate_temperature(cal, adc_t):
    """(temperature in 0.01 degC, t_fine) -- datasheet BME280_compensate_T_int32."""
    var1 = (((adc_t >> 3) - (cal.t1 << 1)) * cal.t2) >> 11
    d = (adc_t >> 4) - cal.t1
    var2 = (((d * d) >> 12) * cal.t3) >> 14
    t_fine = var1 + var2
    return (t_fine * 5 + 128) >> 8, t_fine


def compensate_pressure(cal, adc_p, t_fine):
    """Pressure in Pa as Q24.8 (divide by 256) -- datasheet BME280_compensate_P_int64."""
    var1 = t_fine - 128000
    var2 = var1 * var1 * cal.p6
    var2 = var2 + ((var1 * cal.p5) << 17)
    var2 = var2 + (cal.p4 << 35)
    var1 = ((var1 * var1 * cal.p3) >> 8) + ((var1 * cal.p2) << 12)
    var1 = (((1 << 47) + var1) * cal.p1) >> 33
    if var1 == 0:
        return 0  # avoid a division by zero, as the datasheet does
    p = 1048576 - adc_p
    p = _cdiv(((p << 31) - var2) * 3125, var1)
    var1 = (cal.p9 * (p >> 13) * (p >> 13)) >> 25
    var2 = (cal.p8 * p) >> 19
    return ((p + var1 + var2) >> 8) + (cal.p7 << 4)


def compensate_humidity(cal, adc_h, t_fine):
    """Relative humidity in %RH as Q22.10 (divide by 1024) -- datasheet bme280_compensate_H_int32."""
    v = t_fine - 76800
    v = (((adc_h << 14) - (cal.h4 << 20) - (cal.h5 * v)) + 16384) >> 15
    v = v * (
        (((((((t_fine - 76800) * cal.h6) >> 10) * ((((t_fine - 76800) * cal.h3) >> 11) + 32768)) >> 10) + 2097152)
        * cal.h2
        + 8192)
        >> 14
    )
    v = v - (((((v >> 15) * (v >> 15)) >> 7) * cal.h1) >> 4)
    if v < 0:
        v = 0
    if v > 419430400:
        v = 419430400
    return v >> 12


class BME280:
    def __init__(self, i2c, address=0x76, sleep_ms=None):
        self.i2c = i2c
        self.address = address
        self._sleep_ms = sleep_ms or time.sleep_ms
        self._one = bytearray(1)
        self._data = bytearray(8)
        self.i2c.readfrom_mem_into(address, _REG_ID, self._one)
        if self._one[0] != CHIP_ID:
            raise SensorError("bme280: chip id 0x%02x, expected 0x60" % self._one[0])
        c00 = bytearray(26)
        c26 = bytearray(7)
        self.i2c.readfrom_mem_into(address, _REG_CALIB00, c00)
        self.i2c.readfrom_mem_into(address, _REG_CALIB26, c26)
        # an unprogrammed (or unreadable) calibration block reads as zeros: every result would be a
        # plausible-looking number (0 hPa), so the sensor counts as failed instead
        if not any(c00[:24]):
            raise SensorError("bme280: calibration data is all zero")
        self.humidity_calibrated = bool(c00[25] or any(c26))
        self.cal = Calibration(c00, c26)

    def _write(self, reg, value):
        self._one[0] = value
        self.i2c.writeto_mem(self.address, reg, self._one)

    def read_raw(self):
        """One forced-mode conversion: (adc_t, adc_p, adc_h)."""
        # ctrl_hum only takes effect after the following ctrl_meas write (datasheet 5.4.3)
        self._write(_REG_CTRL_HUM, _OSRS_X1)
        self._write(_REG_CTRL_MEAS, (_OSRS_X1 << 5) | (_OSRS_X1 << 2) | _MODE_FORCED)
        # x1 oversampling of all three: at most 9.3 ms (datasheet 9.1); poll rather than guess
        for _ in range(50):
            self._sleep_ms(2)
            self.i2c.readfrom_mem_into(self.address, _REG_STATUS, self._one)
            if not self._one[0] & _STATUS_MEASURING:
                break
        else:
            raise SensorError("bme280: conversion did not finish")
        d = self._data
        self.i2c.readfrom_mem_into(self.address, _REG_DATA, d)
        adc_p = (d[0] << 12) | (d[1] << 4) | (d[2] >> 4)
        adc_t = (d[3] << 12) | (d[4] << 4) | (d[5] >> 4)
        adc_h = (d[6] << 8) | d[7]
        if adc_t == 0x80000:
            raise SensorError("bme280: temperature skipped (0x80000)")
        return adc_t, adc_p, adc_h

    def read(self):
        """(temperature degC, relative humidity %, pressure hPa); humidity or pressure is None when the
        chip skipped that measurement (0x8000 / 0x80000, datasheet 4.1) or cannot be compensated."""
        adc_t, adc_p, adc_h = self.read_raw()
        t, t_fine = compensate_temperature(self.cal, adc_t)
        p = None
        if adc_p != 0x80000:
            p = compensate_pressure(self.cal, adc_p, t_fine)
            p = p / 25600 if p else None  # 0: the datasheet's division-by-zero guard
        h = None
        if adc_h != 0x8000 and self.humidity_calibrated:
            h = compensate_humidity(self.cal, adc_h, t_fine) / 1024
        return t / 100, h, p
