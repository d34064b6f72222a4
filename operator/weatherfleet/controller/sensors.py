"""WeatherSensor: gather what is observed of one sensor (its Certificate, the MQTT view, the latest
reading, the rollout plan), run the pure `reconcile_sensor`, and write its children and status.

The status write budget lives here: lastSeen moves at a coarse granularity, everything else that changes
is written at once (see docs/operator.md, "Status write budget")."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ..models import WeatherSensor
from ..models.sensor import LastReading, WeatherSensorStatus
from ..reconcilers.devicetwin import desired_config, desired_text
from ..reconcilers.fleet import fleet_for_sensor
from ..reconcilers.sensor import SensorObservation, no_data_after, reconcile_sensor
from .devicetwin import renew_credentials

if TYPE_CHECKING:
    from .controller import Controller

Object = dict[str, Any]


def certificate_ready(cert: Object | None) -> tuple[bool | None, str]:
    """(Ready condition of a cert-manager Certificate as True/False/None for unknown, its message)."""
    if not cert:
        return None, ""
    for cond in (cert.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            ready = {"True": True, "False": False}.get(cond.get("status"))
            return ready, cond.get("message") or ""
    return None, ""


def created_at(body: Object, default: datetime) -> datetime:
    text = (body.get("metadata") or {}).get("creationTimestamp")
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else default
    except ValueError:
        return default


def mqtt_reading(sighting: Any) -> LastReading | None:
    """The last reading a device put in its heartbeat status (used where no time-series store is set)."""
    reading = dict((sighting.status.reading if sighting and sighting.status else None) or {})
    stamp = reading.pop("time", None)
    if stamp is None:
        return None
    try:
        return LastReading(time=datetime.fromtimestamp(stamp / 1000, UTC), values=reading)
    except (ValueError, OverflowError, OSError):
        return None


def reconcile(ctl: Controller, namespace: str, name: str) -> float | None:
    """One WeatherSensor; seconds until it should be looked at again, or None."""
    body = ctl.cache.get("WeatherSensor", namespace, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        return None  # children go with it (owner references)
    sensor: WeatherSensor = ctl.parse(body)
    device_id = sensor.spec.device_id
    ctl.devices[device_id] = ("WeatherSensor", namespace, name)
    fleet = fleet_for_sensor(sensor, ctl.cached_fleets(namespace))
    password = None
    if fleet is not None and fleet.spec.broker.kind == "nanomq":
        password = ctl.password(namespace, device_id)
    ready, message = certificate_ready(ctl.cache.get("Certificate", namespace, device_id))
    now = ctl.now()
    sighting = ctl.view.get(device_id)
    reading = ctl.readings.get(device_id)
    device = sighting.observation if sighting else None
    heard = [t for t in (sighting.last_seen if sighting else None, reading.time if reading else None) if t]
    last_seen = max(heard) if heard else None
    last_reading = LastReading(time=reading.time, values=reading.values) if reading else None
    if last_reading is None:
        # No store (the shipped operator has none): the reading from the heartbeat, moved in the status
        # as often as lastSeen is (see coarse_heartbeat).
        last_reading = mqtt_reading(sighting)
    plan = ctl.plan_for(namespace, fleet.metadata.name) if fleet else None
    observation = SensorObservation(
        now=now,
        certificate_ready=ready,
        certificate_message=message,
        device=device,
        last_seen=last_seen,
        desired_version=plan.desired_for(device_id, device.reported_version if device else None)
        if plan and plan.is_member(device_id)
        else None,
        last_reading=last_reading,
        config=sighting.status.config if sighting and sighting.status else None,
    )
    result = reconcile_sensor(sensor, fleet, observation, password)
    twin = getattr(ctl, "twin", None)  # a devicetwin.TwinPublisher when the operator has MQTT
    if fleet is not None and twin is not None:
        # the device twin: what the board should run, retained on twin/<id>/desired
        login = (device_id, password) if password else None
        twin.desired(device_id, desired_text(desired_config(sensor, fleet, login)))
        renew_credentials(ctl, body, sensor, fleet, now)
    for child in result.children:
        ctl.apply(child)
    if fleet is not None:
        # Never because no fleet matched: that may be a fleet being fixed, and a device's password
        # must not be lost to a typo in a selector.
        ctl.prune(body, result.children)
    first = not body.get("status")
    if first and fleet is not None and ready is None:
        # A brand-new sensor whose certificate is not issued yet: its first status would be
        # outdated within seconds. Give cert-manager a moment from when the Certificate appeared
        # (one status write instead of two); after that, report Pending as usual.
        cert = ctl.cache.get("Certificate", namespace, device_id)
        age = (now - created_at(cert, now)).total_seconds() if cert else 0.0
        if age < ctl.settings.status_settle_seconds:
            return ctl.settings.status_settle_seconds - age
    status = coarse_heartbeat(sensor.status, result.status, ctl.settings.status_refresh_seconds)
    ctl.write_status(body, status.model_dump(by_alias=True, mode="json", exclude_none=True))
    # On the first status, a Normal event repeats what the conditions already say; warnings always go.
    ctl.emit(body, [e for e in result.events if not first or e.type == "Warning"])
    seen = result.status.last_seen  # the exact one, not the coarse one in the status
    if result.status.online and seen is not None:
        # Look again when the silence would turn the sensor offline.
        deadline = seen + timedelta(seconds=no_data_after(sensor, fleet))
        return max(1.0, (deadline - now).total_seconds() + 1.0)
    return None


def coarse_heartbeat(
    old: WeatherSensorStatus, new: WeatherSensorStatus, refresh_seconds: float
) -> WeatherSensorStatus:
    """The status to write, with lastSeen and lastReading (the heartbeat: they move whenever a device
    speaks) kept at their old values unless

    - lastSeen moved by `refresh_seconds` or more (so at most 3600 / refresh_seconds heartbeat writes per
      sensor and hour, like kubelet's nodeStatusReportFrequency), or
    - anything else in the status changed (that write goes out anyway; it carries the fresh heartbeat), or
    - the status has none yet.

    Online and its condition come from the exact lastSeen (the reconciler saw it), so a sensor going
    silent or coming back is written at once; only the timestamps shown are coarse."""
    if old.last_seen is None or (old.last_reading is None and new.last_reading is not None):
        return new
    held = new.model_copy(update={"last_seen": old.last_seen, "last_reading": old.last_reading})
    if held != old:
        return new  # a real change: written now, with the fresh heartbeat
    if new.last_seen is not None and (new.last_seen - old.last_seen).total_seconds() >= refresh_seconds:
        return new
    return held
