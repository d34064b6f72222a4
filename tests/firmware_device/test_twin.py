"""The device twin under the real MicroPython interpreter: a desired configuration is validated as a
whole, applied without a reset, persisted and reported; a bad one changes nothing and says why; boot
lays the persisted one over config.json; the heartbeat status carries the applied generation and the
last reading."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from mpy_harness import DEVICE, run_micropython
from test_app import GOOD

SCRIPT = """
import json, os, sys, asyncio
sys.path.insert(0, '/app')
import app, slots, config, twin
from fakes import drive, FakeI2C, FakeUART
d = json.load(open('/data/input.json'))
os.mkdir('/dev1'); os.chdir('/dev1')

def frame(pm25, pm10, kind=0xC0):
    v = [int(pm25 * 10) & 0xFF, int(pm25 * 10) >> 8, int(pm10 * 10) & 0xFF, int(pm10 * 10) >> 8, 1, 2]
    return bytes([0xAA, kind] + v + [sum(v) & 0xFF, 0xAB])
def respond(cmd):
    # a reply names the command it answers (the driver checks it since issue 14)
    return frame(7.5, 11.0) if cmd[2] == 4 else bytes([0xAA, 0xC5, cmd[2], cmd[3], cmd[4], 0, 1, 2, (cmd[2] + cmd[3] + cmd[4] + 3) & 0xFF, 0xAB])

class Client:
    def __init__(self):
        self.connected = True
        self.sent = []
        self.username = None
        self.password = None
    async def publish(self, topic, data, n=-1, qos=0, retain=False):
        self.sent.append([bytes(topic).decode(), bytes(data[:n] if n >= 0 else data).decode(), qos, retain])
        return len(self.sent)
    def is_acked(self, pid):
        return True
    async def wait_puback(self, pid):
        return True
    def close(self):
        self.connected = False

cfg = config.validate(d['config'])
a = app.App(cfg, slots.default_state('1.0.0'), make_i2c=lambda w: FakeI2C(), make_uart=lambda w: FakeUART(respond))
a.client = Client()
out = {'before': json.loads(a.status_json())}
drive(a.measure_once())
out['heartbeat'] = json.loads(a.status_json())
results = []
for name, text in d['docs']:
    a.measure_wake.clear()
    ok = a.apply_desired(text)
    results.append([name, ok, dict(a.config_state), a.cfg['measurementIntervalSeconds'],
                    [s['type'] for s in a.cfg['sensors']], a.measure_wake.is_set(),
                    a.client.username, a.client.password])
out['results'] = results
out['encoder_json'] = a.encoder.json
out['ota'] = a.cfg['ota']
out['heartbeatSeconds'] = a.cfg['heartbeatSeconds']
out['saved'] = json.loads(open('desired.json').read())['generation']
out['fallback'] = a._fallback_login
drive(a.measure_once())
out['json_payload'] = [m[1] for m in a.client.sent if m[0].endswith('/measurements')][-1]
# a reboot: config.json as provisioned, the persisted desired document on top
booted = twin.overlay(config.validate(d['config']), '', twin.driver_present)
out['booted'] = [booted['measurementIntervalSeconds'], booted['generation'], booted['features']]
# a persisted document the new build cannot honour is ignored at boot, not a boot loop
with open('desired.json', 'w') as f:
    f.write(json.dumps({'generation': 9, 'sensors': [{'type': 'dht22'}]}))
