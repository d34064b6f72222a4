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
