"""End to end on CPython: the real device code (firmware/device, built by the real pipeline) runs on an
emulated board, talks to the real Mosquitto over mutual TLS, and updates from the real OtaFlux serving
from the real registry."""

from __future__ import annotations

import asyncio
import itertools
import json
import time

import pytest

from devicesim.provision import build_bundle, device_config, provision
from weatherfleet import messages
from weatherfleet.ingest.parsing import MessageParser

pytestmark = pytest.mark.slow


async def wait_for(collector, predicate, timeout: float, device=None) -> None:
    """The collector waits on a condition variable; do it off the loop the emulated devices run on."""
    try:
        await asyncio.to_thread(collector.wait_for, predicate, timeout)
    except AssertionError as error:
        console = device.console_text()[-3000:] if device else ""
        raise AssertionError(f"{error}\n--- device console ---\n{console}") from None


def _points(collector, topic_suffix: str, device_id: str):
    parser = MessageParser()
    out = []
    for message in list(collector.messages):
        if message.topic == f"sensors/{device_id}/{topic_suffix}":
            out.extend(parser.parse(message.topic, message.payload, time.time_ns()))
    return out


async def test_device_publishes_measurements_over_mutual_tls(
    devices, mosquitto, mqtt_subscriber, local_ca
) -> None:
    device_id = "dev-06"
    collector = mqtt_subscriber(mosquitto, f"sensors/{device_id}/#")
    issued = local_ca.issue(device_id)
    features = ("bme280", "scd30", "sds011", "tls", "mtls", "influx")
    config = device_config(
        device_id,
        broker=(mosquitto.host, mosquitto.port),
        version="1.0.0",
        features=features,
        interval=1,
        location="green house",
    )
    device = devices(device_id)
    provision(device, config, build_bundle("1.0.0", features), ca=issued.ca, cert=issued.cert, key=issued.key)
    device.start()
    measurements = f"sensors/{device_id}/measurements"
    # the SCD30 has its first CO2 value after one 2 s interval: wait until one measurement carries it
    await wait_for(
        collector,
        lambda ms: (
            sum(m.topic == measurements for m in ms) >= 3
            and any(m.topic == measurements and b"co2=" in m.payload for m in ms)
        ),
        timeout=60,
        device=device,
    )
    points = _points(collector, "measurements", device_id)
    assert len(points) >= 3
    for point in points:
        assert point.tags == {"device": device_id, "location": "green house", "firmware": "1.0.0"}
        assert abs(point.time_ns - time.time_ns()) < 120 * 10**9
        assert {"temperature", "humidity", "pressure", "pm25", "pm10"} <= set(point.fields)
        for name, value in point.fields.items():
            _unit, low, high = messages.FIELDS[name]
            assert low <= value <= high, f"{name}={value}"
    first = points[0].fields
    truth = device.environment.at(device.clock.monotonic())
    assert first["temperature"] == pytest.approx(truth["temperature"], abs=1.0)
    assert first["pressure"] == pytest.approx(truth["pressure"], abs=1.0)
    status = [m for m in collector.messages if m.topic == f"sensors/{device_id}/status"]
    assert status and json.loads(status[-1].payload)["online"] is True
    assert json.loads(status[-1].payload)["firmware"] == "1.0.0"


class PersistentSubscriber:
    """A paho subscriber with a persistent session (clean_start False, QoS 1): the broker keeps what
    arrives while the subscriber itself is reconnecting, so nothing is lost on the test's side."""

    def __init__(self, settings, topic: str) -> None:
        import threading

        from weatherfleet.mqtt import make_client

        self.messages: list = []
        self.subscribed = threading.Event()
        self.client = make_client(settings, f"persistent-{topic.split('/')[1]}", clean_start=False)
        self.client.on_message = lambda _c, _u, m: self.messages.append(m)
        self.client.on_connect = lambda c, *_a: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_a: self.subscribed.set()
        self.client.connect(settings.host, settings.port)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


async def test_measurements_buffered_while_the_broker_is_down_arrive_in_order(
    devices, mosquitto_factory, mqtt_settings, local_ca
) -> None:
    from weatherfleet import identities

    device_id = "dev-12"
    broker = mosquitto_factory()
    subscriber = PersistentSubscriber(
        mqtt_settings(broker, identities.INGEST), f"sensors/{device_id}/measurements"
    )
    assert await asyncio.to_thread(subscriber.subscribed.wait, 10)
    issued = local_ca.issue(device_id)
    features = ("bme280", "tls", "mtls", "influx")
    config = device_config(
        device_id,
        broker=(broker.host, broker.port),
        version="1.0.0",
        features=features,
        interval=1,
        bufferSize=64,
    )
    device = devices(device_id)
    provision(device, config, build_bundle("1.0.0", features), ca=issued.ca, cert=issued.cert, key=issued.key)
    device.start()
    try:
        await device.wait_for(lambda: len(subscriber.messages) >= 2, 60, "first measurements")
        await asyncio.to_thread(broker.stop)
        stopped_at = time.time_ns()
        await asyncio.sleep(8)  # the outage: the device keeps measuring into its ring
        await asyncio.to_thread(broker.start)
        restarted_at = time.time_ns()
        parser = MessageParser()

        def times() -> list[int]:
            return [
                p.time_ns
                for m in list(subscriber.messages)
                for p in parser.parse(m.topic, m.payload, time.time_ns())
            ]

        await device.wait_for(
            lambda: sum(stopped_at < t < restarted_at for t in times()) >= 6,
            90,
            "measurements taken during the outage",
        )
        await device.wait_for(
            lambda: any(t > restarted_at + 10**9 for t in times()), 60, "fresh measurements"
        )
        stamps = times()
        assert stamps == sorted(stamps), "buffered measurements must arrive oldest first"
        assert len(set(stamps)) == len(stamps), "no duplicates"
        gaps = [(b - a) / 1e9 for a, b in itertools.pairwise(stamps)]
        assert max(gaps) < 3.5, f"a measurement was lost during the outage (gap {max(gaps):.1f} s)"
    finally:
        subscriber.stop()