again = twin.overlay(config.validate(d['config']), '', twin.driver_present, log=lambda *x: None)
out['ignored'] = [again['measurementIntervalSeconds'], again.get('generation')]
print('RESULT', json.dumps(out))
"""


def _build_without(tmp_path: Path, driver: str) -> Path:
    """The device sources of a build that lacks one driver module."""
    build = tmp_path / "build"
    shutil.copytree(DEVICE, build, ignore=shutil.ignore_patterns("__pycache__", f"{driver}.py"))
    return build


def test_desired_configuration_applies_persists_and_refuses_bad_documents(tmp_path: Path) -> None:
    good = {
        "generation": 2,
        "measurementIntervalSeconds": 3,
        "heartbeatSeconds": 5,
        "sensors": [{"type": "bme280", "bus": 0, "address": 119, "sda": 21, "scl": 22}, {"type": "sds011"}],
        "payload": "json",
        "ota": {"checkIntervalSeconds": 600, "jitterSeconds": 0, "channel": "beta"},
        "broker": {"username": "dev-01", "password": "new-secret"},
    }
    docs = [
        ["good", json.dumps(good, sort_keys=True)],
        ["same_again", json.dumps(good, sort_keys=True)],
        ["missing_driver", json.dumps({"generation": 3, "sensors": [{"type": "scd30"}]})],
        ["not_json", "{generation: 4"],
        ["bad_interval", json.dumps({"generation": 5, "measurementIntervalSeconds": 0})],
        ["unknown_key", json.dumps({"generation": 6, "measurementIntervalSecs": 5})],
        [
            "duplicate_sensor",
            json.dumps({"generation": 7, "sensors": [{"type": "bme280"}, {"type": "bme280"}]}),
        ],
        ["cleared", ""],
    ]
    out = (
        run_micropython(SCRIPT, {"config": GOOD, "docs": docs}, device_dir=_build_without(tmp_path, "scd30"))
        .check()
        .json()
    )
    assert out["before"]["config"] == {"generation": 0} and "reading" not in out["before"]
    reading = out["heartbeat"]["reading"]
    assert reading["pm25"] == 7.5 and reading["pm10"] == 11.0 and reading["time"] > 1_600_000_000_000
    by_name = {r[0]: r[1:] for r in out["results"]}
    ok, state, interval, sensors, woke, user, password = by_name["good"]
    assert ok and state == {"generation": 2} and interval == 3 and sensors == ["bme280", "sds011"] and woke
    assert (user, password) == ("dev-01", "new-secret")
    assert out["fallback"] == [None, None]  # the provisioned login, kept until the new one worked
    assert by_name["same_again"][0] is False and by_name["same_again"][1] == {"generation": 2}
    reasons = {
        "missing_driver": "driver scd30 not in this build",
        "not_json": "desired configuration is not valid JSON",
        "bad_interval": "measurementIntervalSeconds must be an integer",
        "unknown_key": "unknown desired key 'measurementIntervalSecs'",
        "duplicate_sensor": "sensor bme280 listed twice",
    }
    for name, reason in reasons.items():
        ok, state, interval, sensors, _woke, _u, _p = by_name[name]
        assert ok is False, name
        assert state["generation"] == 2 and state["error"].startswith(reason), (name, state)
        assert interval == 3 and sensors == ["bme280", "sds011"], name  # the last good configuration
    assert by_name["missing_driver"][1]["rejected"] == 3
    assert "rejected" not in by_name["not_json"][1]
    assert by_name["cleared"][0] is False
    assert out["encoder_json"] is True and json.loads(out["json_payload"])["pm25"] == 7.5
    assert out["ota"]["checkIntervalSeconds"] == 600 and out["ota"]["channel"] == "beta"
    assert out["heartbeatSeconds"] == 5 and out["saved"] == 2
    assert out["booted"][0] == 3 and out["booted"][1] == 2 and "json" in out["booted"][2]
    assert out["ignored"] == [10, None]


CONTRACT = """
import json, sys
sys.path.insert(0, '/app')
import config, twin
d = json.load(open('/data/input.json'))
cfg = config.validate(d['config'])
out = {}
for name, text in d['docs']:
    try:
        new = twin.merge(cfg, json.loads(text), twin.driver_present)
        out[name] = ['ok', new['measurementIntervalSeconds'], new['heartbeatSeconds'], new['sensors'],
                     new['ota']['checkIntervalSeconds'], new['broker'].get('password'), new['features'],
                     new.get('certificates')]
    except config.ConfigError as e:
        out[name] = ['error', str(e)]
print('RESULT', json.dumps(out))
"""


def test_what_the_operator_publishes_is_what_the_firmware_accepts() -> None:
    """The contract between reconcilers.devicetwin (CPython) and twin.py (MicroPython): every document the
    operator can make for this board applies, field for field."""
    from weatherfleet.models import SensorFleet, WeatherSensor
    from weatherfleet.reconcilers.devicetwin import desired_config, desired_text

    fleet = SensorFleet.model_validate(
        {
            "metadata": {"name": "garden"},
            "spec": {
                "selector": {},
                "alerting": {"noDataAfter": "2m"},
                "certificates": {"renewBefore": "20h"},
            },
        }
    )
    spec = {
        "deviceId": "dev-01",
        "location": "garden shed",
        "sensors": [
            {"type": "bme280", "i2c": {"bus": 1, "sda": 25, "scl": 26, "address": 119}},
            {"type": "sds011"},
        ],
        "measurementIntervalSeconds": 3,
        "features": {"payload": "json"},
        "firmware": {"checkIntervalSeconds": 600, "jitterSeconds": 30, "channel": "beta"},
    }
    sensor = WeatherSensor.model_validate({"metadata": {"name": "shed", "generation": 4}, "spec": spec})
    docs = [
        ["mosquitto", desired_text(desired_config(sensor, fleet))],
        ["nanomq", desired_text(desired_config(sensor, fleet, ("dev-01", "s3cret")))],
        ["no_fleet", desired_text(desired_config(sensor, None))],
    ]
    out = run_micropython(CONTRACT, {"config": GOOD, "docs": docs}).check().json()
    for name in ("mosquitto", "nanomq", "no_fleet"):
        assert out[name][0] == "ok", (name, out[name])
    _, interval, heartbeat, sensors, check, password, features, certs = out["nanomq"]
    assert interval == 3 and heartbeat == 30 and check == 600 and password == "s3cret"
    assert sensors[0] == {"type": "bme280", "bus": 1, "sda": 25, "scl": 26, "address": 119}
    assert sensors[1]["type"] == "sds011" and "json" in features and "influx" not in features
    assert certs == {"renewBeforeSeconds": 72000}
    assert out["mosquitto"][5] is None and out["no_fleet"][7] is None


ROTATION = """
import json, sys
sys.path.insert(0, '/app')
import app, slots, config, mqtt
from fakes import drive, FakeI2C, FakeUART
d = json.load(open('/data/input.json'))
cfg = config.validate(d['config'])

