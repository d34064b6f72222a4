"""CRC-32 (zero-allocation halves and the binascii-less fallback) and the HTTP client's error paths, under
the real MicroPython interpreter."""

from __future__ import annotations

import os
import zlib

from mpy_harness import run_micropython

CRC_SCRIPT = """
import json, sys, binascii, crc32
d = json.load(open('/data/input.json'))
data = binascii.unhexlify(d['data'].encode())
c = crc32.Crc32()
for i in range(0, len(data), 1000):
    chunk = data[i:i + 1000]
    c.update(chunk)
partial = crc32.Crc32()
buf = bytearray(data[:100])
partial.update(buf, 37)             # only the first 37 bytes of the buffer
out = {'chunked': c.value(), 'first37': partial.value(), 'oneshot': crc32.crc32(data)}
# an interpreter without binascii.crc32: the table fallback, continuing from a previous value
class NoCrc:
    pass
real = sys.modules.get('binascii')
sys.modules['binascii'] = NoCrc()
out['fallback'] = crc32.crc32(data[500:], crc32.crc32(data[:500]))
sys.modules['binascii'] = real
print('RESULT', json.dumps(out))
"""


def test_crc32_matches_zlib() -> None:
    data = os.urandom(5000)
    out = run_micropython(CRC_SCRIPT, {"data": data.hex()}).check().json()
    assert out["chunked"] == zlib.crc32(data)
    assert out["first37"] == zlib.crc32(data[:37])
    assert out["oneshot"] == zlib.crc32(data)
    assert out["fallback"] == zlib.crc32(data)


HTTP_SCRIPT = """
import json, httpc
class Stream:
    def __init__(self, data): self.data = data; self.pos = 0; self.sent = b''
    def write(self, b): self.sent += bytes(b); return len(b)
    def readinto(self, buf, n=-1):
        if n < 0: n = len(buf)
        k = min(n, len(self.data) - self.pos)
        for i in range(k): buf[i] = self.data[self.pos + i]
        self.pos += k
        return k
    def close(self): pass
out = {}
def head_of(raw):
    h = httpc.Head()
    try:
        s = httpc.read_head(Stream(raw), h)
        return [s, h.length, h.range_start(), h.headers.get('etag')]
    except httpc.HTTPError as e:
        return 'error: ' + str(e)
out['ok'] = head_of(b'HTTP/1.1 206 Partial Content\\r\\nContent-Length: 10\\r\\ncontent-range: bytes 90-99/100\\r\\nETag: sha256:ab\\r\\nX-Other: y\\r\\n\\r\\nBODY')
out['closed'] = head_of(b'HTTP/1.1 200 OK\\r\\nContent-Len')
out['garbage'] = head_of(b'SSH-2.0-OpenSSH\\r\\n\\r\\n')
out['huge'] = head_of(b'HTTP/1.1 200 OK\\r\\nX: ' + b'a' * 2000 + b'\\r\\n\\r\\n')
out['badcode'] = head_of(b'HTTP/1.1 abc OK\\r\\n\\r\\n')
s = Stream(b'')
httpc.send_get(s, 'otaflux', '/v1/blobs/sha256:ab?device=dev-01', 1234)
out['request'] = s.sent.decode()
h = httpc.Head()
st = Stream(b'HTTP/1.1 200 OK\\r\\nContent-Length: 5\\r\\n\\r\\nabc')
httpc.read_head(st, h)
try:
    httpc.read_body(st, h, 100); out['short_body'] = 'accepted'
except httpc.HTTPError as e:
    out['short_body'] = str(e)
h.headers['content-length'] = '100000'
try:
    httpc.read_body(st, h, 1000); out['too_long'] = 'accepted'
except httpc.HTTPError as e:
    out['too_long'] = str(e)
print('RESULT', json.dumps(out))
"""


def test_http_head_parsing_and_errors() -> None:
    out = run_micropython(HTTP_SCRIPT).check().json()
    assert out["ok"] == [206, 10, 90, "sha256:ab"]
    assert out["closed"] == "error: connection closed in the response head"
    assert out["garbage"] == "error: bad status line"
    assert out["huge"] == "error: response head too large"
    assert out["badcode"] == "error: bad status code"
    assert out["request"] == (
        "GET /v1/blobs/sha256:ab?device=dev-01 HTTP/1.1\r\nHost: otaflux\r\nConnection: close\r\n"
        "User-Agent: weatherfleet-device\r\nRange: bytes=1234-\r\n\r\n"
    )
    assert out["short_body"] == "connection closed in the body"
    assert out["too_long"] == "body length 100000 not acceptable"


SERVER_ERRORS = """
import sys, json, binascii, os
sys.path.insert(0, '/app')
import ota, slots
from fakes import FakeOtaFlux
D = json.load(open('/data/input.json'))
keys = [ota.decode_key(D['key'])]
os.mkdir('/w'); os.chdir('/w')
out = {}
def run(srv):
    u = ota.Updater('dev-01', 'o', 80, srv, keys, slots.default_state('1.0.0'), '1.0.0', sleep_ms=lambda ms: None)
    try:
        plan = u.check()
        if plan is None:
            return 'none'
        for _ in u.install(plan): pass
        return 'installed'
    except ota.OtaError as e:
        return 'error: ' + str(e)
rel = D['rel']
blobs = {k: binascii.unhexlify(v.encode()) for k, v in rel['blobs'].items()}
out['no_release'] = run(FakeOtaFlux(None, blobs, 'dev-01'))
out['missing_blob'] = run(FakeOtaFlux(rel['doc'], {}, 'dev-01'))
class Refusing(FakeOtaFlux):
    def __call__(self, host, port):
        raise OSError(111)
out['refused'] = run(Refusing(rel['doc'], blobs, 'dev-01'))
class Flaky(FakeOtaFlux):
    # the manifest works, every blob connection drops after 100 bytes
    def respond(self, path, start):
        if path.startswith('/v1/blobs/'):
            self.close_after = 100
        return FakeOtaFlux.respond(self, path, start)
f = Flaky(rel['doc'], blobs, 'dev-01')
out['flaky'] = [run(f), len([r for r in f.requests if r[0].startswith('/v1/blobs/')])]
print('RESULT', json.dumps(out))
"""


def test_server_errors_fail_cleanly() -> None:
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from mpy_harness import make_release, raw_public_key

    key = ed25519.Ed25519PrivateKey.generate()
    rel = make_release({"app.mpy": os.urandom(3000)}, "1.1.0", key)
    out = run_micropython(SERVER_ERRORS, {"rel": rel, "key": raw_public_key(key)}).check().json()
    assert out["no_release"] == "none"
    assert out["missing_blob"].startswith("error: blob sha256:") and "HTTP 404" in out["missing_blob"]
    assert out["refused"].startswith("error: manifest request failed")
    result, attempts = out["flaky"]
    assert result.startswith("error: download of sha256:") and "interrupted 6 times" in result
    assert attempts == 6  # first try + 5 retries, each resuming further
