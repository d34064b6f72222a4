# Network plumbing: Wi-Fi station, TLS context from the provisioned files, and blocking byte streams for
# the OTA HTTP client (a MicroPython socket's readinto(buf, nbytes) already fills or hits end of stream).
import time


def ssl_context(tls, root=""):
    """Client context for mutual TLS: verify the server against the fleet CA, present the device cert."""
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=root + tls["ca"])
    ctx.load_cert_chain(root + tls["cert"], root + tls["key"])
    return ctx


def forget_closed_sockets():
    """Let the collector free the sockets asyncio polled before, and the TLS contexts they hold.
    MicroPython's asyncio unregisters a socket from its poller, but a removed entry of a MicroPython map
    keeps its value, so the poller holds every socket it ever watched until that slot is reused; with no
    I/O pending, a fresh poller holds none. CPython's asyncio has no such poller: nothing to do there."""
    try:
        import asyncio.core as core

        queue = core._io_queue
        if not queue.map:
            import select

            queue.poller = select.poll()
    except (ImportError, AttributeError):
        pass


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
    return s


def sync_clock():
    """Best effort: set the RTC from NTP (MicroPython's ntptime). Payload timestamps need a real clock."""
    try:
        import ntptime

        ntptime.settime()
        return True
    except Exception:  # no ntptime (the unix port), no answer: keep the clock as it is
        return False


class Wifi:
    def __init__(self, wifi_cfg):
        self.cfg = wifi_cfg
        self.wlan = None
        self.clock_set = False
        self.started = None  # ticks_ms of the association attempt in progress

    def connect(self, feed=None, timeout_s=30):
        """True when associated (or when no Wi-Fi is configured: the network is assumed up). Otherwise
        start an association (again, once the last attempt is timeout_s old) and return False at once:
        the station associates in the background and the caller retries after its backoff. Waiting here
        would stall every task of the board's event loop (measurements too) for as long as the access
        point is away."""
        if not self.cfg:
            return True
        import network

        if self.wlan is None:
            self.wlan = network.WLAN(network.STA_IF)
            self.wlan.active(True)
        if not self.wlan.isconnected():
            now = time.ticks_ms()
            if self.started is None or time.ticks_diff(now, self.started) > timeout_s * 1000:
                self.started = now
                self.wlan.connect(self.cfg["ssid"], self.cfg.get("password", ""))
            if feed:
                feed()
            if not self.wlan.isconnected():
                return False
        self.started = None
        if not self.clock_set:
            self.clock_set = sync_clock()
        return True

    def rssi(self):
        try:
            return self.wlan.status("rssi") if self.wlan else None
        except Exception:
            return None
