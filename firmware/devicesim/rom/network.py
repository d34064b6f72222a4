# network, as the ESP32 port has it (MicroPython): a station on the access point the hardware host plays.
# The host decides (AP up, SSID and password right); while the AP is down it also breaks every socket of
# this board, as a station losing its access point would see.
from micropython import const

import _hw

STA_IF = const(0)
AP_IF = const(1)
STAT_IDLE = const(1000)
STAT_CONNECTING = const(1001)
STAT_GOT_IP = const(1010)
STAT_NO_AP_FOUND = const(201)
STAT_WRONG_PASSWORD = const(202)
STAT_ASSOC_FAIL = const(203)
STAT_BEACON_TIMEOUT = const(200)
STAT_HANDSHAKE_TIMEOUT = const(204)


def _net(sub, text=None):
    _hw.args(ord(sub))
    return _hw.call(_hw.OP_NET, text)


def _int(b):
    return int(bytes(b)) if b else 0


class WLAN:
    def __init__(self, interface=STA_IF):
        self.interface = interface
        self._active = False
        self._hostname = None

    def active(self, value=None):
        if value is None:
            return self._active
        self._active = bool(value)

    def connect(self, ssid=None, key=None, **kw):
        if not self._active:
            raise OSError("Wifi Not Started")
        _net("c", ("%s\n%s" % (ssid or "", key or "")).encode())

    def disconnect(self):
        _net("d")

    def isconnected(self):
        return self._active and _int(_net("i")) == 1

    def status(self, param=None):
        if param == "rssi":
            return _int(_net("r"))
        return _int(_net("s"))

    def ifconfig(self, config=None):
        if config is not None:
            return None
        return ("10.42.0.%d" % (_hw.UID[-1] or 2), "255.255.255.0", "10.42.0.1", "10.42.0.1")

    def ipconfig(self, *a, **kw):
        return self.ifconfig()[0]

    def config(self, *a, **kw):
        if a == ("mac",):
            return bytes(_hw.UID)
        if a and a[0] in ("essid", "ssid"):
            return bytes(_net("e")).decode()
        if a and a[0] in ("hostname", "dhcp_hostname"):
            return self._hostname or ""
        if "hostname" in kw or "dhcp_hostname" in kw:
            self._hostname = kw.get("hostname") or kw.get("dhcp_hostname")

    def scan(self):
        text = bytes(_net("S")).decode()
        if not text:
            return []
        ssid, rssi = text.split("\n")
        return [(ssid.encode(), b"\x24\x0a\xc4\x00\x00\x01", 6, int(rssi), 3, False)]


def hostname(name=None):
    return None


def country(code=None):
    return "DE" if code is None else None
