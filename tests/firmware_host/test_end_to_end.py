"""End to end on CPython: the real device code (firmware/device, built by the real pipeline) runs on an
emulated board, talks to the real Mosquitto over mutual TLS, and updates from the real OtaFlux serving
from the real registry."""

from __future__ import annotations

import asyncio
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
    # a noisy, sometimes corrupting UART: the SDS011 driver has to resync and drop bad frames
    device = devices(device_id, sds011_noise=0.3, sds011_corruption=0.1)
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
    truth = device.environment.at(time.monotonic())
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
            lambda: sum(stopped_at < t < restarted_at for t in times()) >= 3,
            90,
            "measurements taken during the outage",
        )
        # none lost: every conversion the BME280 made (one per measurement) arrives; at most the one being
        # published right now may still be in flight
        await device.wait_for(
            lambda: len(set(times())) >= device.bme280.measurements - 1,
            90,
            "every measurement taken to arrive",
        )
        stamps = times()
        # oldest first; QoS 1 may legitimately deliver the message in flight when the broker died twice
        # (its PUBACK was lost), which sorted order allows only right next to itself
        assert stamps == sorted(stamps), "buffered measurements must arrive oldest first"
        assert len(stamps) - len(set(stamps)) <= 1, "at most the one in-flight message is redelivered"
    finally:
        subscriber.stop()


async def test_a_failed_sensor_is_reported_and_the_others_keep_publishing(
    devices, mosquitto, mqtt_subscriber, local_ca
) -> None:
    device_id = "dev-15"
    collector = mqtt_subscriber(mosquitto, f"sensors/{device_id}/#")
    issued = local_ca.issue(device_id)
    features = ("bme280", "sds011", "tls", "mtls", "influx")
    config = device_config(
        device_id, broker=(mosquitto.host, mosquitto.port), version="1.0.0", features=features, interval=1
    )
    device = devices(device_id)
    device.bme280.failed = True  # the BME280 does not answer on the bus (unplugged, broken)
    provision(device, config, build_bundle("1.0.0", features), ca=issued.ca, cert=issued.cert, key=issued.key)
    device.start()
    measurements = f"sensors/{device_id}/measurements"
    await wait_for(collector, lambda ms: sum(m.topic == measurements for m in ms) >= 2, 60, device)
    for point in _points(collector, "measurements", device_id):
        assert set(point.fields) == {"pm25", "pm10"}, point.fields
    status = [json.loads(m.payload) for m in collector.messages if m.topic == f"sensors/{device_id}/status"]
    assert status[-1]["online"] is True
    assert status[-1]["sensors"]["sds011"] == "ok"
    assert status[-1]["sensors"]["bme280"] != "ok"


async def test_wifi_loss_is_survived_and_the_device_reconnects(
    devices, mosquitto, mqtt_subscriber, local_ca
) -> None:
    device_id = "dev-16"
    collector = mqtt_subscriber(mosquitto, f"sensors/{device_id}/#")
    issued = local_ca.issue(device_id)
    features = ("bme280", "tls", "mtls", "influx")
    config = device_config(
        device_id, broker=(mosquitto.host, mosquitto.port), version="1.0.0", features=features, interval=1
    )
    device = devices(device_id)
    provision(device, config, build_bundle("1.0.0", features), ca=issued.ca, cert=issued.cert, key=issued.key)
    device.start()
    measurements = f"sensors/{device_id}/measurements"
    await wait_for(collector, lambda ms: sum(m.topic == measurements for m in ms) >= 2, 60, device)
    device.set_wifi(False)
    lost_at = time.time_ns()
    await asyncio.sleep(4)
    device.set_wifi(True)
    back_at = time.time_ns()
    parser = MessageParser()

    def stamps() -> list[int]:
        return [
            p.time_ns
            for m in list(collector.messages)
            if m.topic == measurements
            for p in parser.parse(m.topic, m.payload, time.time_ns())
        ]

    await device.wait_for(
        lambda: any(t > back_at + 10**9 for t in stamps()), 90, "measurements after Wi-Fi is back"
    )
    assert sum(lost_at < t < back_at for t in stamps()) >= 2, (
        "measurements taken offline were buffered and sent"
    )
    assert len(device.boots) == 1, "losing Wi-Fi must not reset the board"
