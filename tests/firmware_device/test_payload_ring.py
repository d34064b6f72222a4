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


ODD_FLOATS_SCRIPT = """
import json, payload
from array import array
d = json.load(open('/data/input.json'))
f32max = array('f', [3.4028234663852886e38])[0]  # what a single-precision port holds at most
odd = {'nan': float('nan'), 'inf': float('inf'), '-inf': float('-inf'), 'f32max': f32max, '-f32max': -f32max,
       '1e300': 1e300, '-1e300': -1e300, '1e7': 1e7, 'text': 'x', 'big_int': 10 ** 40}
out = []
for json_format in (False, True):
    e = payload.Encoder('dev-01', 'lab', '1.0.0', json_format)
    buf = bytearray(e.max_size())
    for name, value in odd.items():
        for index in range(6):
            values = [21.5, None, None, None, None, None] if index else [None, 40.0, None, None, None, None]
            values[index] = value
            n = e.encode(values, 1764000000000, buf)
            out.append([json_format, name, index, bytes(buf[:n]).decode(), list(e.flagged)])
    n = e.encode([21.5, 40.0, 1013.0, 415.0, 3.0, 5.0], 1764000000000, buf)
    out.append([json_format, 'after', -1, bytes(buf[:n]).decode(), list(e.flagged)])
print('RESULT', json.dumps(out))
"""


def test_the_encoder_never_raises_and_flags_unusable_floats() -> None:
    """Issue 14: on a single-precision port any value >= 3.41e36 made the encoder raise OverflowError (a
    CRC-valid SCD30 frame can carry one), and +-1e300 overran the slot on a double-precision one."""
    out = run_micropython(ODD_FLOATS_SCRIPT, {}).check().json()
    assert len(out) == 2 * (10 * 6 + 1)
    for json_format, name, index, text, flagged in out:
        if name == "after":
            assert flagged == [] and "1013" in text
            continue
        assert flagged == [index], (json_format, name, index, text)
        assert "e+" not in text and "nan" not in text.lower() and "inf" not in text.lower()
        if json_format:
            doc = json.loads(text)
            assert set(doc) == {
                "device",
                "location",
                "firmware",
                "time",
                "temperature" if index else "humidity",
            }
        else:
            fields = text.split(" ")[1]
            assert "," not in fields and ("temperature=21.50" in fields or "humidity=40.00" in fields)


MEASURE_TASK_SCRIPT = """
import json, os, sys
sys.path.insert(0, '/app')
import app, slots, payload
from fakes import drive, FakeI2C, FakeUART
d = json.load(open('/data/input.json'))
os.mkdir('/dev1'); os.chdir('/dev1')
cfg = __import__('config').validate(d['config'])
a = app.App(cfg, slots.default_state('1.0.0'), make_i2c=lambda w: FakeI2C(), make_uart=lambda w: FakeUART(lambda c: b''))
a.cfg['measurementIntervalSeconds'] = 0  # no wait between cycles: the loop runs under drive()
class Stop(BaseException):
    pass
calls = [0]
seen = []
async def read(values):
    # what the previous cycle left in status; then: a driver that raises, one that hands over a
    # float32-max CO2 value (a CRC-valid SCD30 frame can), a good reading, and the end of the test
    seen.append([calls[0], dict(a.sensors.status), len(a.ring)])
    calls[0] += 1
    for i in range(len(values)):
        values[i] = None
    if calls[0] == 1:
        raise OverflowError('driver bug')
    if calls[0] == 4:
        raise Stop()
    values[payload.TEMPERATURE] = 21.5
    values[payload.CO2] = 3.4028234663852886e38 if calls[0] == 2 else 612.0
    return values
a.sensors.read = read
try:
    drive(a.measure_task())
except Stop:
    pass
print('RESULT', json.dumps(seen))
"""


def test_the_measurement_task_survives_a_failing_driver_and_reports_it() -> None:
    """Issue 14: the measurement task had no handler, so one exception from a driver or the encoder ended
    measuring until a reset. Now the cycle fails, status says why, and the next cycle runs."""
    config = {
        "device": "dev-01",
        "location": "lab",
        "broker": {"host": "broker.local", "port": 8883, "tls": False},
        "features": ["bme280", "scd30", "ota", "influx"],
        "ota": {"host": "otaflux.local", "port": 8080},
        "signingKeys": ["00" * 32],
        "measurementIntervalSeconds": 60,
        "bufferSize": 8,
        "sensors": [{"type": "bme280", "bus": 0, "address": 118}, {"type": "scd30", "bus": 0}],
    }
    seen = run_micropython(MEASURE_TASK_SCRIPT, {"config": config}).check().json()
    _before, after_failure, after_flagged, after_good = seen
    assert after_failure[1]["measurement"] == "failed: OverflowError: driver bug" and after_failure[2] == 0
    assert "measurement" not in after_flagged[1]  # the next cycle ran
    assert after_flagged[1]["scd30"] == "unusable co2 value, not published"
    assert after_flagged[2] == 1  # the temperature of that cycle was still buffered
    assert after_good[2] == 2


UNICODE_CONFIG_SCRIPT = """
import json
d = json.load(open('/data/input.json'))
out = {}
for name, raw in d.items():
    with open('/tmp-' + name, 'wb') as f:
        f.write(bytes(raw))
    with open('/tmp-' + name) as f:
        doc = json.load(f)
    out[name] = list(doc['location'].encode())
print('RESULT', json.dumps(out))
"""

LOCATIONS = ["Gew\u00e4chshaus \U0001f331", "\U0001f3e0 \u5317\u4eac \U0001d11e", "plain"]


def test_any_unicode_location_round_trips_into_the_device() -> None:
    """Issue 14: config.json was written with ASCII escapes, which MicroPython's json turns into surrogate
    bytes (invalid UTF-8) for characters outside the BMP; the desired configuration over MQTT too."""
    from weatherfleet.provisioning.deviceconfig import Credentials, device_files
    from weatherfleet.reconcilers.devicetwin import desired_text

    # only config.json is under test here; the credential files are copied verbatim
    credentials = Credentials(ca=b"ca", cert=b"cert", key=b"key")
    data = {}
    for index, location in enumerate(LOCATIONS):
        config = {"device": f"dev-{index:02d}", "location": location}
        data[f"file{index}"] = list(device_files(config, credentials)["config.json"])
        data[f"twin{index}"] = list(desired_text(config).encode())
    out = run_micropython(UNICODE_CONFIG_SCRIPT, data).check().json()
    for index, location in enumerate(LOCATIONS):
        assert bytes(out[f"file{index}"]) == location.encode(), location
        assert bytes(out[f"twin{index}"]) == location.encode(), location
