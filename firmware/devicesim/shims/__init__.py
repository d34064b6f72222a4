"""MicroPython modules for one boot of one device: each factory takes the Boot and returns a fresh module."""

from __future__ import annotations

from .aio import make_asyncio
from .clocks import make_time
from .esp32 import make_esp32
from .fs import make_os
from .machine import make_machine
from .net import make_socket, make_ssl
from .network import make_network
from .runtime import make_gc, make_micropython, make_sys

SHIMS = {
    "asyncio": make_asyncio,
    "esp32": make_esp32,
    "gc": make_gc,
    "machine": make_machine,
    "micropython": make_micropython,
    "network": make_network,
    "os": make_os,
    "socket": make_socket,
    "ssl": make_ssl,
    "sys": make_sys,
    "time": make_time,
}
