"""The device twin and the heartbeat, end to end: the real kopf operator (configured as gitops ships it:
no time-series store) against the API double, a real Mosquitto with the operator's generated ACL, and an
emulated ESP32 running the real firmware.

- A healthy board stays Online past noDataAfter and its lastReading fills, from its heartbeat alone.
- Editing measurementIntervalSeconds from 30 to 3 makes the board publish every 3 s within a minute,
  without a reflash or a restart, and the status shows the applied generation (ConfigApplied).
- A desired configuration the board cannot honour is refused with the reason; it keeps measuring.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time

import pytest
from helpers import wait_for

from devicesim import Device
from devicesim.provision import build_bundle, device_config, provision
from weatherfleet import identities

pytestmark = pytest.mark.slow
DEVICE_ID = "dev-07"
FEATURES = ("bme280", "tls", "mtls", "influx")  # no OTA, no SCD30 driver in this build


def _condition(obj: dict | None, type_: str) -> dict:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond["type"] == type_:
            return cond
    return {}


BOARD: list = []


async def _until(predicate, timeout: float, what: str):
    try:
        return await asyncio.to_thread(wait_for, predicate, timeout, what)
    except AssertionError as error:
        console = BOARD[0].console_text()[-3000:] if BOARD else ""
        raise AssertionError(f"{error}\n--- board console ---\n{console}") from None


def _stamps(collector) -> list[float]:
    """Receive times (monotonic) of the device's measurements, as the subscriber saw them."""
    return [t for t, m in collector.timed if m.topic == f"sensors/{DEVICE_ID}/measurements"]


async def test_heartbeat_keeps_the_board_online_and_the_twin_reconfigures_it(
    cluster, namespace, start_operator, fleet_broker, mqtt_subscriber, local_ca, tmp_path
) -> None:
    ns = namespace
    broker, env, _settings_for = fleet_broker
    collector = mqtt_subscriber(broker, f"sensors/{DEVICE_ID}/#", identities.INGEST)
    collector.timed = []
    original = collector._on_message

    def timed(client, userdata, message):
        collector.timed.append((time.monotonic(), message))
        original(client, userdata, message)

    collector.client.on_message = timed
    start_operator(env)  # no WEATHERFLEET_INFLUXDB_*: as gitops/base/operator configures it
    await asyncio.to_thread(
        cluster.create,
        "SensorFleet",
        ns,
        "garden",
        {
            "selector": {"matchLabels": {"fleet": "garden"}},
            "broker": {"kind": "mosquitto"},
            "alerting": {"noDataAfter": "20s"},
        },
    )
    spec = {
        "deviceId": DEVICE_ID,
        "location": "shed",
        "sensors": [{"type": "bme280"}],
        "measurementIntervalSeconds": 30,
    }
    spec["features"] = {"payload": "influx", "ota": False}
    await asyncio.to_thread(cluster.create, "WeatherSensor", ns, "shed", spec, {"fleet": "garden"})
    await _until(lambda: cluster.certificates(ns), 30, "the device's Certificate")
    await asyncio.to_thread(cluster.mark_certificates_ready, ns)

    # the board as provisioned: interval 30 s, no heartbeat setting of its own (the firmware default)
    issued = local_ca.issue(DEVICE_ID)
    config = device_config(
        DEVICE_ID, broker=(broker.host, broker.port), version="1.0.0", features=FEATURES, interval=30
    )
    config.pop("heartbeatSeconds", None)
    device = Device(DEVICE_ID, tmp_path / "board")
    BOARD[:] = [device]
    provision(device, config, build_bundle("1.0.0", FEATURES), ca=issued.ca, cert=issued.cert, key=issued.key)
    device.start()
    try:
        # the twin reaches the board: generation 1 applied, heartbeat every 5 s (noDataAfter 20s / 4)
        def applied(generation: int):
            ws = cluster.get("WeatherSensor", ns, "shed")
            cond = _condition(ws, "ConfigApplied")
            config_status = (ws.get("status") or {}).get("config") or {}
            return (
                cond.get("status") == "True" and config_status.get("appliedGeneration") == generation and ws
            )

        ws = await _until(lambda: applied(1), 60, "ConfigApplied generation 1")
        assert _condition(ws, "ConfigApplied")["reason"] == "Applied"

        # Online stays True well past noDataAfter (20 s), with no time-series store: the heartbeat
        started = time.monotonic()
        while time.monotonic() - started < 30:
            ws = await asyncio.to_thread(cluster.get, "WeatherSensor", ns, "shed")
            online = _condition(ws, "Online")
            if time.monotonic() - started > 3:
                assert online.get("status") == "True", (online, device.console_text()[-2000:])
            await asyncio.sleep(1)
        reading = ws["status"].get("lastReading")
        assert reading and {"temperature", "humidity", "pressure"} <= set(reading["values"]), ws["status"]
        statuses = [
            json.loads(m.payload) for m in collector.messages if m.topic.endswith("/status") and m.payload
        ]
        assert len(statuses) >= 5 and statuses[-1]["config"] == {"generation": 1}

        # the must-show: 30 s -> 3 s, applied within a minute, no restart of anything
        boots = len(device.boots)
        edited = time.monotonic()
        await asyncio.to_thread(
            cluster.patch, "WeatherSensor", ns, "shed", {"spec": {"measurementIntervalSeconds": 3}}
        )
        ws = await _until(lambda: applied(2), 60, "ConfigApplied generation 2")

        def every_three_seconds():
            recent = [t for t in _stamps(collector) if t > edited]
            gaps = [b - a for a, b in itertools.pairwise(recent)]
            return len(gaps) >= 4 and all(2.0 <= g <= 4.5 for g in gaps[-4:]) and recent

        recent = await _until(every_three_seconds, 60, "measurements every 3 s")
        assert recent[-1] - edited < 60
        assert len(device.boots) == boots, "the board was reset"

        # a configuration this build cannot run: refused with the reason, the board keeps measuring
        await asyncio.to_thread(
            cluster.patch,
            "WeatherSensor",
            ns,
            "shed",
            {"spec": {"sensors": [{"type": "bme280"}, {"type": "scd30"}]}},
        )

        def refused():
            ws = cluster.get("WeatherSensor", ns, "shed")
            cond = _condition(ws, "ConfigApplied")
            return cond.get("reason") == "Rejected" and ws

        ws = await _until(refused, 60, "ConfigApplied Rejected")
        cond = _condition(ws, "ConfigApplied")
        assert cond["status"] == "False" and "driver scd30 not in this build" in cond["message"], cond
        assert ws["status"]["config"]["appliedGeneration"] == 2
        assert "scd30" in ws["status"]["config"]["lastError"]
        before = len(_stamps(collector))
        await _until(lambda: len(_stamps(collector)) >= before + 2, 20, "measurements go on")
    finally:
        await device.stop()
