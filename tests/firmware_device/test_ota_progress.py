"""OTA progress that is kept: the board stamps every OTA event to the millisecond (under the real
MicroPython interpreter), ingest keeps two events of one second as two rows, and the download percent
reaches the WeatherSensor status in steps of 25 %."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from mpy_harness import run_micropython

from weatherfleet.ingest.parsing import MessageParser
from weatherfleet.models import WeatherSensor
from weatherfleet.observe import FleetView
from weatherfleet.reconcilers.sensor import SensorObservation, reconcile_sensor

EVENTS_SCRIPT = """
import json, report
out = [
    report.event('downloading', '1.2.0', 25, None, time_ms=1767225600123),
    report.event('downloading', '1.2.0', 50, None, time_ms=1767225600987),
    report.event('rolled_back', '1.2.0', None, 'boot "loop"', time_ms=1767225601005),
    report.event('checking', time=1767225600),
]
print('RESULT', json.dumps(out))
"""


def test_the_board_stamps_ota_events_to_the_millisecond_and_ingest_keeps_them_apart():
    texts = run_micropython(EVENTS_SCRIPT).check().json()
    docs = [json.loads(t) for t in texts]
    assert [d["time"] for d in docs] == [1767225600.123, 1767225600.987, 1767225601.005, 1767225600]
    assert docs[2]["reason"] == 'boot "loop"' and docs[0]["percent"] == 25
    parser = MessageParser()
    received = 1767225602 * 1_000_000_000
    points = [parser.parse("sensors/dev-01/ota", t.encode(), received) for t in texts[:2]]
    times = [p[0].time_ns for p in points]
    assert times == [1767225600123000000, 1767225600987000000]  # one second, two rows


def test_download_percent_reaches_the_sensor_status_in_steps_of_25():
    view = FleetView()
    now = datetime(2026, 1, 1, tzinfo=UTC)
    sensor = WeatherSensor.model_validate(
        {
            "metadata": {"name": "dev-01", "namespace": "weatherfleet"},
            "spec": {"deviceId": "dev-01", "location": "garden", "sensors": [{"type": "bme280"}]},
        }
    )
    changes, shown = [], []
    for percent in (0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100):
        body = {"event": "downloading", "version": "1.2.0", "percent": percent}
        changes.append(view.handle("sensors/dev-01/ota", json.dumps(body).encode(), now))
        device = view.get("dev-01").observation
        status = reconcile_sensor(sensor, None, SensorObservation(now=now, device=device)).status
        shown.append(status.firmware.progress)
    assert shown == [0, 0, 0, 25, 25, 50, 50, 50, 75, 75, 100]
    assert sum(changes) == 5  # a status write at most every 25 %, not per event
    view.handle("sensors/dev-01/ota", b'{"event": "installed", "version": "1.2.0"}', now)
    assert view.get("dev-01").observation.ota_percent == 100
    view.handle("sensors/dev-01/ota", b'{"event": "checking"}', now)
    assert view.get("dev-01").observation.ota_percent is None
