"""Float edge cases on the VM. The VM computes in doubles, the ESP32 port in float32, so the values a
board gets are first squeezed through float32 here (struct 'f', as the SCD30 driver decodes its
big-endian floats and as the ESP32 stores every float). The exact .mpy payload encoder must then format
what float32 holds (21.345 is 21.3449993... there: "21.34", where a double gives "21.35"), and never
raise: float32 max, inf, 3.41e36 (issue 14's overflow), NaN. What the VM cannot show: the encoder's one
multiplication (value * 100) done in float32, which can differ from the double product in the last bit;
tests/firmware_device covers the encoder's float cases on the 32-bit WebAssembly port as well."""

from __future__ import annotations

import json
import math
import struct

from devicesim.provision import build_bundle

FEATURES = ("bme280", "scd30", "tls", "influx")

MAIN = """
import json, struct, payload, scd30
cases = json.loads(open('cases.json').read())
e = payload.Encoder('dev-01', 'lab', '1.0.0', False)
buf = bytearray(e.max_size())
out = []
for raw in cases:
    # the sensor's bytes -> float32 -> the board's float, as scd30.py decodes a measurement word pair
    v = struct.unpack('>f', bytes.fromhex(raw))[0]
    n = e.encode([v, None, None, None, None, None], 1764000000000, buf)
    out.append([raw, bytes(buf[:n]).decode(), list(e.flagged), repr(v)])
print('FLOATS ' + json.dumps(out))
"""


def f32_hex(value: float) -> str:
    return struct.pack(">f", value).hex()


def fixed2(value: float) -> str:
    """The encoder's two decimals, computed on the float32 value (what a float32 board holds)."""
    c = round(value * 100)
    sign = "-" if c < 0 else ""
    c = abs(c)
    return f"{sign}{c // 100}.{c % 100:02d}"


async def test_float32_values_round_and_format_as_on_the_esp32_and_never_raise(devices) -> None:
    exact = [21.345, 21.355, -3.005, 0.005, -0.004, 99.995, 1013.25, 25.08, 0.1 + 0.2, 1e-30]
    odd = {
        "f32max": "7f7fffff",
        "-f32max": "ff7fffff",
        "inf": "7f800000",
        "-inf": "ff800000",
        "nan": "7fc00000",
        "3.41e36": f32_hex(3.41e36),
    }
    cases = [f32_hex(v) for v in exact] + list(odd.values())
    device = devices("dev-30")
    bundle = build_bundle("1.0.0", FEATURES)
    device.install({**bundle, "main.py": MAIN, "cases.json": json.dumps(cases)})
    device.start()
    line = await device.wait_console("FLOATS", timeout=30)
    out = {raw: (text, flagged) for raw, text, flagged, _ in json.loads(line.split("FLOATS ", 1)[1])}
    for value in exact:
        raw = f32_hex(value)
        held = struct.unpack(">f", bytes.fromhex(raw))[0]  # not `value`: what float32 keeps of it
        text, flagged = out[raw]
        assert flagged == [], (value, text)
        assert f"temperature={fixed2(held)} " in text, (value, held, text)
    # 21.345 is 21.344999... in float32: a float32 board writes 21.34, not the 21.35 a double would
    assert "temperature=21.34 " in out[f32_hex(21.345)][0]
    for name, raw in odd.items():
        text, flagged = out[raw]
        assert flagged == [0], (name, text)  # left out and flagged, never an OverflowError or "inf"/"nan"
        assert "temperature" not in text and "inf" not in text and "nan" not in text, (name, text)
    assert math.isclose(struct.unpack(">f", bytes.fromhex(odd["f32max"]))[0], 3.4028234663852886e38)
