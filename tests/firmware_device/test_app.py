"""Configuration handling and the application's measurement/publish/health logic under the real
MicroPython interpreter, with sensors on fake buses and a recording MQTT client."""

from __future__ import annotations

import json

from mpy_harness import run_micropython

GOOD = {
    "device": "dev-01",
    "location": "garden shed",
    "broker": {"host": "broker.local", "port": 8883, "tls": False},
    "features": ["bme280", "sds011", "ota", "influx"],
    "ota": {"host": "otaflux.local", "port": 8080},
    "signingKeys": ["00" * 32],
    "measurementIntervalSeconds": 10,
    "bufferSize": 4,
    "sensors": [{"type": "bme280", "bus": 0, "address": 118}, {"type": "sds011", "uart": 2}],
}

CONFIG_SCRIPT = """
import sys
sys.path.insert(0, '/app')
import json, os, config, app
d = json.load(open('/data/input.json'))
os.mkdir('/cfg'); os.chdir('/cfg')
out = {}
def attempt(name, text):
    if text is not None:
        with open('config.json', 'w') as f:
            f.write(text)
    else:
        try: os.remove('config.json')
        except OSError: pass
    try:
        c = config.load()
        out[name] = ['ok', c['broker']['keepalive'], c['ota']['checkIntervalSeconds'], c['bufferSize']]
    except config.ConfigError as e:
        out[name] = ['error', str(e)]
for name, text in d['cases']:
    attempt(name, text)
# idle: keeps feeding the watchdog and returns once the file is fixed
class Wdt:
    n = 0
    def feed(self): Wdt.n += 1
w = Wdt()
ticks = [0]
def sleep(s):
    ticks[0] += 1
    if ticks[0] == 5:
        with open('config.json', 'w') as f:
            f.write(d['good'])
cfg = app.idle('broken', w, retry_s=2, sleep=sleep)
out['idle'] = [cfg['device'], Wdt.n, ticks[0]]
print('RESULT', json.dumps(out))
"""


def test_config_errors_are_clear_and_idle_recovers() -> None:
    good = json.dumps(GOOD)
    cases = [
        ["good", good],
        ["missing", None],
        ["not_json", "{device: dev-01"],
        ["no_device", json.dumps({k: v for k, v in GOOD.items() if k != "device"})],
        ["bad_label", json.dumps(dict(GOOD, device="Dev_01"))],
        ["no_broker", json.dumps({k: v for k, v in GOOD.items() if k != "broker"})],
        ["both_payloads", json.dumps(dict(GOOD, features=["bme280", "influx", "json"]))],
        ["unknown_feature", json.dumps(dict(GOOD, features=["bme280", "lora"]))],
        ["no_keys", json.dumps({k: v for k, v in GOOD.items() if k != "signingKeys"})],
        ["bad_interval", json.dumps(dict(GOOD, measurementIntervalSeconds=0))],
        ["bad_sensor", json.dumps(dict(GOOD, sensors=[{"type": "dht22"}]))],
        ["tls_missing", json.dumps(dict(GOOD, broker={"host": "b", "tls": True}))],
        [
            "tls_paths",
            json.dumps(dict(GOOD, broker={"host": "b", "tls": True}, tls={"ca": "ca.pem", "key": "k"})),
        ],
        [
            "tls_files",
            json.dumps(
                dict(
                    GOOD, broker={"host": "b", "tls": True}, tls={"ca": "ca.pem", "cert": "c.pem", "key": "k"}
                )
            ),
        ],
    ]
    r = run_micropython(CONFIG_SCRIPT, {"cases": cases, "good": good}).check()
    out = r.json()
    assert out["good"] == ["ok", 60, 3600, 4]
    expected = {
        "missing": "cannot read config.json",
        "not_json": "config.json is not valid JSON",
        "no_device": "device must be a DNS-1123 label",
        "bad_label": "device must be a DNS-1123 label",
        "no_broker": "missing section 'broker'",
        "both_payloads": "features influx and json exclude each other",
        "unknown_feature": "features must be a list of",
        "no_keys": "signingKeys must list at least one",
        "bad_interval": "measurementIntervalSeconds must be an integer",
        "bad_sensor": "each sensor needs a type",
        "tls_missing": "missing section 'tls'",
        "tls_paths": "tls.cert must be a file path",
        "tls_files": "tls.ca: ca.pem not found",
    }
    for name, text in expected.items():
        assert out[name][0] == "error" and out[name][1].startswith(text), (name, out[name])
    device, feeds, sleeps = out["idle"]
    assert device == "dev-01" and feeds >= 4 and sleeps >= 5
    assert "config: broken - idling" in r.out


