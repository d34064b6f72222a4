"""`machine` for one boot: I2C/SoftI2C and UART wired to this device's sensor emulators, Pin, WDT, RTC,
reset/reset_cause/unique_id/freq/idle/deepsleep. Errors match the ESP32 port (OSError ENODEV for an
absent I2C address, ETIMEDOUT for a stuck bus)."""

from __future__ import annotations

import types
from typing import TYPE_CHECKING

from ..errors import DeviceReset

if TYPE_CHECKING:
    from ..device import Boot

PWRON_RESET, HARD_RESET, WDT_RESET, DEEPSLEEP_RESET, SOFT_RESET = 1, 2, 3, 4, 5


class _Bound:
    _boot: Boot

    @classmethod
    def _device(cls):
        cls._boot.check()
        return cls._boot.device


class I2C(_Bound):
    def __init__(self, id=0, *, scl=None, sda=None, freq=400_000, timeout=50_000) -> None:
        self.id, self.freq = id, freq

    def init(self, *args, **kwargs) -> None:
        pass

    def deinit(self) -> None:
        pass

    def _chip(self, address: int):
        chip = self._device().i2c.get(address)
        if chip is None or chip.failed:
            raise OSError(19, "ENODEV")
        return chip

    def scan(self) -> list[int]:
        return sorted(a for a, chip in self._device().i2c.items() if not chip.failed)

    def writeto(self, address: int, buf, stop: bool = True) -> int:
        self._chip(address).i2c_write(bytes(buf))
        return len(buf)

    def writevto(self, address: int, vector, stop: bool = True) -> int:
        data = b"".join(bytes(b) for b in vector)
        self._chip(address).i2c_write(data)
        return len(data)

    def readfrom(self, address: int, nbytes: int, stop: bool = True) -> bytes:
        return self._chip(address).i2c_read(nbytes)

    def readfrom_into(self, address: int, buf, stop: bool = True) -> None:
        buf[:] = self._chip(address).i2c_read(len(buf))

    def readfrom_mem(self, address: int, memaddr: int, nbytes: int, *, addrsize: int = 8) -> bytes:
        chip = self._chip(address)
        chip.i2c_write(memaddr.to_bytes(addrsize // 8, "big"))
        return chip.i2c_read(nbytes)

    def readfrom_mem_into(self, address: int, memaddr: int, buf, *, addrsize: int = 8) -> None:
        buf[:] = self.readfrom_mem(address, memaddr, len(buf), addrsize=addrsize)

    def writeto_mem(self, address: int, memaddr: int, buf, *, addrsize: int = 8) -> None:
        self._chip(address).i2c_write(memaddr.to_bytes(addrsize // 8, "big") + bytes(buf))


class UART(_Bound):
    INV_TX, INV_RX, RTS, CTS = 1, 2, 4, 8

    def __init__(self, id: int, baudrate: int = 115200, **kwargs) -> None:
        self.id = id
        self._rx = bytearray()
        self.baudrate = baudrate
        self.rxbuf = kwargs.get("rxbuf", 256)
        self.timeout_ms = kwargs.get("timeout", 0)

    def init(self, baudrate: int = 9600, **kwargs) -> None:
        self.baudrate = baudrate
        self.rxbuf = kwargs.get("rxbuf", self.rxbuf)
        self.timeout_ms = kwargs.get("timeout", self.timeout_ms)

    def deinit(self) -> None:
        pass

    def _peer(self):
        uarts = self._device().uart
        return uarts.get(self.id) or (next(iter(uarts.values())) if len(uarts) == 1 else None)

    def _fill(self) -> None:
        peer = self._peer()
        if peer is None or self.baudrate != 9600:
            return  # nothing wired, or a wrong baud rate: the line carries no readable bytes
        incoming = peer.uart_poll()
        room = self.rxbuf - len(self._rx)
        self._rx += incoming[: max(0, room)]  # the ESP32 RX FIFO drops what does not fit

    def any(self) -> int:
        self._fill()
        return len(self._rx)

    def read(self, nbytes: int | None = None) -> bytes | None:
        self._fill()
        if not self._rx:
            return None
        count = len(self._rx) if nbytes is None else min(nbytes, len(self._rx))
        out = bytes(self._rx[:count])
        del self._rx[:count]
        return out

    def readinto(self, buf, nbytes: int | None = None) -> int | None:
        data = self.read(len(buf) if nbytes is None else nbytes)
        if data is None:
            return None
        buf[: len(data)] = data
        return len(data)

    def readline(self) -> bytes | None:
        self._fill()
        end = self._rx.find(b"\n")
        return self.read(end + 1 if end >= 0 else None)

    def write(self, buf) -> int:
        peer = self._peer()
        data = bytes(buf)
        if peer is not None and self.baudrate == 9600:
            reply = peer.uart_receive(data)
            self._fill()
            self._rx += reply[: max(0, self.rxbuf - len(self._rx))]
        return len(data)

    def flush(self) -> None:
        pass

    def txdone(self) -> bool:
        return True


class Pin(_Bound):
    IN, OUT, OPEN_DRAIN = 1, 3, 7
    PULL_UP, PULL_DOWN = 2, 1
    IRQ_RISING, IRQ_FALLING = 1, 2

    def __init__(self, id, mode=-1, pull=-1, *, value=None, **kwargs) -> None:
        self.id, self.mode, self._value = id, mode, value or 0

    def init(self, *args, **kwargs) -> None:
        pass

    def value(self, value=None):
        if value is None:
            return self._value
        self._value = 1 if value else 0
        return None

    __call__ = value

    def on(self) -> None:
        self._value = 1

    def off(self) -> None:
        self._value = 0

    def irq(self, handler=None, trigger=3, **kwargs):
        return None


class WDT(_Bound):
    """The task watchdog: once started it cannot be stopped, and it resets the board when not fed."""

    def __init__(self, id: int = 0, timeout: int = 5000) -> None:
        boot = self._boot
        boot.check()
        boot.wdt_timeout_ms = max(1, int(timeout))
        boot.wdt_fed_at = boot.device.clock.monotonic()

    def feed(self) -> None:
        self._boot.check()
        self._boot.wdt_fed_at = self._boot.device.clock.monotonic()


class RTC(_Bound):
    def datetime(self, value=None):
        boot = self._boot
        if value is not None:
            return None
        import time as host_time

        t = host_time.gmtime(boot.device.clock.epoch())
        return (t.tm_year, t.tm_mon, t.tm_mday, t.tm_wday, t.tm_hour, t.tm_min, t.tm_sec, 0)

    def init(self, value) -> None:
        pass

    def memory(self, data=None):
        store = self._boot.device.__dict__.setdefault("rtc_memory", bytearray())
        if data is None:
            return bytes(store)
        store[:] = bytes(data)
        return None


def make_machine(boot: Boot) -> types.ModuleType:
    module = types.ModuleType("machine")
    for cls in (I2C, UART, Pin, WDT, RTC):
        setattr(module, cls.__name__, type(cls.__name__, (cls,), {"_boot": boot}))
    module.SoftI2C = module.I2C
    device = boot.device

    def reset() -> None:
        device.request_reset(boot, HARD_RESET, "machine.reset()")
        raise DeviceReset(HARD_RESET, "machine.reset()")

    def soft_reset() -> None:
        device.request_reset(boot, SOFT_RESET, "machine.soft_reset()")
        raise DeviceReset(SOFT_RESET, "machine.soft_reset()")

    def deepsleep(ms: int = 0) -> None:
        device.request_reset(boot, DEEPSLEEP_RESET, "deepsleep")
        raise DeviceReset(DEEPSLEEP_RESET, "deepsleep")

    module.reset, module.soft_reset, module.deepsleep = reset, soft_reset, deepsleep
    module.reset_cause = lambda: boot.cause
    module.unique_id = lambda: device.unique_id
    module.freq = lambda hz=None: 240_000_000 if hz is None else None
    module.idle = lambda: None
    module.lightsleep = lambda ms=0: module_time(boot).sleep_ms(ms)
    module.disable_irq = lambda: 0
    module.enable_irq = lambda state=0: None
    module.wake_reason = lambda: 0
    for name, value in dict(
        PWRON_RESET=1, HARD_RESET=2, WDT_RESET=3, DEEPSLEEP_RESET=4, SOFT_RESET=5
    ).items():
        setattr(module, name, value)
    return module


def module_time(boot: Boot):
    return boot.importer.load("time")
