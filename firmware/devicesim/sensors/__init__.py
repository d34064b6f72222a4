"""Byte-level sensor emulators (what the device's drivers talk to over I2C and UART), driven by a physical
model of the room over the device's clock."""

from .bme280 import BME280
from .environment import Environment
from .scd30 import SCD30, crc8
from .sds011 import SDS011

__all__ = ["BME280", "SCD30", "SDS011", "Environment", "crc8"]
