"""The MQTT contract between devices and the backend: topics and payload shapes.

| topic                          | who          | payload                                                  |
|--------------------------------|--------------|----------------------------------------------------------|
| sensors/<id>/measurements      | device ->    | line protocol `weather,device=..,location=..,firmware=.. temperature=.. <ns>` or JSON |
| sensors/<id>/status            | device ->    | DeviceStatus, retained; the last will is {"online": false} |
| sensors/<id>/ota               | device ->    | OtaEvent                                                 |
| ota/<id>                       | OtaFlux ->   | {"version", "size"}, retained, QoS 1 (original OtaFlux)  |
| twin/<id>/desired              | operator ->  | the desired configuration (reconcilers.devicetwin), retained, QoS 1 |

The status is also the heartbeat: the device republishes it every `heartbeatSeconds`, with the
generation of the desired configuration it applied (`config`) and its last reading (`reading`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MEASUREMENT = "weather"
# field -> (unit, physical lower bound, upper bound) of what the supported sensors can report
FIELDS: dict[str, tuple[str, float, float]] = {
    "temperature": ("degC", -40.0, 85.0),
    "humidity": ("percent", 0.0, 100.0),
    "pressure": ("hPa", 300.0, 1100.0),
    "co2": ("ppm", 0.0, 40000.0),
    "pm25": ("ug/m3", 0.0, 999.9),
    "pm10": ("ug/m3", 0.0, 999.9),
}
SENSOR_FIELDS = {
    "bme280": ("temperature", "humidity", "pressure"),
    "scd30": ("co2",),
    "sds011": ("pm25", "pm10"),
}

OtaEventName = Literal[
    "checking", "downloading", "verifying", "installed", "booted", "confirmed", "rolled_back", "failed"
]


def status_topic(device_id: str, prefix: str = "sensors") -> str:
    return f"{prefix}/{device_id}/status"


def ota_events_topic(device_id: str, prefix: str = "sensors") -> str:
    return f"{prefix}/{device_id}/ota"


def notify_topic(device_id: str, base: str = "ota") -> str:
    """Where OtaFlux announces a device's update (`base` is OtaFlux's MQTT_TOPIC)."""
    return f"{base}/{device_id}"


TWIN_BASE = "twin"


def desired_topic(device_id: str) -> str:
    return f"{TWIN_BASE}/{device_id}/desired"


def split_topic(topic: str) -> tuple[str, str] | None:
    """(device id, kind) of a `<prefix>/<device>/<kind>` topic, or None for anything else."""
    parts = topic.split("/")
    return (parts[1], parts[2]) if len(parts) == 3 and parts[1] and parts[2] else None


class Payload(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class DeviceStatus(Payload):
    """Retained on sensors/<id>/status. Only `online` is in the last will."""

    online: bool
    firmware: str | None = None
    uptime: int | None = Field(default=None, description="seconds since boot")
    heap: int | None = Field(default=None, description="free heap bytes")
    rssi: int | None = None
    boot: str | None = Field(default=None, description="power_on, ota, rollback, watchdog, ...")
    slot: str | None = None
    sensors: dict[str, str] = Field(default_factory=dict, description="sensor type -> 'ok' or the error")
    config: ConfigReport | None = None
    reading: dict[str, float] | None = Field(
        default=None, description="the last measurement: time (epoch ms) and field -> value"
    )


class ConfigReport(Payload):
    """`config` in a status: the desired generation applied, and the one refused with why."""

    generation: int = Field(default=0, ge=0)
    rejected: int | None = Field(default=None, ge=0)
    error: str | None = Field(default=None, max_length=300)


class OtaEvent(Payload):
    event: OtaEventName
    version: str | None = None
    percent: int | None = None
    reason: str | None = None
    time: float | None = Field(
        default=None,
        description="device clock, seconds since the Unix epoch with a millisecond fraction (two progress "
        "events of one second stay two events)",
    )


class OtaNotification(Payload):
    """What the original OtaFlux publishes when a new version appears (otaflux.notifier sends it)."""

    version: str
    size: int
