# The sensors this board has, built from the config's wiring. A sensor that fails (absent, bad CRC,
# timeout) is reported in status and skipped; the others keep publishing. Failed sensors are re-tried
# (re-initialised) on the next cycle.
import asyncio

import payload


class Sensors:
    def __init__(self, wiring, interval_s, make_i2c=None, make_uart=None, sds_warmup_s=20):
        self.wiring = wiring
        self.interval_s = interval_s
        self.sds_warmup_s = sds_warmup_s
        self._make_i2c = make_i2c or _machine_i2c
        self._make_uart = make_uart or _machine_uart
        self._buses = {}
        self.drivers = {}
        self.status = {}
        for w in wiring:
            self.status[w["type"]] = "not read yet"

    def _bus(self, w):
        key = ("i2c", w.get("bus", 0))
        if key not in self._buses:
            self._buses[key] = self._make_i2c(w)
        return self._buses[key]

    def _driver(self, w):
        kind = w["type"]
        d = self.drivers.get(kind)
        if d is not None:
            return d
        try:
            module = __import__(kind)
        except ImportError:
            raise RuntimeError("%s driver not in this build" % kind)
        if kind == "bme280":
            d = module.BME280(self._bus(w), w.get("address", 0x76))
        elif kind == "scd30":
            d = module.SCD30(self._bus(w), w.get("address", 0x61))
        else:
            d = module.SDS011(self._make_uart(w))
            if self._sleeps():
                d.sleep()
        self.drivers[kind] = d
        return d

    def _sleeps(self):
        # the laser only sleeps between readings when the gap is worth the warm-up
        return self.interval_s > 2 * self.sds_warmup_s

    async def read(self, values):
        """Fill values (payload.FIELDS order) with what the working sensors report; None elsewhere."""
        for i in range(len(values)):
            values[i] = None
        for w in self.wiring:
            kind = w["type"]
            try:
                d = self._driver(w)
                if kind == "bme280":
                    t, h, p = d.read()
                    values[payload.TEMPERATURE] = t
                    values[payload.HUMIDITY] = h
                    values[payload.PRESSURE] = p
                elif kind == "scd30":
                    r = d.read()
                    if r is not None:
                        values[payload.CO2] = r[0]
                elif kind == "sds011":
                    if self._sleeps():
                        d.wake()
                        await asyncio.sleep(self.sds_warmup_s)
                    values[payload.PM25], values[payload.PM10] = d.read()
                    if self._sleeps():
                        d.sleep()
                self.status[kind] = "ok"
            except Exception as e:
                self.status[kind] = str(e) or type(e).__name__
                self.drivers.pop(kind, None)
        return values


def _machine_i2c(w):
    from machine import I2C, Pin

    return I2C(w.get("bus", 0), scl=Pin(w.get("scl", 22)), sda=Pin(w.get("sda", 21)), freq=w.get("freq", 100000))


def _machine_uart(w):
    from machine import UART

    return UART(w.get("uart", 2), baudrate=9600, tx=w.get("tx", 17), rx=w.get("rx", 16), timeout=100)
