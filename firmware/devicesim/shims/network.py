"""`network.WLAN` on the device's emulated access point; `Device.wifi.up = False` takes the AP away."""

from __future__ import annotations

import types
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..device import Boot

STAT_IDLE, STAT_CONNECTING, STAT_GOT_IP = 1000, 1001, 1010
STAT_NO_AP_FOUND, STAT_WRONG_PASSWORD, STAT_ASSOC_FAIL = 201, 202, 203


class WLAN:
    _boot: Boot

    def __init__(self, interface: int = 0) -> None:
        self.interface = interface
        self._active = False
        self._joined: str | None = None
        self._status = STAT_IDLE
        self._hostname = None

    def _net(self):
        self._boot.check()
        return self._boot.device.wifi

    def active(self, value=None):
        if value is None:
            return self._active
        self._active = bool(value)
        return None

    def connect(self, ssid=None, key=None, **kwargs) -> None:
        net = self._net()
        if not self._active:
            raise OSError("Wifi Not Started")
        if not net.up or ssid != net.ssid:
            self._status, self._joined = STAT_NO_AP_FOUND, None
        elif key != net.password:
            self._status, self._joined = STAT_WRONG_PASSWORD, None
        else:
            self._status, self._joined = STAT_GOT_IP, ssid
            self._boot.wifi_joined = True

    def disconnect(self) -> None:
        self._joined, self._status = None, STAT_IDLE
        self._boot.wifi_joined = False

    def isconnected(self) -> bool:
        net = self._net()
        return self._active and self._joined == net.ssid and net.up

    def status(self, param=None):
        net = self._net()
        if param == "rssi":
            return net.rssi
        if self._joined and not net.up:
            return STAT_CONNECTING
        return self._status

    def ifconfig(self, config=None):
        if config is not None:
            return None
        octet = self._boot.device.unique_id[-1] or 2
        return (f"10.42.0.{octet}", "255.255.255.0", "10.42.0.1", "10.42.0.1")

    def ipconfig(self, *args, **kwargs):
        return self.ifconfig()[0]

    def config(self, *args, **kwargs):
        if args == ("mac",):
            return bytes(self._boot.device.unique_id)
        if args == ("essid",) or args == ("ssid",):
            return self._joined or ""
        if args == ("hostname",) or args == ("dhcp_hostname",):
            return self._hostname or self._boot.device.device_id
        if "dhcp_hostname" in kwargs or "hostname" in kwargs:
            self._hostname = kwargs.get("hostname") or kwargs.get("dhcp_hostname")
        return None

    def scan(self):
        net = self._net()
        return [(net.ssid.encode(), b"\x24\x0a\xc4\x00\x00\x01", 6, net.rssi, 3, False)] if net.up else []


def make_network(boot: Boot) -> types.ModuleType:
    module = types.ModuleType("network")
    module.WLAN = type("WLAN", (WLAN,), {"_boot": boot})
    module.STA_IF, module.AP_IF = 0, 1
    module.STAT_IDLE, module.STAT_CONNECTING, module.STAT_GOT_IP = STAT_IDLE, STAT_CONNECTING, STAT_GOT_IP
    module.STAT_NO_AP_FOUND, module.STAT_WRONG_PASSWORD = STAT_NO_AP_FOUND, STAT_WRONG_PASSWORD
    module.STAT_ASSOC_FAIL = STAT_ASSOC_FAIL
    module.hostname = lambda name=None: boot.device.device_id if name is None else None
    module.country = lambda code=None: "DE" if code is None else None
    return module


def require_network(boot: Boot) -> None:
    """Sockets need the station joined and the access point up (EHOSTUNREACH otherwise, as lwIP says)."""
    boot.check()
    if boot.wifi_joined is False or not boot.device.wifi.up:
        raise OSError(113, "EHOSTUNREACH")
