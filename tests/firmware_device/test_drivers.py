"""Sensor drivers under the real MicroPython interpreter, over fake buses, against datasheet examples."""

from __future__ import annotations

import struct

from mpy_harness import run_micropython

# Bosch BMP280/BME280 datasheet, "Calculating pressure and temperature" worked example
EXAMPLE_T = (27504, 26435, -1000)
EXAMPLE_P = (36477, -10685, 3024, 2855, 140, -7, 15500, -14600, 6000)
EXAMPLE_ADC_T = 519888
EXAMPLE_ADC_P = 415148
# humidity calibration of a real BME280 (the datasheet has no humidity worked example)
H1, H2, H3, H4, H5, H6 = 75, 362, 0, 313, 50, 30
ADC_H = 30000


def _calib_bytes() -> tuple[list[int], list[int]]:
    c00 = struct.pack("<HhhHhhhhhhhh", *EXAMPLE_T, *EXAMPLE_P) + bytes([0, H1])
    e4 = (H4 >> 4) & 0xFF
    e5 = (H4 & 0x0F) | ((H5 & 0x0F) << 4)
    e6 = (H5 >> 4) & 0xFF
    c26 = struct.pack("<hB", H2, H3) + bytes([e4, e5, e6, H6 & 0xFF])
    return list(c00), list(c26)


def _float_reference() -> tuple[float, float, float]:
    """The datasheet's double-precision formulas (section 8.1), independent of the driver's integer ones."""
    t1, t2, t3 = EXAMPLE_T
    p1, p2, p3, p4, p5, p6, p7, p8, p9 = EXAMPLE_P
    adc_t, adc_p = EXAMPLE_ADC_T, EXAMPLE_ADC_P
    var1 = (adc_t / 16384.0 - t1 / 1024.0) * t2
    var2 = ((adc_t / 131072.0 - t1 / 8192.0) * (adc_t / 131072.0 - t1 / 8192.0)) * t3
    t_fine = int(var1 + var2)
    temperature = (var1 + var2) / 5120.0
    var1 = t_fine / 2.0 - 64000.0
    var2 = var1 * var1 * p6 / 32768.0
    var2 = var2 + var1 * p5 * 2.0
    var2 = var2 / 4.0 + p4 * 65536.0
    var1 = (p3 * var1 * var1 / 524288.0 + p2 * var1) / 524288.0
    var1 = (1.0 + var1 / 32768.0) * p1
    p = 1048576.0 - adc_p
    p = (p - var2 / 4096.0) * 6250.0 / var1
    var1 = p9 * p * p / 2147483648.0
    var2 = p * p8 / 32768.0
    pressure = p + (var1 + var2 + p7) / 16.0
    h = t_fine - 76800.0
    h = (ADC_H - (H4 * 64.0 + H5 / 16384.0 * h)) * (
        H2 / 65536.0 * (1.0 + H6 / 67108864.0 * h * (1.0 + H3 / 67108864.0 * h))
    )
    h = h * (1.0 - H1 * h / 524288.0)
    return temperature, pressure, min(max(h, 0.0), 100.0)


BME_SCRIPT = """
import json, bme280
from fakes import FakeI2C
d = json.load(open('/data/input.json'))
bus = FakeI2C()
mem = bytearray(256)
mem[0xD0] = 0x60
for i, b in enumerate(d['c00']): mem[0x88 + i] = b
for i, b in enumerate(d['c26']): mem[0xE1 + i] = b
at, ap, ah = d['adc']
raw = (ap >> 12, (ap >> 4) & 0xFF, (ap & 0xF) << 4, at >> 12, (at >> 4) & 0xFF, (at & 0xF) << 4, ah >> 8, ah & 0xFF)
for i, b in enumerate(raw): mem[0xF7 + i] = b
bus.mem[0x76] = mem
s = bme280.BME280(bus, 0x76, sleep_ms=lambda ms: None)
t, t_fine = bme280.compensate_temperature(s.cal, at)
p = bme280.compensate_pressure(s.cal, ap, t_fine)
temp, hum, press = s.read()
# what the driver wrote: ctrl_hum before ctrl_meas, forced mode
regs = [(r, list(v)) for a, r, v in bus.writes]
wrong = FakeI2C(); m2 = bytearray(256); m2[0xD0] = 0x58; wrong.mem[0x76] = m2
try:
    bme280.BME280(wrong, 0x76)
    chip = 'accepted'
except bme280.SensorError as e:
    chip = str(e)
print('RESULT', json.dumps({'t': t, 't_fine': t_fine, 'p_q24_8': p, 'temp': temp, 'hum': hum, 'press_hpa': press,
                            'writes': regs, 'chip': chip}))
"""


