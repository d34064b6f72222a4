# Fakes for running device modules under the real MicroPython interpreter (no hardware, no sockets).
import json


def drive(coro):
    """Run a coroutine that never really suspends (its awaitables complete at once) to completion."""
    try:
        while True:
            coro.send(None)
    except StopIteration as e:
        return e.value


class FakeI2C:
    """Register-file I2C device(s): mem[addr] is a bytearray(256) of registers; writes are logged."""

    def __init__(self):
        self.mem = {}
        self.writes = []
        self.on_write = None

    def readfrom_mem_into(self, addr, reg, buf):
        if addr not in self.mem:
            raise OSError(19)  # ENODEV, as machine.I2C raises when nothing ACKs
        m = self.mem[addr]
        for i in range(len(buf)):
            buf[i] = m[reg + i]

    def writeto_mem(self, addr, reg, buf):
        if addr not in self.mem:
            raise OSError(19)
        self.writes.append((addr, reg, bytes(buf)))
        for i in range(len(buf)):
            self.mem[addr][reg + i] = buf[i]
        if self.on_write:
            self.on_write(addr, reg, bytes(buf))


class FakeSCD30Bus:
    """Command-level SCD30: writeto(command[+arg+crc]) then readfrom_into(response)."""

    def __init__(self, crc8, co2, temp, hum, corrupt=False):
        import struct

        self.crc8 = crc8
        self.commands = []
        self.ready = 1
        self.pending = b""
        words = []
        for v in (co2, temp, hum):
            b = struct.pack(">f", v)
            words.append(b[0:2])
            words.append(b[2:4])
        out = bytearray()
        for w in words:
            out.extend(w)
            out.append(crc8(w))
        if corrupt:
            out[4] ^= 0x01
        self.measurement = bytes(out)

    def _word(self, v):
        w = bytes((v >> 8, v & 0xFF))
        return w + bytes((self.crc8(w),))

    def writeto(self, addr, buf):
        buf = bytes(buf)
        cmd = (buf[0] << 8) | buf[1]
        self.commands.append((cmd, buf[2:]))
        if cmd == 0xD100:
            self.pending = self._word(0x0342)
        elif cmd == 0x0202:
            self.pending = self._word(self.ready)
        elif cmd == 0x0300:
            self.pending = self.measurement

    def readfrom_into(self, addr, buf):
        for i in range(len(buf)):
            buf[i] = self.pending[i]


class FakeUART:
    """Feeds scripted bytes; replies to SDS011 commands through respond(cmd_bytes) -> bytes."""

    def __init__(self, respond=None):
        self.rx = bytearray()
        self.written = []
        self.respond = respond

    def any(self):
        return len(self.rx)

    def readinto(self, buf, n=-1):
        if n < 0:
            n = len(buf)
        n = min(n, len(buf), len(self.rx))
        if not n:
            return None
        for i in range(n):
            buf[i] = self.rx[i]
        self.rx = self.rx[n:]
        return n

    def write(self, buf):
        self.written.append(bytes(buf))
        if self.respond:
            self.rx.extend(self.respond(bytes(buf)))
        return len(buf)


class FakeStreamReader:
    def __init__(self, data=b""):
        self.data = bytearray(data)

    def feed(self, data):
        self.data.extend(data)

    async def readexactly(self, n):
        if len(self.data) < n:
            raise EOFError("fake stream exhausted")
        out = bytes(self.data[:n])
        self.data = self.data[n:]
        return out


class FakeStreamWriter:
    def __init__(self):
        self.out = bytearray()
        self.closed = False

    def write(self, buf):
        self.out.extend(buf)

    async def drain(self):
        pass

    def close(self):
        self.closed = True

    async def wait_closed(self):
        pass


