# A small MQTT client for MicroPython's asyncio: MQTT 5 when the broker offers it, else 3.1.1.
#
# Packets are encoded into one preallocated transmit buffer; topics are passed pre-encoded (bytes) so
# publishing allocates (almost) nothing. Only asyncio stream calls that CPython also has are used
# (open_connection, readexactly, write, drain), so the same file runs on CPython against real brokers.
from micropython import const
import array
import asyncio
import random
import time

CONNECT = const(1)
CONNACK = const(2)
PUBLISH = const(3)
PUBACK = const(4)
SUBSCRIBE = const(8)
SUBACK = const(9)
PINGREQ = const(12)
PINGRESP = const(13)
DISCONNECT = const(14)

V311 = const(4)
V5 = const(5)


class MQTTError(Exception):
    pass


class UnsupportedVersion(MQTTError):
    pass


class Refused(MQTTError):
    """CONNACK with a failure reason (args[1]: the code), e.g. bad username or password."""


def backoff_ms(attempt, base_ms=1000, cap_ms=300000, rand=None):
    """Exponential backoff with "equal jitter": half the step is fixed, half random, so a fleet that lost
    its broker at the same moment does not come back in lockstep."""
    step = base_ms << min(attempt, 20)
    if step > cap_ms:
        step = cap_ms
    half = step // 2
    r = rand if rand is not None else random.getrandbits(16) / 65536
    return half + int(half * r)


def put_varint(buf, pos, n):
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            buf[pos] = b | 0x80
            pos += 1
        else:
            buf[pos] = b
            return pos + 1


def varint_size(n):
    s = 1
    while n > 127:
        n >>= 7
        s += 1
    return s