def test_bme280_datasheet_example_and_forced_mode() -> None:
    c00, c26 = _calib_bytes()
    r = run_micropython(
        BME_SCRIPT, {"c00": c00, "c26": c26, "adc": [EXAMPLE_ADC_T, EXAMPLE_ADC_P, ADC_H]}
    ).check()
    out = r.json()
    # datasheet: t_fine = 128422, T = 25.08 degC, p = 100653.27 Pa
    assert out["t_fine"] == 128422
    assert out["t"] == 2508
    assert abs(out["p_q24_8"] / 256 - 100653.27) < 0.05
    ref_t, ref_p, ref_h = _float_reference()
    assert abs(out["temp"] - ref_t) < 0.01
    assert abs(out["press_hpa"] * 100 - ref_p) < 1.0
    assert abs(out["hum"] - ref_h) < 0.1
    assert 0 < out["hum"] < 100
    assert out["writes"] == [[0xF2, [0x01]], [0xF4, [0x25]]]
    assert "0x58" in out["chip"]


SCD_SCRIPT = """
import json, scd30
from fakes import FakeSCD30Bus
bus = FakeSCD30Bus(scd30.crc8, 612.5, 22.25, 41.0)
s = scd30.SCD30(bus, sleep_ms=lambda ms: None)
first = s.read()
bus.ready = 0
not_ready = s.read()
bad = FakeSCD30Bus(scd30.crc8, 612.5, 22.25, 41.0, corrupt=True)
b = scd30.SCD30(bad, sleep_ms=lambda ms: None)
try:
    b.read(); corrupt = 'accepted'
except scd30.SensorError as e:
    corrupt = str(e)
print('RESULT', json.dumps({'crc_beef': scd30.crc8(b'\\xbe\\xef'), 'read': first, 'not_ready': not_ready,
      'corrupt': corrupt, 'commands': [[c, list(a)] for c, a in bus.commands[:3]], 'fw': s.firmware}))
"""


def test_scd30_crc_floats_and_commands() -> None:
    out = run_micropython(SCD_SCRIPT).check().json()
    assert out["crc_beef"] == 0x92  # SCD30 interface description, CRC example
    assert out["read"] == [612.5, 22.25, 41.0]
    assert out["not_ready"] is None
    assert "crc" in out["corrupt"]
    # firmware version, interval 2 s (+crc), start continuous measurement with pressure 0 (+crc 0x81)
    assert out["commands"][0] == [0xD100, []]
    assert out["commands"][1][0] == 0x4600 and out["commands"][1][1][:2] == [0, 2]
    assert out["commands"][2] == [0x0010, [0, 0, 0x81]]
    assert out["fw"] == 0x0342


SDS_SCRIPT = """
import json, sds011
from fakes import FakeUART

def frame(pm25, pm10, kind=0xC0):
    d = [int(pm25 * 10) & 0xFF, int(pm25 * 10) >> 8, int(pm10 * 10) & 0xFF, int(pm10 * 10) >> 8, 0x12, 0x34]
    return bytes([0xAA, kind] + d + [sum(d) & 0xFF, 0xAB])

def reply(d):
    # AA C5 <command> <d1> <d2> 00 id id checksum AB: the answer to a command, naming it
    d = list(d) + [0, 0x12, 0x34]
    return bytes([0xAA, 0xC5] + d + [sum(d) & 0xFF, 0xAB])

state = {'n': 0}
def respond(cmd):
    if cmd[2] == 4:  # query: garbage, a frame with a bad checksum, a truncated frame, then the real one
        bad = bytearray(frame(1, 2)); bad[8] ^= 0xFF
        return b'\\x00\\xff\\xaa\\x13' + bytes(bad) + frame(9, 9)[:5] + frame(12.3, 45.6)
    return reply((cmd[2], cmd[3], cmd[4]))

def start(answer):
    try:
        sds011.SDS011(FakeUART(answer), sleep_ms=sleep_ms, ticks_ms=lambda: clock['t'], ticks_diff=lambda a, b: a - b)
        return 'accepted'
    except sds011.SensorError as e:
        return str(e)

u = FakeUART(respond)
clock = {'t': 0}
def sleep_ms(ms): clock['t'] += ms
s = sds011.SDS011(u, sleep_ms=sleep_ms, ticks_ms=lambda: clock['t'], ticks_diff=lambda a, b: a - b)
mode_cmd = list(u.written[0])
pm = s.read()
try:
    sds011.SDS011(FakeUART(lambda c: b''), sleep_ms=sleep_ms, ticks_ms=lambda: clock['t'], ticks_diff=lambda a, b: a - b)
    missing = 'accepted'
except sds011.SensorError as e:
    missing = str(e)
s.sleep()
sleep_cmd = list(u.written[-1])
p = sds011.FrameParser()
valid = [p.feed(b) for b in frame(3.1, 5.2)]
# issue 14: start-up accepts only a reply to the set-mode command that says query mode is on
other_command = start(lambda c: reply((6, 1, 1)))  # a reply, but to "sleep"
active = start(lambda c: reply((2, 1, 0)))  # the sensor says: still reporting on its own
data_frame = start(lambda c: frame(1, 2))  # a measurement instead of a reply
print('RESULT', json.dumps({'pm': pm, 'dropped': s.parser.dropped, 'mode_cmd': mode_cmd, 'sleep_cmd': sleep_cmd,
      'missing': missing, 'valid': valid.count(True), 'checksum': sds011.checksum(frame(3.1, 5.2), 2, 8),
      'other_command': other_command, 'active': active, 'data_frame': data_frame}))
"""


