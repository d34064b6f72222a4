"""The device twin: what a board should run, from its WeatherSensor, as the operator publishes it on
`twin/<deviceId>/desired` (retained, QoS 1), and what the board reported back.

Pure: the document is a function of the sensor, its fleet and (NanoMQ) its broker login. It is the ONE
definition of the part of a board's configuration that the board acts on: `config.json` at provisioning
is built from the same function (`provisioning.deviceconfig.device_config`), so a freshly flashed board and a
reconfigured one run the same settings.

| key | from the WeatherSensor | the board |
|---|---|---|
| generation | metadata.generation | reports it back once applied (status `config.generation`) |
| measurementIntervalSeconds | spec.measurementIntervalSeconds | next measurement on the new interval |
| heartbeatSeconds | spec.heartbeatSeconds, else noDataAfter / 4 (5 s .. 5 min) | retained status this often |
| sensors | spec.sensors: type, bus/address/sda/scl or uart/tx/rx | drivers rebuilt |
| payload | spec.features.payload | encoder rebuilt |
| ota | spec.firmware: checkIntervalSeconds, jitterSeconds, channel | next OTA check |
| broker | NanoMQ login (username = deviceId, password) | next connection; the old one kept as fallback |
| certificates | the fleet's certificates.renewBefore, in seconds | asks for a renewal (CSR) that long before expiry |
"""

from __future__ import annotations

import json

from ..durations import parse_duration
from ..messages import ConfigReport
from ..models.fleet import SensorFleet
from ..models.sensor import WeatherSensor, WeatherSensorSpec

HEARTBEAT_MIN, HEARTBEAT_MAX = 5, 300


def sensor_wiring(spec: WeatherSensorSpec) -> list[dict]:
    """The sensors as the firmware's config names them (`sensors` of config.json)."""
    wiring = []
    for s in spec.sensors:
        if s.i2c is not None:
            wiring.append(
                {
                    "type": s.type,
                    "bus": s.i2c.bus,
                    "scl": s.i2c.scl,
                    "sda": s.i2c.sda,
                    "address": s.i2c.address,
                }
            )
        else:
            wiring.append({"type": s.type, "uart": s.uart.id, "tx": s.uart.tx, "rx": s.uart.rx})
    return wiring


def heartbeat_seconds(sensor: WeatherSensor, fleet: SensorFleet | None) -> int:
    """The sensor's own heartbeatSeconds, else a quarter of noDataAfter within 5 s .. 5 min: a healthy
    board is heard from at least four times before it would count as offline."""
    from .sensor import no_data_after  # sensor.py uses config_applied from here

    if sensor.spec.heartbeat_seconds is not None:
        return sensor.spec.heartbeat_seconds
    return int(max(HEARTBEAT_MIN, min(HEARTBEAT_MAX, no_data_after(sensor, fleet) // 4)))


def desired_config(
    sensor: WeatherSensor,
    fleet: SensorFleet | None,
    broker_login: tuple[str, str] | None = None,
) -> dict:
    """The desired configuration document of one board (see the table above)."""
    spec = sensor.spec
    doc: dict = {
        "generation": sensor.metadata.generation or 0,
        "measurementIntervalSeconds": spec.measurement_interval_seconds,
        "heartbeatSeconds": heartbeat_seconds(sensor, fleet),
        "sensors": sensor_wiring(spec),
        "payload": spec.features.payload,
        "ota": {
            "checkIntervalSeconds": spec.firmware.check_interval_seconds,
            "jitterSeconds": spec.firmware.jitter_seconds,
            "channel": spec.firmware.channel,
        },
    }
    if broker_login is not None:
        doc["broker"] = {"username": broker_login[0], "password": broker_login[1]}
    if fleet is not None:
        renew_before = int(parse_duration(fleet.spec.certificates.renew_before))
        doc["certificates"] = {"renewBeforeSeconds": max(1, renew_before)}
    return doc


def desired_text(doc: dict) -> str:
    """The document as published: canonical JSON, so equal configurations are equal bytes (the board
    compares the retained copy it gets after a reconnect with the one it applied). UTF-8, not `\\u`
    escapes: MicroPython's json turns an escaped surrogate pair (any emoji in a location) into invalid
    UTF-8 instead of one character (issue 14)."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def config_applied(desired_generation: int, report: ConfigReport | None) -> tuple[str, str, str]:
    """(status, reason, message) of the ConfigApplied condition."""
    if report is None:
        return "Unknown", "NotReported", "the device has not reported a configuration generation yet"
    if report.generation == desired_generation:
        return "True", "Applied", f"generation {desired_generation} applied"
    if report.rejected == desired_generation and report.error:
        return (
            "False",
            "Rejected",
            f"generation {desired_generation} refused: {report.error}; "
            f"the device keeps generation {report.generation}",
        )
    return (
        "False",
        "Pending",
        f"the device runs generation {report.generation}, desired {desired_generation}",
    )