def get_varint(data, pos):
    """(value, next position) of the variable byte integer at pos."""
    n = 0
    shift = 0
    while True:
        b = data[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            return n, pos
        shift += 7
        if shift > 21:
            raise MQTTError("malformed variable byte integer")


def put_u16(buf, pos, v):
    # a two-byte integer, big-endian (packet identifiers, keep alive, lengths)
    buf[pos] = v >> 8
    buf[pos + 1] = v & 0xFF
    return pos + 2


def put_no_properties(buf, pos, version):
    # MQTT 5 packets carry a property list (here always empty: its length, 0); 3.1.1 has none
    if version == V5:
        buf[pos] = 0
        return pos + 1
    return pos


def put_bytes(buf, pos, data, n=-1):
    # a 2-byte length followed by the bytes (MQTT "binary data" / UTF-8 string)
    if n < 0:
        n = len(data)
    pos = put_u16(buf, pos, n)
    for i in range(n):
        buf[pos + i] = data[i]
    return pos + n


def _as_bytes(s):
    return s if isinstance(s, (bytes, bytearray, memoryview)) else s.encode()


def encode_connect(buf, client_id, keepalive, version=V5, clean=True, will=None, username=None, password=None):
    """CONNECT into buf; will = (topic, payload, retain, qos). Returns the length."""
    client_id = _as_bytes(client_id)
    flags = 0x02 if clean else 0
    rem = 10 + 2 + len(client_id)
    if version == V5:
        rem += 1  # empty property list
    if will is not None:
        wt = _as_bytes(will[0])
        wp = _as_bytes(will[1])
        flags |= 0x04 | ((will[3] & 3) << 3) | (0x20 if will[2] else 0)
        rem += 2 + len(wt) + 2 + len(wp) + (1 if version == V5 else 0)
    if username is not None:
        username = _as_bytes(username)
        flags |= 0x80
        rem += 2 + len(username)
    if password is not None:
        password = _as_bytes(password)
        flags |= 0x40
        rem += 2 + len(password)
    buf[0] = CONNECT << 4
    pos = put_varint(buf, 1, rem)
    pos = put_bytes(buf, pos, b"MQTT")
    buf[pos] = version
    buf[pos + 1] = flags
    pos = put_u16(buf, pos + 2, keepalive)
    pos = put_no_properties(buf, pos, version)
    pos = put_bytes(buf, pos, client_id)
    if will is not None:
        pos = put_no_properties(buf, pos, version)  # the will's properties
        pos = put_bytes(buf, pos, wt)
        pos = put_bytes(buf, pos, wp)
    if username is not None:
        pos = put_bytes(buf, pos, username)
    if password is not None:
        pos = put_bytes(buf, pos, password)
    return pos


def encode_publish(buf, topic, payload, n=-1, qos=0, retain=False, pid=0, version=V5, dup=False):
    if n < 0:
        n = len(payload)
    rem = 2 + len(topic) + n + (2 if qos else 0) + (1 if version == V5 else 0)
    if 1 + varint_size(rem) + rem > len(buf):
        raise MQTTError("packet larger than the transmit buffer")
    buf[0] = (PUBLISH << 4) | (0x08 if dup else 0) | (qos << 1) | (1 if retain else 0)
    pos = put_varint(buf, 1, rem)
    pos = put_bytes(buf, pos, topic)
    if qos:
        pos = put_u16(buf, pos, pid)
    pos = put_no_properties(buf, pos, version)
    for i in range(n):
        buf[pos + i] = payload[i]
    return pos + n


def encode_subscribe(buf, pid, topic, qos=1, version=V5):
    topic = _as_bytes(topic)
    rem = 2 + 2 + len(topic) + 1 + (1 if version == V5 else 0)
    buf[0] = (SUBSCRIBE << 4) | 0x02
    pos = put_varint(buf, 1, rem)
    pos = put_u16(buf, pos, pid)
    pos = put_no_properties(buf, pos, version)
    pos = put_bytes(buf, pos, topic)
    buf[pos] = qos
    return pos + 1


def encode_puback(buf, pid):
    buf[0] = PUBACK << 4
    buf[1] = 2
    return put_u16(buf, 2, pid)


def parse_connack(body, version):
    """(session_present, reason code)."""
    if len(body) < 2:
        raise MQTTError("short CONNACK")
    return bool(body[0] & 1), body[1]


def parse_publish(flags, body, version):
    """(topic str, payload bytes-like, qos, pid, retain) of an incoming PUBLISH body."""
    qos = (flags >> 1) & 3
    tlen = (body[0] << 8) | body[1]
    pos = 2 + tlen
    topic = bytes(body[2:pos]).decode()
    pid = 0
    if qos:
        pid = (body[pos] << 8) | body[pos + 1]
        pos += 2
    if version == V5:
        plen, pos = get_varint(body, pos)
        pos += plen
    return topic, body[pos:], qos, pid, bool(flags & 1)


def parse_suback(body, version):
    """(pid, granted qos / reason codes)."""
    pid = (body[0] << 8) | body[1]
    pos = 2
    if version == V5:
        plen, pos = get_varint(body, pos)
        pos += plen
    return pid, bytes(body[pos:])


class MQTTClient:
    def __init__(
        self,
        client_id,
        host,
        port=8883,
        ssl=None,
        keepalive=60,
        username=None,
        password=None,
        will=None,
        version=V5,
        open_connection=None,
        buf_size=768,
        on_message=None,
        ticks_ms=None,
    ):
        self.client_id = client_id
        self.host = host
        self.port = port
        self.ssl = ssl
        self.keepalive = keepalive
        self.username = username
        self.password = password
        self.will = will
        self.want_version = version
        self.version = version
        self._open = open_connection  # default: asyncio.open_connection, looked up when connecting
        self.tx = bytearray(buf_size)
        self.txv = memoryview(self.tx)
        self.on_message = on_message
        self.reader = None
        self.writer = None
        self.connected = False
        self.error = None
        self.refused = 0  # PUBACKs with an MQTT 5 failure reason
        self.sub_refused = 0
        self._pid = 0
        # packet ids of the last PUBACKs: several tasks may wait at once, each for its own id
        self.recent_acks = array.array("H", bytes(16))  # 8 ids
        self._ack_pos = 0
        self.ack_event = asyncio.Event()
        self._ticks = ticks_ms or time.ticks_ms
        self.last_rx = 0
        self.last_tx = 0

    def next_pid(self):
        self._pid = self._pid % 65535 + 1
        return self._pid

    async def _send(self, n):
        self.writer.write(self.txv[:n])
        await self.writer.drain()
        self.last_tx = self._ticks()

    async def read_packet(self):
        """(type, flags, body) of the next packet from the broker."""
        r = self.reader
        if r is None:
            raise MQTTError("connection closed")  # closed meanwhile (e.g. to switch certificates)
        head = await r.readexactly(1)
        n = 0
        shift = 0
        while True:
            b = (await r.readexactly(1))[0]
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
            if shift > 21:
                raise MQTTError("malformed remaining length")
        body = await r.readexactly(n) if n else b""
        self.last_rx = self._ticks()
        return head[0] >> 4, head[0] & 0x0F, body

    async def connect(self, clean=True):
        """Connect, trying MQTT 5 first when wanted and falling back to 3.1.1 when the broker refuses it."""
        versions = (V5, V311) if self.want_version == V5 else (V311,)
        for version in versions:
            try:
                return await self._connect_once(version, clean)
            except UnsupportedVersion:
                self.close()
        raise MQTTError("broker accepts no supported protocol version")

    async def _connect_once(self, version, clean):
        self.version = version
        if self._open is None:
            self._open = asyncio.open_connection
        if self.ssl is not None:
            self.reader, self.writer = await self._open(self.host, self.port, ssl=self.ssl, server_hostname=self.host)
        else:
            self.reader, self.writer = await self._open(self.host, self.port)
        n = encode_connect(self.tx, self.client_id, self.keepalive, version, clean, self.will, self.username, self.password)
        await self._send(n)
        try:
            ptype, _, body = await self.read_packet()
        except (EOFError, OSError):
            # a 3.1.1-only broker may simply close on a version-5 CONNECT
            if version == V5:
                raise UnsupportedVersion()
            raise
        if ptype != CONNACK:
            raise MQTTError("expected CONNACK, got type %d" % ptype)
        session, rc = parse_connack(body, version)
        # 0x01 (3.1.1) / 0x84 (5): unsupported protocol version
        if rc in (0x01, 0x84) and version == V5:
            raise UnsupportedVersion()
        if rc != 0:
            self.close()
            raise Refused("connection refused, reason code %d" % rc, rc)
        self.connected = True
        return session

    async def publish(self, topic, payload, n=-1, qos=0, retain=False):
        """Send a PUBLISH; topic is bytes. Returns the packet id (0 for QoS 0)."""
        pid = self.next_pid() if qos else 0
        length = encode_publish(self.tx, topic, payload, n, qos, retain, pid, self.version)
        # _send() inlined: one coroutine frame less per measurement
        self.writer.write(self.txv[:length])
        await self.writer.drain()
        self.last_tx = self._ticks()
        return pid

    def is_acked(self, pid):
        r = self.recent_acks
        for i in range(8):
            if r[i] == pid:
                return True
        return False

    async def wait_puback(self, pid):
        """Return once the broker acknowledged pid; raise MQTTError if the connection drops first (the
        keepalive check closes a silent connection, so this cannot wait forever)."""
        while not self.is_acked(pid):
            if not self.connected:
                raise MQTTError("connection lost while waiting for PUBACK")
            await self.ack_event.wait()
        return True

    async def subscribe(self, topic, qos=1):
        n = encode_subscribe(self.tx, self.next_pid(), topic, qos, self.version)
        await self._send(n)

    async def ping(self):
        self.tx[0] = PINGREQ << 4
        self.tx[1] = 0
        await self._send(2)

    async def handle(self, ptype, flags, body):
        """Dispatch one incoming packet."""
        if ptype == PUBACK:
            if self.version == V5 and len(body) > 2 and body[2] >= 0x80:
                # MQTT 5 tells us when the broker dropped the message (0x87: not authorized by the ACL);
                # retrying would not help, so it counts as handled, but it is logged
                self.refused += 1
                print("weatherfleet: broker refused a publish, reason 0x%02x" % body[2])
            self.recent_acks[self._ack_pos] = (body[0] << 8) | body[1]
            self._ack_pos = (self._ack_pos + 1) & 7
            # a pulse: wakes every waiter, each re-checks its own id
            self.ack_event.set()
            self.ack_event.clear()
        elif ptype == PUBLISH:
            topic, payload, qos, pid, retain = parse_publish(flags, body, self.version)
            if qos == 1:
                await self._send(encode_puback(self.tx, pid))
            if self.on_message:
                self.on_message(topic, payload, retain)
        elif ptype == SUBACK:
            _, codes = parse_suback(body, self.version)
            for c in codes:
                if c >= 0x80:
                    # not fatal: without notifications the OTA check still runs on its timer
                    self.sub_refused = c
                    print("weatherfleet: subscription refused (0x%02x)" % c)
        # PINGRESP: last_rx already updated by read_packet

    async def run_reader(self):
        """Read and dispatch packets until the connection drops."""
        try:
            while True:
                ptype, flags, body = await self.read_packet()
                await self.handle(ptype, flags, body)
        except (OSError, EOFError, MQTTError) as e:
            self.error = e
        finally:
            self.close()

    def keepalive_due(self):
        return self.keepalive and self._elapsed(self.last_tx) >= self.keepalive * 500

    def is_stale(self):
        # nothing heard for 1.5 keepalive periods: the spec's own limit for the broker side
        return self.keepalive and self._elapsed(self.last_rx) > self.keepalive * 1500

    def _elapsed(self, t):
        return time.ticks_diff(self._ticks(), t)

    async def disconnect(self):
        if self.connected:
            try:
                self.tx[0] = DISCONNECT << 4
                self.tx[1] = 0
                await self._send(2)
            except OSError:
                pass
        self.close()

    def close(self):
        self.connected = False
        if self.writer is not None:
            try:
                self.writer.close()
                # MicroPython's Stream.close() leaves the socket open (wait_closed closes it): close it now,
                # so its descriptor and mbedTLS's session memory are freed at once, not whenever the collector
                # finds the socket. CPython's StreamWriter has no .s (its close() closes the transport).
                s = getattr(self.writer, "s", None)
                if s is not None:
                    s.close()
            except Exception:
                pass
        self.reader = None
        self.writer = None
        self.ack_event.set()  # waiters wake up and see the connection is gone
        self.ack_event.clear()
