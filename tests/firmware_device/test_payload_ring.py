"""Line protocol / JSON payloads and the measurement ring, under the real MicroPython interpreter."""

from __future__ import annotations

import json

from mpy_harness import run_micropython

PAYLOAD_SCRIPT = """
import json, payload
d = json.load(open('/data/input.json'))
buf = bytearray(512)
out = []
for case in d:
    e = payload.Encoder(case['device'], case['location'], case['firmware'], case['json'])
    n = e.encode([float('nan') if v == 'nan' else v for v in case['values']], case['ms'], buf)
    out.append(bytes(buf[:n]).decode())
print('RESULT', json.dumps(out))
"""

CASES = [
    {
        "device": "dev-01",
        "location": "garden",
        "firmware": "1.2.0",
        "json": False,
        "values": [21.5, 40.126, 1013.2, 415, 3.1, 5.2],
        "ms": 1764000000000,
    },
    {
        "device": "dev-02",
        "location": "roof top, north=1",
        "firmware": "1.2.0-rc.1",
        "json": False,
        "values": [-3.05, None, None, None, 0.0, "nan"],
        "ms": 1764000001042,
    },
    {
        "device": "dev-03",
        "location": 'back\\slash "quoted"\nnewline',
        "firmware": "1.0.0",
        "json": False,
        "values": [0.004, None, None, None, None, None],
        "ms": 5007,
    },
    {
        "device": "dev-04",
        "location": 'K\u00fcche "Nord"\\\n',
        "firmware": "2.0.0",
        "json": True,
        "values": [19.99, 55.5, None, 1234.5, None, None],
        "ms": 1764000002305,
    },
    {
        "device": "dev-05",
        "location": "x",
        "firmware": "1.0.0",
        "json": False,
        "values": [None, None, None, None, None, None],
        "ms": 1764000003000,
    },
]


def _lp_parse(line: str) -> tuple[str, dict[str, str], dict[str, float], int]:
    """A small, independent line-protocol reader (escape-aware split)."""
    parts, cur, i = [], "", 0
    while i < len(line):
        ch = line[i]
        if ch == "\\" and i + 1 < len(line):
            cur += ch + line[i + 1]
            i += 2
            continue
        if ch == " ":
            parts.append(cur)
            cur = ""
        else:
            cur += ch
        i += 1
    parts.append(cur)
    assert len(parts) == 3, parts

    def split_unescaped(s: str, sep: str) -> list[str]:
        out, cur, j = [], "", 0
        while j < len(s):
            if s[j] == "\\" and j + 1 < len(s):
                cur += s[j + 1]
                j += 2
                continue
            if s[j] == sep:
                out.append(cur)
                cur = ""
            else:
                cur += s[j]
            j += 1
        out.append(cur)
        return out

    head = []
    cur, j = "", 0
    s = parts[0]
    while j < len(s):  # split on unescaped commas, keep escapes for the = split
        if s[j] == "\\" and j + 1 < len(s):
            cur += s[j : j + 2]
            j += 2
            continue
        if s[j] == ",":
            head.append(cur)
            cur = ""
        else:
            cur += s[j]
        j += 1
    head.append(cur)
    tags = dict(split_unescaped(t, "=") for t in head[1:])
    fields = {k: float(v) for k, v in (f.split("=") for f in parts[1].split(","))}
    return head[0], tags, fields, int(parts[2])


def test_line_protocol_and_json_escaping() -> None:
    out = run_micropython(PAYLOAD_SCRIPT, CASES).check().json()
    m, tags, fields, ts = _lp_parse(out[0])
    assert out[0] == (
        "weather,device=dev-01,firmware=1.2.0,location=garden temperature=21.50,humidity=40.13,"
        "pressure=1013.20,co2=415.00,pm25=3.10,pm10=5.20 1764000000000000000"
    )
    assert (m, tags["location"], ts) == ("weather", "garden", 1764000000 * 10**9)
    m, tags, fields, ts = _lp_parse(out[1])
    assert tags == {"device": "dev-02", "firmware": "1.2.0-rc.1", "location": "roof top, north=1"}
    assert fields == {"temperature": -3.05, "pm25": 0.0}  # NaN and missing sensors are left out
    assert ts == 1764000001042 * 10**6  # millisecond stamps: two measurements in one second stay apart
    assert "location=roof\\ top\\,\\ north\\=1 " in out[1]
    _, tags, fields, ts = _lp_parse(out[2])
    assert "\n" not in out[2]  # a newline would split the line
    assert tags["location"] == 'back\\slash "quoted" newline'
    assert fields == {"temperature": 0.0} and ts == 5007 * 10**6
    doc = json.loads(out[3])
    assert doc == {
        "device": "dev-04",
        "location": 'K\u00fcche "Nord"\\\n',
        "firmware": "2.0.0",
        "temperature": 19.99,
        "humidity": 55.5,
        "co2": 1234.5,
        "time": 1764000002.305,
    }
    assert '"time":1764000002.305}' in out[3]
    assert out[4] == ""  # no working sensor: nothing to publish


RING_SCRIPT = """
import json, ring
r = ring.Ring(4, 16)
for i in range(6):
    r.push(b'm%d' % i)
order = []
while len(r):
    v, n = r.peek()
    order.append(bytes(v[:n]).decode())
    r.pop()
empty = r.peek()
v = r.slot_for_write(); v[0] = 65; v[1] = 66; r.commit(2)
r.commit(0)
x, n = r.peek()
try:
    r.push(b'x' * 17); big = 'accepted'
except ValueError:
    big = 'rejected'
print('RESULT', json.dumps({'order': order, 'dropped': r.dropped, 'empty': [empty[0], empty[1]],
      'direct': bytes(x[:n]).decode(), 'count': len(r), 'big': big}))
"""


def test_ring_keeps_newest_in_order_and_counts_drops() -> None:
    out = run_micropython(RING_SCRIPT).check().json()
    assert out["order"] == ["m2", "m3", "m4", "m5"]
    assert out["dropped"] == 2
    assert out["empty"] == [None, 0]
    assert out["direct"] == "AB" and out["count"] == 1
    assert out["big"] == "rejected"