class Client:
    # a broker that knows only the logins in d['known']
    def __init__(self):
        self.connected = False
        self.username = cfg['broker'].get('username')
        self.password = cfg['broker'].get('password')
        self.tried = []
    async def connect(self):
        self.tried.append([self.username, self.password])
        if [self.username, self.password] not in d['known']:
            raise mqtt.Refused('connection refused, reason code 134', 134)
        self.connected = True
    def close(self):
        self.connected = False

a = app.App(cfg, slots.default_state('1.0.0'), make_i2c=lambda w: FakeI2C(), make_uart=lambda w: FakeUART(lambda c: b''))
a.client = Client()
out = {}
a.apply_desired(json.dumps({'generation': 2, 'broker': {'username': 'dev-01', 'password': 'new'}}))
drive(a.connect())   # the broker has not switched yet: the new login is refused, the previous one works
out['before_switch'] = [a.client.tried, a.client.connected, a._fallback_login]
a.client.tried = []
a.client.connected = False
a.apply_desired(json.dumps({'generation': 3, 'broker': {'username': 'dev-01', 'password': 'newer'}}))
drive(a.connect())   # rotated again before the broker switched: still the last login that worked
out['again'] = [a.client.tried, a.client.connected, a._fallback_login]
a.client.tried = []
a.client.connected = False
d['known'].append(['dev-01', 'newer'])
drive(a.connect())   # the broker has switched: the new login works, the fallback is forgotten
out['after_switch'] = [a.client.tried, a.client.connected, a._fallback_login]
print('RESULT', json.dumps(out))
"""


def test_a_rotated_broker_login_falls_back_to_the_previous_one_until_the_broker_has_it() -> None:
    """NanoMQ passwords through the twin: the board tries the new login first and, when the broker refuses
    it (not switched yet), the previous one, once; after a success the fallback is gone."""
    cfg = dict(GOOD, broker={"host": "b", "tls": False, "username": "dev-01", "password": "old"})
    known = [["dev-01", "old"]]
    out = run_micropython(ROTATION, {"config": cfg, "known": known}).check().json()
    tried, connected, fallback = out["before_switch"]
    assert tried == [["dev-01", "new"], ["dev-01", "old"]] and connected and fallback == ["dev-01", "old"]
    tried, connected, fallback = out["again"]
    assert tried == [["dev-01", "newer"], ["dev-01", "old"]] and connected and fallback == ["dev-01", "old"]
    tried, connected, fallback = out["after_switch"]
    assert tried == [["dev-01", "newer"]] and connected and fallback is None


WORST_STATUS = """
import json, sys
sys.path.insert(0, '/app')
import report, mqtt
long = 'x' * 200
s = report.status(True, firmware='10.100.1000', uptime=2**31, heap=2**22, rssi=-100, boot='watchdog', slot='b',
                  sensors={'bme280': long, 'scd30': long, 'sds011': long}, dropped=65535,
                  config={'generation': 2**31, 'rejected': 2**31, 'error': long},
                  reading={'time': 1795934206007, 'temperature': -40.0, 'humidity': 100.0, 'pressure': 1100.0,
                           'co2': 40000.0, 'pm25': 999.9, 'pm10': 999.9},
                  cert={'error': long})
topic = ('sensors/' + 'd' * 63 + '/status').encode()
buf = bytearray(768)
n = mqtt.encode_publish(buf, topic, s.encode(), -1, 1, True, 1, 5)
print('RESULT', json.dumps([n, json.loads(s)['config']['error'][-3:]]))
"""


def test_the_heartbeat_status_always_fits_the_transmit_buffer() -> None:
    """Whatever the errors say, the status (with reading, config and certificate state) fits the device
    MQTT client's 768-byte buffer: a status too big to send would drop the connection on every attempt."""
    n, tail = run_micropython(WORST_STATUS).check().json()
    assert n <= 768 and tail == "..."