class FakePartition:
    """esp32.Partition stand-in: 4096-byte blocks in RAM, set_boot recorded."""

    def __init__(self, label="ota_1", blocks=64, block_size=4096):
        self.label = label
        self.block_size = block_size
        self.blocks = blocks
        self.data = bytearray(b"\xff" * (blocks * block_size))
        self.writes = 0
        self.booted = False

    def info(self):
        return (0, 16, 0x210000, self.blocks * self.block_size, self.label, False)

    def ioctl(self, op, arg):
        if op == 4:
            return self.blocks
        if op == 5:
            return self.block_size
        return 0

    def writeblocks(self, block, buf):
        assert len(buf) == self.block_size
        off = block * self.block_size
        for i in range(self.block_size):
            self.data[off + i] = buf[i]
        self.writes += 1

    def readblocks(self, block, buf):
        off = block * self.block_size
        for i in range(len(buf)):
            buf[i] = self.data[off + i]

    def set_boot(self):
        self.booted = True


class FakeOtaFlux:
    """OtaFlux's /v1 HTTP API behind a stream factory: factory(host, port) -> a stream whose request is
    parsed when the blank line arrives. Options: close_after (bytes of body served before the connection
    drops, once), corrupt (digest -> body offset whose byte is flipped), ignore_range."""

    def __init__(self, manifest_doc, blobs, device):
        self.doc = manifest_doc
        self.blobs = blobs  # digest -> bytes
        self.device = device
        self.requests = []  # (path, range start)
        self.log_requests = True  # the benchmark turns this off: the fake's memory is not the device's
        self.close_after = None
        self.corrupt = {}
        self.ignore_range = False
        self.body_bytes = 0

    def __call__(self, host, port):
        return _FakeHttpStream(self)

    def respond(self, path, start):
        if self.log_requests:
            self.requests.append((path, start))
        if path.startswith("/v1/manifest"):
            if self.doc is None:
                return b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", b"", 0
            body = json.dumps(self.doc).encode()
            return (
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                % len(body),
                body,
                0,
            )
        if path.startswith("/v1/blobs/"):
            digest = path[len("/v1/blobs/") :].split("?")[0]
            data = self.blobs.get(digest)
            if data is None:
                return b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", b"", 0
            if digest in self.corrupt:
                data = bytearray(data)
                data[self.corrupt[digest]] ^= 0x40
                data = bytes(data)
            if start and not self.ignore_range:
                head = (
                    b"HTTP/1.1 206 Partial Content\r\nContent-Length: %d\r\nContent-Range: bytes %d-%d/%d\r\nETag: %s\r\n\r\n"
                    % (len(data) - start, start, len(data) - 1, len(data), digest.encode())
                )
                return head, data, start
            return (
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nETag: %s\r\n\r\n" % (len(data), digest.encode()),
                data,
                0,
            )
        return b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", b"", 0


class _FakeHttpStream:
    """One connection. The response head and body are kept apart (the body is the server's own blob
    object, never copied) so the fake network adds nothing to the device's heap figures."""

    def __init__(self, server):
        self.server = server
        self.req = bytearray()
        self.head = None
        self.body = b""
        self.pos = 0
        self.limit = None

    def write(self, data):
        self.req.extend(data)
        if self.head is None and self.req.find(b"\r\n\r\n") >= 0:
            # parsed with few allocations: the benchmark counts what happens in this process
            req = self.req
            path = str(memoryview(req)[4 : req.find(b" ", 4)], "ascii")
            start = 0
            r = req.find(b"Range: bytes=")
            if r >= 0:
                i = r + 13
                while 48 <= req[i] <= 57:
                    start = start * 10 + req[i] - 48
                    i += 1
            self.head, self.body, self.offset = self.server.respond(path, start)
            if (
                self.server.close_after is not None
                and path.startswith("/v1/blobs/")
                and len(self.body) - self.offset > self.server.close_after
            ):
                self.limit = len(self.head) + self.server.close_after
                self.server.close_after = None
        return len(data)

    def readinto(self, buf, n=-1):
        if n < 0:
            n = len(buf)
        head = self.head
        hl = len(head)
        end = hl + len(self.body) - self.offset
        if self.limit is not None and self.limit < end:
            end = self.limit
        k = end - self.pos
        if k > n:
            k = n
        if k <= 0:
            return 0
        p = self.pos
        body = self.body
        off = self.offset - hl
        for i in range(k):
            q = p + i
            buf[i] = head[q] if q < hl else body[q + off]
        self.pos = p + k
        self.server.body_bytes += k
        return k

    def close(self):
        pass
