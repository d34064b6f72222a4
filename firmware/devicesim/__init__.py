"""Hardware emulation that runs the real MicroPython device code (firmware/device/) on CPython.

Each emulated device gets its own flash directory, its own sensors driven by a physical model, and its own
set of MicroPython module shims (`machine`, `esp32`, `network`, `time`, `asyncio`, ...) that the device
code imports through a per-device `__import__`; many devices share one process and one asyncio loop.
"""

from .device import Device, DeviceConfigError, DeviceState
from .errors import DeviceReset, PowerCut
from .flash import Flash
from .partition import PartitionTable

__all__ = ["Device", "DeviceConfigError", "DeviceReset", "DeviceState", "Flash", "PartitionTable", "PowerCut"]
