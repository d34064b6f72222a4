"""The WeatherSensor reconciler: a device's children (certificate, broker credentials) and its status.

Pure: everything observed (certificate state, device reports, last seen, the desired version) comes in as
a `SensorObservation`, and the broker password comes from the caller, which generates it once with
`secrets` and keeps it in the Secret it applies. Output is deterministic for the same input.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from ..durations import format_duration, parse_duration
from ..messages import ConfigReport
from ..models.common import Condition, ConditionStatus, set_condition
from ..models.fleet import CertificatePolicy, SensorFleet
from ..models.sensor import (
    DeviceConfigStatus,
    FirmwareStatus,
    LastReading,
    WeatherSensor,
    WeatherSensorStatus,
)
from ..rollout import FAILED_STATES, DeviceObservation
from .certificates import device_certificate
from .common import Event, Object, labels, metadata, owner_references, sorted_children
from .devicetwin import config_applied

DEFAULT_NO_DATA_AFTER = "10m"


class SensorObservation(BaseModel):
    """What the caller observed about one sensor. `None` means "not known yet"."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    now: datetime
    certificate_ready: bool | None = Field(default=None, description="the Certificate's Ready condition")
    certificate_message: str = ""
    device: DeviceObservation | None = Field(default=None, description="retained status + last OTA event")
    last_seen: datetime | None = None
    last_reading: LastReading | None = None
    desired_version: str | None = Field(
        default=None, description="what the rollout offers this device: FleetPlan.version_for(deviceId)"
    )
    config: ConfigReport | None = Field(
        default=None, description="the desired-configuration generation the device reported applying"
    )


class SensorResult(BaseModel):
    """Children to apply (sorted), the status to write, and the events to emit on the WeatherSensor."""

    children: list[Object]
    status: WeatherSensorStatus
    events: list[Event] = Field(default_factory=list)


def credentials_secret_name(device_id: str) -> str:
    """The per-device NanoMQ credentials Secret (type kubernetes.io/basic-auth: username, password)."""
    return f"{device_id}-mqtt-credentials"


def sensors_summary(sensor: WeatherSensor) -> str:
    """The sensor types in spec order, comma-separated: `kubectl get ws` shows this (SENSORS), because the
    apiserver prints only the first match of a printer column's JSONPath (`.spec.sensors[*].type`)."""
    return ",".join(s.type for s in sensor.spec.sensors)


def no_data_after(sensor: WeatherSensor, fleet: SensorFleet | None) -> float:
    """Seconds of silence after which a sensor counts as offline: its own setting, else its fleet's."""
    text = sensor.spec.alerting.no_data_after or (
        fleet.spec.alerting.no_data_after if fleet else DEFAULT_NO_DATA_AFTER
    )
    return parse_duration(text)


def is_online(
    sensor: WeatherSensor,
    fleet: SensorFleet | None,
    last_seen: datetime | None,
    device: DeviceObservation | None,
    now: datetime,
) -> bool:
    """Seen within noDataAfter and not marked offline by its last will."""
    if last_seen is None or (device is not None and not device.online):
        return False
    return (now - last_seen).total_seconds() <= no_data_after(sensor, fleet)


def sensor_children(
    sensor: WeatherSensor, fleet: SensorFleet | None, broker_password: str | None = None
) -> list[Object]:
    """The device's Certificate and, for NanoMQ with a password given, its credentials Secret. A sensor that
    no fleet selects gets nothing: certificate policy and broker come from the fleet."""
    if fleet is None:
        return []
    device_id = sensor.spec.device_id
    ns = sensor.metadata.namespace
    child_labels = labels(fleet.metadata.name, device_id)
    owners = owner_references(sensor.api_version, sensor.kind, sensor.metadata)
    policy: CertificatePolicy = fleet.spec.certificates
    children = [device_certificate(device_id, ns, policy, child_labels, owners)]
    if fleet.spec.broker.kind == "nanomq" and broker_password is not None:
        children.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": metadata(credentials_secret_name(device_id), ns, child_labels, owners),
                "type": "kubernetes.io/basic-auth",
                "stringData": {"username": device_id, "password": broker_password},
            }
        )
    return sorted_children(children)


