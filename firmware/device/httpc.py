# A minimal HTTP/1.1 client for the OTA path: one request per connection (Connection: close), the
# response head parsed from a small preallocated buffer, the body left on the stream for the caller to
# readinto() its own preallocated buffer.
#
# A stream is anything with write(bytes), readinto(buf, nbytes) -> count (fewer than nbytes only at end
# of stream; 0 or None at EOF) and close(): a MicroPython socket, or net.py's adapter on CPython.


class HTTPError(Exception):
    pass


_WANTED = ("content-length", "content-range", "etag", "content-type")


class Head:
    def __init__(self):
        self.buf = bytearray(1024)
        self.one = bytearray(1)
        self.status = 0
        self.headers = {}

    @property
    def length(self):
        v = self.headers.get("content-length")
        return int(v) if v is not None else -1

    def range_start(self):
        # "bytes START-END/TOTAL" -> START, or -1
        v = self.headers.get("content-range")
        if not v or not v.startswith("bytes "):
            return -1
        try:
            return int(v[6:].split("-")[0])
        except ValueError:
            return -1


def send_get(stream, host, path, start=0):
    # one formatted string, one encode: this runs once per file of an update
    rng = "Range: bytes=%d-\r\n" % start if start else ""
    stream.write(
        ("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\nUser-Agent: weatherfleet-device\r\n%s\r\n" % (path, host, rng)).encode()
    )


def _lower(b):
    return b + 32 if 65 <= b <= 90 else b


def _name_is(buf, pos, end, name):
    # case-insensitive comparison of buf[pos:end] with name (bytes, lower case), without slicing
    if end - pos != len(name):
        return False
    for i in range(end - pos):
        if _lower(buf[pos + i]) != name[i]:
            return False
    return True


_WANTED_B = tuple(n.encode() for n in _WANTED)


def read_head(stream, head):
    """Read the status line and headers into head; the body stays on the stream. Parsed in place in the
    head buffer: only the values of the few headers we use become strings."""
    buf = head.buf
    one = head.one
    n = 0
    while True:
        got = stream.readinto(one, 1)
        if not got:
            raise HTTPError("connection closed in the response head")
        if n >= len(buf):
            raise HTTPError("response head too large")
        buf[n] = one[0]
        n += 1
        if n >= 4 and buf[n - 1] == 10 and buf[n - 2] == 13 and buf[n - 3] == 10 and buf[n - 4] == 13:
            break
    # status line: HTTP/1.x SSS reason
    if n < 12 or not _name_is(buf, 0, 7, b"http/1.") or buf[8] != 32:
        raise HTTPError("bad status line")
    status = 0
    for i in range(9, 12):
        d = buf[i] - 48
        if d < 0 or d > 9:
            raise HTTPError("bad status code")
        status = status * 10 + d
    head.status = status
    headers = {}
    pos = 0
    while buf[pos] != 10:
        pos += 1
    pos += 1
    mv = memoryview(buf)
    while pos < n - 2:
        end = pos
        while buf[end] != 13:
            end += 1
        colon = pos
        while colon < end and buf[colon] != 58:
            colon += 1
        if colon < end:
            for k in range(len(_WANTED_B)):
                if _name_is(buf, pos, colon, _WANTED_B[k]):
                    headers[_WANTED[k]] = str(mv[colon + 1 : end], "ascii").strip()
                    break
        pos = end + 2
    head.headers = headers
    return status


def read_body(stream, head, limit):
    """The whole (small) body as bytes; for JSON documents, not for firmware."""
    length = head.length
    if length < 0 or length > limit:
        raise HTTPError("body length %d not acceptable" % length)
    body = bytearray(length)
    got = 0
    mv = memoryview(body)
    while got < length:
        n = stream.readinto(mv[got:], length - got)
        if not n:
            raise HTTPError("connection closed in the body")
        got += n
    return body
