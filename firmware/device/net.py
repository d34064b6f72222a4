# Network plumbing: Wi-Fi station, TLS context from the provisioned files, and blocking byte streams for
# the OTA HTTP client. MicroPython sockets already have readinto(buf, nbytes) with fill-or-EOF semantics;
# on CPython (emulated devices) the socket is wrapped in a tiny adapter that behaves the same.
import sys
import time

_CPYTHON = sys.implementation.name != "micropython"


class _Stream:
    def __init__(self, sock):
        self.s = sock

    def write(self, data):
        self.s.sendall(data)
        return len(data)

    def readinto(self, buf, nbytes=-1):
        mv = memoryview(buf)
        if nbytes < 0:
            nbytes = len(buf)
        got = 0
        while got < nbytes:
            k = self.s.recv_into(mv[got:nbytes])
            if not k:
                break
            got += k
        return got

    def close(self):
        self.s.close()


def ssl_context(tls, root=""):
    """Client context for mutual TLS: verify the server against the fleet CA, present the device cert."""
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=root + tls["ca"])
    ctx.load_cert_chain(root + tls["cert"], root + tls["key"])
    return ctx


def open_stream(host, port, ctx=None, timeout_s=15):
    import socket

    ai = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0]
    s = socket.socket(ai[0], ai[1], ai[2])
    try:
        s.settimeout(timeout_s)
        s.connect(ai[-1])
        if ctx is not None:
            s = ctx.wrap_socket(s, server_hostname=host)
    except Exception:
        s.close()
        raise
    return _Stream(s) if _CPYTHON else s


def stream_factory(ctx=None, timeout_s=15):
    def factory(host, port):
        return open_stream(host, port, ctx, timeout_s)

    return factory


def sync_clock():
    """Best effort: set the RTC from NTP (MicroPython's ntptime). Payload timestamps need a real clock."""
    try:
        import ntptime

        ntptime.settime()
        return True
    except Exception:  # no ntptime (CPython), no answer: keep the clock as it is
        return False


class Wifi:
    def __init__(self, wifi_cfg):
        self.cfg = wifi_cfg
        self.wlan = None
        self.clock_set = False

    def connect(self, feed=None, timeout_s=30):
        """True when associated (or when no Wi-Fi is configured: the network is assumed up)."""
        if not self.cfg:
            return True
        import network

        if self.wlan is None:
            self.wlan = network.WLAN(network.STA_IF)
            self.wlan.active(True)
        if self.wlan.isconnected():
            return True
        self.wlan.connect(self.cfg["ssid"], self.cfg.get("password", ""))
        start = time.ticks_ms()
        while not self.wlan.isconnected():
            if time.ticks_diff(time.ticks_ms(), start) > timeout_s * 1000:
                return False
            if feed:
                feed()
            time.sleep_ms(200)
        if not self.clock_set:
            self.clock_set = sync_clock()
        return True

    def rssi(self):
        try:
            return self.wlan.status("rssi") if self.wlan else None
        except Exception:
            return None