def test_sds011_checksum_resync_query_and_sleep() -> None:
    out = run_micropython(SDS_SCRIPT).check().json()
    assert out["pm"] == [12.3, 45.6]
    assert out["dropped"] >= 1  # the frame with a bad checksum was seen and rejected
    assert out["valid"] == 1
    assert out["checksum"] == (31 + 0 + 52 + 0 + 0x12 + 0x34) & 0xFF
    # datasheet command frames: set reporting mode = query; sleep
    assert out["mode_cmd"][:5] == [0xAA, 0xB4, 2, 1, 1] and out["mode_cmd"][15:17] == [0xFF, 0xFF]
    assert out["mode_cmd"][17] == sum(out["mode_cmd"][2:17]) & 0xFF and out["mode_cmd"][18] == 0xAB
    assert out["sleep_cmd"][:5] == [0xAA, 0xB4, 6, 1, 0]
    assert "no reply" in out["missing"]
    assert "no reply" in out["other_command"]
    assert "still in active reporting mode" in out["active"]
    assert "no reply" in out["data_frame"]


BME_ODD_SCRIPT = """
import json, bme280
from fakes import FakeI2C
d = json.load(open('/data/input.json'))

def sensor(c00, c26, adc):
    bus = FakeI2C()
    mem = bytearray(256)
    mem[0xD0] = 0x60
    for i, b in enumerate(c00): mem[0x88 + i] = b
    for i, b in enumerate(c26): mem[0xE1 + i] = b
    at, ap, ah = adc
    raw = (ap >> 12, (ap >> 4) & 0xFF, (ap & 0xF) << 4, at >> 12, (at >> 4) & 0xFF, (at & 0xF) << 4, ah >> 8, ah & 0xFF)
    for i, b in enumerate(raw): mem[0xF7 + i] = b
    bus.mem[0x76] = mem
    try:
        return list(bme280.BME280(bus, 0x76, sleep_ms=lambda ms: None).read())
    except bme280.SensorError as e:
        return str(e)

out = {}
for name, case in d.items():
    out[name] = sensor(*case)
print('RESULT', json.dumps(out))
"""


def test_bme280_skipped_measurements_and_zero_calibration_are_not_values() -> None:
    """Issue 14: the "measurement skipped" codes (pressure 0x80000, humidity 0x8000) used to come out as
    657.5 hPa and 56.3 %RH, and an all-zero calibration block as 0 hPa."""
    c00, c26 = _calib_bytes()
    adc = [EXAMPLE_ADC_T, EXAMPLE_ADC_P, ADC_H]
    cases = {
        "normal": (c00, c26, adc),
        "pressure_skipped": (c00, c26, [EXAMPLE_ADC_T, 0x80000, ADC_H]),
        "humidity_skipped": (c00, c26, [EXAMPLE_ADC_T, EXAMPLE_ADC_P, 0x8000]),
        "both_skipped": (c00, c26, [EXAMPLE_ADC_T, 0x80000, 0x8000]),
        "temperature_skipped": (c00, c26, [0x80000, EXAMPLE_ADC_P, ADC_H]),
        "zero_calibration": ([0] * 26, [0] * 7, adc),
        "zero_humidity_calibration": ([*c00[:25], 0], [0] * 7, adc),
    }
    out = run_micropython(BME_ODD_SCRIPT, cases).check().json()
    temp, hum, press = out["normal"]
    assert 25.0 < temp < 25.2 and 0 < hum < 100 and 1000 < press < 1010
    assert out["pressure_skipped"][1:] == [hum, None] and out["pressure_skipped"][0] == temp
    assert out["humidity_skipped"][1:] == [None, press]
    assert out["both_skipped"] == [temp, None, None]
    assert "temperature skipped" in out["temperature_skipped"]
    assert "calibration data is all zero" in out["zero_calibration"]
    assert out["zero_humidity_calibration"] == [temp, None, press]
