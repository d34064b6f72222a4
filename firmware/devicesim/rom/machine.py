# machine, as the ESP32 port has it (MicroPython), wired to the hardware host: I2C and UART reach the
# byte-level sensor emulators, WDT and reset are the host's to enforce, reset_cause/unique_id are this
# boot's. On the board's path it takes the place of the unix port's built-in machine module.
from micropython import const
import time

import _hw

PWRON_RESET = const(1)
HARD_RESET = const(2)
WDT_RESET = const(3)
DEEPSLEEP_RESET = const(4)
SOFT_RESET = const(5)
_NONE = const(0xFFFF)


class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_UP = 2
    PULL_DOWN = 1
    IRQ_RISING = 1
    IRQ_FALLING = 2

    def __init__(self, id, mode=-1, pull=-1, *, value=None, **kw):
        self.id = id
        self._v = value or 0

    def init(self, *a, **kw):
        pass

    def value(self, v=None):
        if v is None:
            return self._v
        self._v = 1 if v else 0

    __call__ = value

    def on(self):
        self._v = 1

    def off(self):
        self._v = 0

    def irq(self, handler=None, trigger=3, **kw):
        return None


def _i2c_args(addr, reg, n=0):
    _hw.args(addr, reg & 0xFF, reg >> 8, n & 0xFF, n >> 8)


class I2C:
    def __init__(self, id=0, *, scl=None, sda=None, freq=400000, timeout=50000):
        self.id = id

    def init(self, *a, **kw):
        pass

    def deinit(self):
        pass

    def scan(self):
        _hw.args()
        return list(_hw.call(_hw.OP_I2C_SCAN))

    def writeto(self, addr, buf, stop=True):
        _i2c_args(addr, _NONE)
        _hw.call(_hw.OP_I2C_WRITE, buf)
        return len(buf)

    def writevto(self, addr, vector, stop=True):
        data = b"".join(bytes(b) for b in vector)
        return self.writeto(addr, data)

    def readfrom_into(self, addr, buf, stop=True):
        _i2c_args(addr, _NONE, len(buf))
        _hw.call(_hw.OP_I2C_READ, None, buf)

    def readfrom(self, addr, nbytes, stop=True):
        b = bytearray(nbytes)
        self.readfrom_into(addr, b)
        return bytes(b)

    def readfrom_mem_into(self, addr, memaddr, buf, *, addrsize=8):
        _i2c_args(addr, memaddr, len(buf))
        _hw.call(_hw.OP_I2C_READ, None, buf)

    def readfrom_mem(self, addr, memaddr, nbytes, *, addrsize=8):
        b = bytearray(nbytes)
        self.readfrom_mem_into(addr, memaddr, b)
        return bytes(b)

    def writeto_mem(self, addr, memaddr, buf, *, addrsize=8):
        _i2c_args(addr, memaddr)
        _hw.call(_hw.OP_I2C_WRITE, buf)


SoftI2C = I2C


class UART:
    INV_TX = 1
    INV_RX = 2
    RTS = 4
    CTS = 8

    def __init__(self, id, baudrate=115200, **kw):
        self.id = id
        self.init(baudrate, **kw)

    def init(self, baudrate=9600, **kw):
        # the host keeps the RX FIFO (rxbuf bytes, overflow dropped like the ESP32's)
        self.baudrate = baudrate
        self.timeout = kw.get("timeout", 0)
        _hw.args(ord("i"), self.id, kw.get("rxbuf", 256) & 0xFF, kw.get("rxbuf", 256) >> 8, 1 if baudrate == 9600 else 0)
        _hw.call(_hw.OP_UART)

    def deinit(self):
        pass

    def any(self):
        _hw.args(ord("a"), self.id)
        b = _hw.call(_hw.OP_UART, None, _hw.req)
        r = _hw.req
        return r[0] | r[1] << 8

    def readinto(self, buf, nbytes=-1):
        n = len(buf) if nbytes < 0 else nbytes
        _hw.args(ord("r"), self.id, 0, n & 0xFF, n >> 8)
        _hw.send(_hw.OP_UART)
        got = _hw.answer(buf)
        return got or None

    def read(self, nbytes=-1):
        n = self.any() if nbytes < 0 else nbytes
        b = bytearray(n)
        got = self.readinto(b, n)
        return bytes(b[:got]) if got else None

    def readline(self):
        _hw.args(ord("l"), self.id)
        data = _hw.call(_hw.OP_UART)
        return bytes(data) if data else None

    def write(self, buf):
        _hw.args(ord("w"), self.id)
        _hw.call(_hw.OP_UART, buf)
        return len(buf)

    def flush(self):
        pass

    def txdone(self):
        return True


class WDT:
    """Task watchdog: once started it cannot be stopped; the host resets the board when it starves."""

    def __init__(self, id=0, timeout=5000):
        t = max(1, int(timeout))
        _hw.args(t & 0xFF, (t >> 8) & 0xFF, (t >> 16) & 0xFF, t >> 24)
        _hw.send(_hw.OP_WDT)

    def feed(self):
        _hw.args()
        _hw.send(_hw.OP_WDT)


class RTC:
    _mem = bytearray()

    def __init__(self, id=0):
        pass

    def datetime(self, value=None):
        if value is not None:
            return None
        t = time.gmtime()
        return (t[0], t[1], t[2], t[6], t[3], t[4], t[5], 0)

    def init(self, value):
        pass

    def memory(self, data=None):
        if data is None:
            return bytes(RTC._mem)
        RTC._mem = bytearray(data)


def reset():
    # esp_restart(): the ESP32 reports ESP_RST_SW as SOFT_RESET
    _hw.reset(SOFT_RESET)


def soft_reset():
    _hw.reset(SOFT_RESET)


def deepsleep(ms=0):
    _hw.reset(DEEPSLEEP_RESET)


def lightsleep(ms=0):
    time.sleep_ms(ms)


def reset_cause():
    return _hw.CAUSE


def unique_id():
    return _hw.UID


def freq(hz=None):
    return 240000000 if hz is None else None


def idle():
    time.sleep_ms(1)


def disable_irq():
    return 0


def enable_irq(state=0):
    pass


def wake_reason():
    return 0