def _conditions(
    sensor: WeatherSensor,
    fleet: SensorFleet | None,
    obs: SensorObservation,
    last_seen: datetime | None,
    broker_password: str | None,
) -> tuple[list[Condition], bool]:
    gen = sensor.metadata.generation or None
    conds = list(sensor.status.conditions)

    def put(type_: str, status: ConditionStatus, reason: str, message: str) -> None:
        nonlocal conds
        conds = set_condition(conds, type_, status, reason, message, obs.now, gen)

    device_id = sensor.spec.device_id
    if fleet is None:
        put("CertificateReady", "False", "NotInFleet", "no SensorFleet in this namespace selects this sensor")
        put("BrokerAccess", "False", "NotInFleet", "no SensorFleet in this namespace selects this sensor")
    else:
        if obs.certificate_ready is None:
            put(
                "CertificateReady",
                "Unknown",
                "Pending",
                obs.certificate_message or "waiting for cert-manager",
            )
        elif obs.certificate_ready:
            put("CertificateReady", "True", "Issued", obs.certificate_message or f"CN={device_id} issued")
        else:
            put("CertificateReady", "False", "NotIssued", obs.certificate_message or "certificate not ready")
        topics = f"publish {fleet.spec.broker.topic_prefix}/{device_id}/#, subscribe ota/{device_id}/#"
        if fleet.spec.broker.kind == "nanomq" and broker_password is None:
            put("BrokerAccess", "False", "CredentialsPending", "no broker password generated yet")
        else:
            put(
                "BrokerAccess",
                "True",
                "Granted",
                f"{fleet.spec.broker.kind} ACL of fleet {fleet.metadata.name}: {topics}",
            )

    window = format_duration(no_data_after(sensor, fleet))
    online = is_online(sensor, fleet, last_seen, obs.device, obs.now)
    if last_seen is None:
        put("Online", "False", "NeverSeen", "no message from the device yet")
    elif obs.device is not None and not obs.device.online:
        put("Online", "False", "Disconnected", "the device's last will reported it offline")
    elif online:
        put("Online", "True", "Reporting", f"data within the last {window}")
    else:
        put("Online", "False", "NoData", f"no data for more than {window}")

    if fleet is None:
        put("ConfigApplied", "Unknown", "NotInFleet", "no desired configuration without a fleet")
    else:
        put("ConfigApplied", *config_applied(sensor.metadata.generation or 0, obs.config))

    reported = obs.device.reported_version if obs.device else None
    state = obs.device.ota_state if obs.device else None
    if obs.desired_version is None:
        put("FirmwareCurrent", "Unknown", "NoDesiredVersion", "no release selects a version for this device")
    elif state in FAILED_STATES and obs.device and obs.device.ota_version == obs.desired_version:
        put(
            "FirmwareCurrent",
            "False",
            "UpdateFailed",
            f"{state} updating to {obs.desired_version}: {obs.device.ota_reason or 'no reason given'}",
        )
    elif reported == obs.desired_version:
        put("FirmwareCurrent", "True", "UpToDate", f"running {reported}")
    else:
        put(
            "FirmwareCurrent",
            "False",
            "UpdatePending",
            f"running {reported or 'unknown'}, desired {obs.desired_version}",
        )

    by_type = {c.type: c.status for c in conds}
    ready = by_type.get("CertificateReady") == "True" and by_type.get("BrokerAccess") == "True"
    if ready:
        put("Ready", "True", "Provisioned", "certificate issued and broker access granted")
    else:
        missing = [t for t in ("CertificateReady", "BrokerAccess") if by_type.get(t) != "True"]
        put("Ready", "False", "NotProvisioned", f"waiting for {', '.join(missing)}")
    return conds, online


