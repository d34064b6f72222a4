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
    req = "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\nUser-Agent: weatherfleet-device\r\n" % (path, host)
    if start:
        req += "Range: bytes=%d-\r\n" % start
    stream.write((req + "\r\n").encode())


def read_head(stream, head):
    """Read the status line and headers into head; the body stays on the stream."""
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
    lines = bytes(buf[:n]).decode().split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise HTTPError("bad status line")
    try:
        head.status = int(parts[1])
    except ValueError:
        raise HTTPError("bad status code")
    headers = {}
    for line in lines[1:]:
        i = line.find(":")
        if i > 0:
            name = line[:i].strip().lower()
            if name in _WANTED:
                headers[name] = line[i + 1 :].strip()
    head.headers = headers
    return head.status


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