APP_SCRIPT = """
import json, os, struct, asyncio, sys
sys.path.insert(0, '/app')
import app, slots, payload
from fakes import drive, FakeI2C, FakeUART
d = json.load(open('/data/input.json'))
os.mkdir('/dev1'); os.chdir('/dev1')
cfg = __import__('config').validate(d['config'])

def frame(pm25, pm10, kind=0xC0):
    v = [int(pm25 * 10) & 0xFF, int(pm25 * 10) >> 8, int(pm10 * 10) & 0xFF, int(pm10 * 10) >> 8, 1, 2]
    return bytes([0xAA, kind] + v + [sum(v) & 0xFF, 0xAB])
def respond(cmd):
    # a reply names the command it answers (the driver checks it since issue 14)
    return frame(7.5, 11.0) if cmd[2] == 4 else bytes([0xAA, 0xC5, cmd[2], cmd[3], cmd[4], 0, 1, 2, (cmd[2] + cmd[3] + cmd[4] + 3) & 0xFF, 0xAB])

class Client:
    # records what the app publishes; 'connected' is flipped by the test
    def __init__(self):
        self.connected = False
        self.sent = []
    async def publish(self, topic, data, n=-1, qos=0, retain=False):
        self.sent.append([bytes(topic).decode(), bytes(data).decode(), qos, retain])
        return len(self.sent)
    def is_acked(self, pid):
        return True
    async def wait_puback(self, pid):
        return True
    def close(self):
        self.connected = False

state = slots.default_state('1.0.0')
state['pending'] = {'version': '1.1.0', 'slot': 'b'}
a = app.App(cfg, state, make_i2c=lambda w: FakeI2C(), make_uart=lambda w: FakeUART(respond))
a.client = Client()
out = {'version': a.version}
# broker unreachable: three measurements are buffered
for i in range(3):
    drive(a.measure_once())
out['buffered'] = len(a.ring)
out['sensors'] = a.sensors.status
out['sent_offline'] = len(a.client.sent)
a.client.connected = True
drive(a.measure_once())
out['sent'] = a.client.sent
out['ring_after'] = len(a.ring)
st = slots.load()
out['state'] = [st['active'], st['version'], st['pending'], [e['event'] for e in st['events']]]
out['healthy'] = a.healthy
# notifications: only a new, not rolled-back version wakes the OTA task
a.state['bad'] = ['1.2.0']
for v in ('1.1.0', '1.2.0', '1.3.0'):
    a.ota_wake.clear()
    a.on_message('ota/dev-01', json.dumps({'version': v, 'size': 1}).encode(), True)
    out['wake_' + v] = a.ota_wake.is_set()
a.on_message('ota/dev-01', b'not json', True)
# two drains at once (MQTT task after reconnect + measurement task) never send an entry twice
class Pause:
    def __iter__(self):
        yield None   # suspends the coroutine once, like waiting for a PUBACK from the network
    __await__ = __iter__
class SlowClient(Client):
    def is_acked(self, pid):
        return False
    async def wait_puback(self, pid):
        await Pause()
        return True
a.client = SlowClient()
a.client.connected = True
for i in range(3):
    a.ring.push(b'entry-%d' % i)
first = a.drain()
first.send(None)            # first drain: published entry-0, now waiting for its PUBACK
drive(a.drain())            # second drain meanwhile: must not publish anything
during = [m[1] for m in a.client.sent]
drive(first)                # the first drain finishes the ring
out['concurrent'] = [during, [m[1] for m in a.client.sent], len(a.ring)]
class FakeMachine:
    PWRON_RESET = 1
    WDT_RESET = 3
    @staticmethod
    def reset_cause():
        return 3
sys.modules['machine'] = FakeMachine
a.state['boot'] = 'normal'
a._reset_cause = None  # computed once per boot; the first status above ran without a machine module
out['status'] = json.loads(a.status_json())
a.state['boot'] = 'rollback'
out['boot_rollback'] = json.loads(a.status_json())['boot']
print('RESULT', json.dumps(out))
"""


def test_buffered_measurements_publish_in_order_and_confirm_the_release() -> None:
    cfg = dict(GOOD)
    out = run_micropython(APP_SCRIPT, {"config": cfg}).check().json()
    assert out["version"] == "1.1.0"  # running the pending slot
    assert out["buffered"] == 3 and out["sent_offline"] == 0
    # the BME280 is absent (nothing ACKs on the bus): reported, skipped; the SDS011 keeps publishing
    assert out["sensors"]["sds011"] == "ok"
    assert out["sensors"]["bme280"] != "ok"
    sent = out["sent"]
    measurements = [m for m in sent if m[0] == "sensors/dev-01/measurements"]
    assert len(measurements) == 4 and out["ring_after"] == 0
    stamps = [int(m[1].rsplit(" ", 1)[1]) for m in measurements]
    assert stamps == sorted(stamps)  # oldest first
    for m in measurements:
        assert m[1].startswith(
            "weather,device=dev-01,firmware=1.1.0,location=garden\\ shed pm25=7.50,pm10=11.00 "
        )
        assert m[2] == 1 and m[3] is False
    # first successful publish = health check: the pending release is confirmed and reported
    # (the "confirmed" event left the persistent queue once it was published)
    assert out["state"] == ["b", "1.1.0", None, []]
    assert out["healthy"] is True
    ota_events = [json.loads(m[1]) for m in sent if m[0] == "sensors/dev-01/ota"]
    assert [e["event"] for e in ota_events] == ["confirmed"] and ota_events[0]["version"] == "1.1.0"
    status = [m for m in sent if m[0] == "sensors/dev-01/status"]
    assert status and status[-1][3] is True and json.loads(status[-1][1])["online"] is True
    assert out["wake_1.1.0"] is False and out["wake_1.2.0"] is False and out["wake_1.3.0"] is True
    assert out["status"]["firmware"] == "1.1.0" and out["status"]["sensors"]["sds011"] == "ok"
    assert out["status"]["boot"] == "watchdog" and out["boot_rollback"] == "rollback"
    during, sent, left = out["concurrent"]
    assert during == ["entry-0"] and sent == ["entry-0", "entry-1", "entry-2"] and left == 0
