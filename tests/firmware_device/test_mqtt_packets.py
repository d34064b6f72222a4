"""The device's MQTT client under the real MicroPython interpreter: packet bytes against the MQTT 3.1.1 and
5.0 specifications (expected bytes are assembled here by hand), version fallback, PUBACK tracking,
incoming QoS 1 messages, keepalive ping, backoff with jitter."""

from __future__ import annotations

import struct

from mpy_harness import run_micropython


def s(b: bytes) -> bytes:
    return struct.pack(">H", len(b)) + b


def packet(first: int, body: bytes) -> bytes:
    n, rem = len(body), b""
    while True:
        d, n = n & 0x7F, n >> 7
        rem += bytes([d | (0x80 if n else 0)])
        if not n:
            break
    return bytes([first]) + rem + body


WILL_T = b"sensors/dev-01/status"
WILL_P = b'{"online": false}'

SCRIPT = """
import json, mqtt
from fakes import drive, FakeStreamReader, FakeStreamWriter
buf = bytearray(1024)
will = ('sensors/dev-01/status', '{"online": false}', True, 1)
out = {}
n = mqtt.encode_connect(buf, 'dev-01', 60, 4, True, will)
out['connect4'] = bytes(buf[:n]).hex()
n = mqtt.encode_connect(buf, 'dev-01', 60, 5, True, will, 'dev-01', 'pw')
out['connect5'] = bytes(buf[:n]).hex()
n = mqtt.encode_publish(buf, b'sensors/dev-01/measurements', b'abc', -1, 1, False, 7, 5)
out['publish5'] = bytes(buf[:n]).hex()
n = mqtt.encode_publish(buf, b't', b'x' * 200, -1, 0, True, 0, 4)
out['publish_long'] = bytes(buf[:n]).hex()
n = mqtt.encode_subscribe(buf, 3, 'ota/dev-01/#', 1, 5)
out['subscribe5'] = bytes(buf[:n]).hex()
try:
    mqtt.encode_publish(bytearray(16), b't', b'y' * 20)
    out['too_big'] = 'accepted'
except mqtt.MQTTError:
    out['too_big'] = 'rejected'

# a broker that answers a version-5 CONNECT with the 3.1.1 "unacceptable protocol version" code
conns = []
def open_connection(host, port, **kw):
    async def go():
        r = FakeStreamReader(b'\\x20\\x02\\x00\\x01' if not conns else b'\\x20\\x02\\x00\\x00')
        w = FakeStreamWriter()
        conns.append((r, w, kw))
        return r, w
    return go()
got = []
c = mqtt.MQTTClient('dev-01', 'broker', 8883, keepalive=30, will=will, open_connection=open_connection,
                    on_message=lambda t, p, r: got.append([t, bytes(p).decode(), r]), ticks_ms=lambda: 0)
drive(c.connect())
out['fallback_version'] = c.version
out['attempts'] = [w.out[0:1].hex() + '/' + str(w.out[8]) for r, w, kw in conns]
out['first_closed'] = conns[0][1].closed
r, w = conns[1][0], conns[1][1]
w.out = bytearray()
pid = drive(c.publish(b'sensors/dev-01/measurements', b'm1', -1, 1))
out['pid'] = pid
out['acked_before'] = c.is_acked(pid)
r.feed(bytes([0x40, 2, 0, pid]))
t, f, body = drive(c.read_packet()); drive(c.handle(t, f, body))
out['acked_after'] = c.is_acked(pid)
out['wait'] = drive(c.wait_puback(pid))
# incoming QoS 1 notification (3.1.1 framing since the fallback)
topic = b'ota/dev-01'
body = bytes([0, len(topic)]) + topic + b'\\x00\\x09' + b'{"version": "1.1.0", "size": 10}'
r.feed(bytes([0x33, len(body)]) + body)
w.out = bytearray()
t, f, body = drive(c.read_packet()); drive(c.handle(t, f, body))
out['puback_sent'] = bytes(w.out).hex()
out['messages'] = got
w.out = bytearray()
drive(c.ping())
out['ping'] = bytes(w.out).hex()
r.feed(b'\\x90\\x03\\x00\\x04\\x80')
t, f, body = drive(c.read_packet()); drive(c.handle(t, f, body))
out['suback'] = [c.sub_refused, c.connected]

# MQTT 5 PUBLISH with properties (message expiry) is parsed past them
c5 = mqtt.MQTTClient('dev-02', 'b', ticks_ms=lambda: 0)
c5.version = 5
props = b'\\x05\\x02\\x00\\x00\\x00\\x3c'
body = b'\\x00\\x03a/b' + props + b'hello'
c5.on_message = lambda t, p, r: got.append([t, bytes(p).decode(), r])
drive(c5.handle(3, 1, body))
out['v5_message'] = got[-1]
# MQTT 5 PUBACK with reason 0x87 (not authorized): handled (no endless retry) but counted and logged
drive(c5.handle(4, 0, b'\\x00\\x2a\\x87\\x00'))
out['refused'] = [c5.refused, c5.is_acked(42)]

out['backoff'] = [mqtt.backoff_ms(a, 1000, 60000, rand) for a, rand in ((0, 0.0), (0, 0.999), (3, 0.5), (30, 0.0), (30, 0.999))]
out['jitter_spread'] = len(set(mqtt.backoff_ms(4) for _ in range(50)))
print('RESULT', json.dumps(out))
"""


def test_mqtt_packets_and_client_behaviour() -> None:
    out = run_micropython(SCRIPT).check().json()
    flags = 0x02 | 0x04 | (1 << 3) | 0x20
    v4 = s(b"MQTT") + bytes([4, flags, 0, 60]) + s(b"dev-01") + s(WILL_T) + s(WILL_P)
    assert bytes.fromhex(out["connect4"]) == packet(0x10, v4)
    v5 = (
        s(b"MQTT")
        + bytes([5, flags | 0x80 | 0x40, 0, 60, 0])
        + s(b"dev-01")
        + b"\x00"
        + s(WILL_T)
        + s(WILL_P)
        + s(b"dev-01")
        + s(b"pw")
    )
    assert bytes.fromhex(out["connect5"]) == packet(0x10, v5)
    assert bytes.fromhex(out["publish5"]) == packet(
        0x32, s(b"sensors/dev-01/measurements") + b"\x00\x07" + b"\x00" + b"abc"
    )
    long = bytes.fromhex(out["publish_long"])
    assert long == packet(0x31, s(b"t") + b"x" * 200) and long[1:3] == bytes([0xCB, 0x01])  # 2-byte length
    assert bytes.fromhex(out["subscribe5"]) == packet(
        0x82, b"\x00\x03" + b"\x00" + s(b"ota/dev-01/#") + b"\x01"
    )
    assert out["too_big"] == "rejected"
    # tried MQTT 5 first, fell back to 3.1.1 on the refusal, on a fresh connection
    assert out["attempts"] == ["10/5", "10/4"] and out["fallback_version"] == 4 and out["first_closed"]
    assert out["acked_before"] is False and out["acked_after"] is True and out["wait"] is True
    assert out["puback_sent"] == "40020009"
    assert out["messages"][0] == ["ota/dev-01", '{"version": "1.1.0", "size": 10}', True]
    assert out["ping"] == "c000"
    assert out["suback"] == [0x80, True]  # logged, the connection stays up
    assert out["v5_message"] == ["a/b", "hello", True]
    assert out["refused"] == [1, True]
    b = out["backoff"]
    assert b[0] == 500 and 999 <= b[1] <= 1000 and b[2] == 6000 and b[3] == 30000 and b[4] < 60000
    assert out["jitter_spread"] > 10