def _events(before: list[Condition], after: list[Condition], device_id: str) -> list[Event]:
    old = {c.type: c for c in before}
    events: list[Event] = []
    for cond in after:
        prev = old.get(cond.type)
        if prev is not None and prev.status == cond.status:
            continue
        if cond.type == "CertificateReady" and cond.status == "True":
            events.append(Event(type="Normal", reason="CertificateReady", message=cond.message))
        elif cond.type == "Online" and cond.status == "True":
            events.append(Event(type="Normal", reason="SensorOnline", message=f"{device_id}: {cond.message}"))
        elif cond.type == "Online" and cond.status == "False" and prev is not None:
            events.append(
                Event(type="Warning", reason="SensorOffline", message=f"{device_id}: {cond.message}")
            )
        elif cond.type == "FirmwareCurrent" and cond.reason == "UpdateFailed":
            events.append(Event(type="Warning", reason="UpdateFailed", message=cond.message))
        elif cond.type == "ConfigApplied" and cond.reason == "Rejected":
            events.append(
                Event(type="Warning", reason="ConfigRejected", message=f"{device_id}: {cond.message}")
            )
    return events


def reconcile_sensor(
    sensor: WeatherSensor,
    fleet: SensorFleet | None,
    observation: SensorObservation,
    broker_password: str | None = None,
) -> SensorResult:
    """Desired children and new status of one WeatherSensor.

    - `fleet`: the SensorFleet selecting this sensor (see `reconcilers.fleet.fleet_for_sensor`), or None.
    - `observation`: what the caller saw (certificate, device reports, last seen, desired version, `now`).
    - `broker_password`: for NanoMQ fleets, the device's password (generate once with
      `secrets.token_urlsafe(24)` and keep it); None leaves the credentials Secret out (e.g. in `render`,
      whose output goes to git) and BrokerAccess False/CredentialsPending.

    Children: a cert-manager Certificate (CN = deviceId, client auth + digital signature, key algorithm,
    duration, renewBefore and issuerRef from the fleet, Secret `<deviceId>-device-tls`) and, for NanoMQ, a
    basic-auth Secret `<deviceId>-mqtt-credentials` (username = deviceId). Status: conditions Ready,
    CertificateReady, BrokerAccess, Online (lastSeen vs noDataAfter), ConfigApplied (the device twin's
    generation the device reported, see `devicetwin`), FirmwareCurrent; firmware
    reported/desired/state/lastError; config desired/applied generation and lastError; lastSeen,
    lastReading, fleet, online, observedGeneration.
    """
    last_seen = observation.last_seen or sensor.status.last_seen
    conds, online = _conditions(sensor, fleet, observation, last_seen, broker_password)
    device = observation.device
    failed = device is not None and device.ota_state in FAILED_STATES
    status = WeatherSensorStatus(
        observedGeneration=sensor.metadata.generation or None,
        conditions=conds,
        fleet=fleet.metadata.name if fleet else None,
        online=online,
        lastSeen=last_seen,
        lastReading=observation.last_reading or sensor.status.last_reading,
        sensorsSummary=sensors_summary(sensor),
        firmware=FirmwareStatus(
            reported=device.reported_version if device else sensor.status.firmware.reported,
            desired=observation.desired_version,
            state=device.ota_state if device else sensor.status.firmware.state,
            progress=device.ota_percent if device else sensor.status.firmware.progress,
            lastError=(device.ota_reason or device.ota_state) if failed and device else None,
        ),
    )
    if fleet is not None:
        report = observation.config
        generation = sensor.metadata.generation or 0
        status.config = DeviceConfigStatus(
            desiredGeneration=generation,
            appliedGeneration=report.generation if report else None,
            lastError=report.error if report and report.rejected == generation else None,
        )
    return SensorResult(
        children=sensor_children(sensor, fleet, broker_password),
        status=status,
        events=_events(sensor.status.conditions, conds, sensor.spec.device_id),
    )
