"""SensorFleet: a set of WeatherSensors with one broker, one CA, one dashboard and one rollout."""

from __future__ import annotations

import itertools
from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, model_validator

from ..durations import parse_duration
from .common import Condition, DnsName, Duration, Model, Resource, SecretKeyRef, label, matching

Name = Annotated[str, label(max_length=63)]


class LabelSelectorRequirement(Model):
    """metav1.LabelSelectorRequirement."""

    key: str = Field(description="the label key")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        description="how the label relates to values"
    )
    values: list[str] = Field(
        default_factory=list, description="for In and NotIn; empty for Exists, DoesNotExist"
    )


class LabelSelector(Model):
    """metav1.LabelSelector."""

    match_labels: dict[str, str] = Field(
        default_factory=dict,
        alias="matchLabels",
        description="labels a WeatherSensor must carry, all of them",
    )
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list, alias="matchExpressions", description="further requirements, all of them"
    )

    def matches(self, labels: dict[str, str]) -> bool:
        if any(labels.get(k) != v for k, v in self.match_labels.items()):
            return False
        for req in self.match_expressions:
            present = req.key in labels
            if req.operator == "In" and (not present or labels[req.key] not in req.values):
                return False
            if req.operator == "NotIn" and present and labels[req.key] in req.values:
                return False
            if req.operator == "Exists" and not present:
                return False
            if req.operator == "DoesNotExist" and present:
                return False
        return True


class BrokerSpec(Model):
    """The MQTT broker the fleet's boards use, and the files the operator writes for it."""

    kind: Literal["nanomq", "mosquitto"] = Field(
        default="nanomq",
        description="NanoMQ (ACL + password file) or Mosquitto (ACL by certificate identity)",
    )
    topic_prefix: Annotated[
        str, matching(r"^[a-z][a-z0-9_-]{0,30}$", "a topic prefix: a lowercase word like 'sensors'")
    ] = Field(
        default="sensors",
        alias="topicPrefix",
        description="first topic level: boards publish <topicPrefix>/<deviceId>/measurements, status, ota",
    )
    host: DnsName = Field(
        default="nanomq", description="the broker Service: its server certificate is issued for this name"
    )
    port: Annotated[int, Field(ge=1, le=65535)] = Field(
        default=8883, description="MQTT over TLS port boards dial"
    )
    acl_config_map: Name = Field(
        default="nanomq-acl",
        alias="aclConfigMap",
        description="ConfigMap the operator writes the broker's ACL into",
    )
    credentials_secret: Name = Field(
        default="nanomq-passwords",
        alias="credentialsSecret",
        description="Secret the operator writes NanoMQ's password file into (boards and services)",
    )
    deployment: Name | None = Field(
        default="nanomq", description="Broker Deployment to restart when the ACL changes"
    )
    manage_server_certificate: bool = Field(
        default=False,
        alias="manageServerCertificate",
        description="issue the broker's server Certificate from this fleet; leave false when the broker is "
        "deployed with its own (gitops/base/certificates), which it needs before any fleet exists",
    )


class IssuerRef(Model):
    """The cert-manager issuer that signs the fleet's certificates."""

    name: Name = Field(description="the issuer's name")
    kind: Literal["ClusterIssuer", "Issuer"] = Field(
        default="ClusterIssuer", description="ClusterIssuer or Issuer"
    )
    group: Literal["cert-manager.io"] = Field(default="cert-manager.io", description="always cert-manager.io")


class PrivateKeyPolicy(Model):
    """The key of each board's certificate."""

    algorithm: Literal["ECDSA", "RSA", "Ed25519"] = Field(
        default="ECDSA", description="ECDSA (light on an ESP32), RSA or Ed25519"
    )
    size: int = Field(default=256, description="ECDSA 256/384/521, RSA 2048/3072/4096, Ed25519 256")

    @model_validator(mode="after")
    def _size_fits_algorithm(self) -> PrivateKeyPolicy:
        allowed = {"ECDSA": {256, 384, 521}, "RSA": {2048, 3072, 4096}, "Ed25519": {256}}[self.algorithm]
        if self.size not in allowed:
            raise ValueError(
                f"size {self.size} is not valid for {self.algorithm}: use one of {sorted(allowed)}"
            )
        return self


class CertificatePolicy(Model):
    issuer_ref: IssuerRef = Field(
        default_factory=lambda: IssuerRef(name="weatherfleet-ca"), alias="issuerRef"
    )
    duration: Duration = Field(default="2160h", description="certificate lifetime, e.g. 2160h (90 days)")
    renew_before: Duration = Field(
        default="360h",
        alias="renewBefore",
        description="renew this long before expiry; shorter than duration",
    )
    private_key: PrivateKeyPolicy = Field(
        default_factory=PrivateKeyPolicy,
        alias="privateKey",
        description="the certificate key's algorithm and size",
    )

    @model_validator(mode="after")
    def _renew_before_duration(self) -> CertificatePolicy:
        if parse_duration(self.renew_before) >= parse_duration(self.duration):
            raise ValueError(
                f"renewBefore ({self.renew_before}) must be shorter than duration ({self.duration})"
            )
        return self


# One path segment: the dashboards sidecar makes the folder a subdirectory and Grafana names the folder
# after the directory's last part, while alert rules split a `/` into nested folders; `.` would hide it.
GRAFANA_FOLDER = r"^[^/\\.\x00-\x1f][^/\\\x00-\x1f]{0,99}$"
GrafanaFolder = Annotated[
    str,
    matching(
        GRAFANA_FOLDER, "a Grafana folder name: up to 100 characters, no '/' or '\\', not starting with '.'"
    ),
]


class GrafanaSpec(Model):
    """The fleet's dashboard and alert rules in Grafana."""

    folder: GrafanaFolder = Field(
        default="Weather",
        description="Grafana folder of the dashboard and the alert rules (one name, no '/')",
    )
    dashboard_title: str = Field(
        default="Weather fleet", alias="dashboardTitle", description="the dashboard's title"
    )
    datasource_uid: Annotated[
        str, matching(r"^[a-zA-Z0-9_-]{1,40}$", "a Grafana uid: up to 40 letters, digits, '-' and '_'")
    ] = Field(
        default="influxdb3",
        alias="datasourceUid",
        description="uid of the Grafana datasource for InfluxDB 3 (SQL) the dashboard and rules query",
    )


class TelegramSpec(Model):
    """Where alerts go on Telegram."""

    bot_token_secret_ref: SecretKeyRef = Field(
        alias="botTokenSecretRef",
        description="the Secret key holding the bot token; the operator makes it the fleet's Grafana contact "
        "point (never written into a ConfigMap)",
    )
    chat_id: Annotated[
        str,
        matching(
            r"^-?[0-9]{1,20}$|^@[A-Za-z][A-Za-z0-9_]{4,31}$",
            "a Telegram chat id: a number like '-1001234567890' or a channel like '@garden_alerts'",
        ),
    ] = Field(
        alias="chatId",
        description="the chat: a number like -1001234567890 or a channel like @garden_alerts",
    )


class FleetAlerting(Model):
    """ "No data" alerts for the fleet's boards."""

    no_data_after: Duration = Field(
        default="10m",
        alias="noDataAfter",
        description="silence after which a board is offline and its alert fires; a sensor may set its own",
    )
    telegram: TelegramSpec | None = Field(
        default=None,
        description="send alerts to Telegram; without it they follow Grafana's notification policy",
    )


class Wave(Model):
    percent: Annotated[float, Field(gt=0, le=100)] = Field(
        description="share of the fleet this wave opens to: exactly ceil(percent x members / 100) devices, "
        "at least one, the first ones in the rollout's order"
    )
    bake_time: Duration = Field(
        default="10m",
        alias="bakeTime",
        description="how long the wave runs (paused time not counted) before the next one may open",
    )


class FailureThreshold(Model):
    """Halt when this many devices of the opened share fail: an absolute count or a percentage."""

    count: Annotated[int, Field(ge=1)] | None = Field(default=None, description="failed devices that halt")
    percent: Annotated[float, Field(gt=0, le=100)] | None = Field(
        default=None, description="failed share of the opened devices that halts"
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> FailureThreshold:
        if (self.count is None) == (self.percent is None):
            raise ValueError("set exactly one of count or percent")
        return self

    def breached(self, failed: int, opened: int) -> bool:
        if self.count is not None:
            return failed >= self.count
        return opened > 0 and failed * 100.0 / opened >= self.percent


class RolloutSpec(Model):
    release: Name | None = Field(default=None, description="FirmwareRelease to roll out to the fleet")
    waves: Annotated[list[Wave], Field(min_length=1, max_length=10)] = Field(
        default_factory=lambda: [Wave(percent=10), Wave(percent=50), Wave(percent=100)],
        description="strictly increasing percentages, the last one 100",
    )
    failure_threshold: FailureThreshold = Field(
        default_factory=lambda: FailureThreshold(count=1),
        alias="failureThreshold",
        description="failures (failed or rolled back, offline after updating, timed out) that halt the "
        "rollout and close the candidate",
    )
    success_threshold: Annotated[float, Field(gt=0, le=100)] = Field(
        default=100,
        alias="successThreshold",
        description="percentage of the wave's online devices (failed ones aside) that must run the release "
        "before the next wave opens, or the last one completes",
    )
    update_timeout: Duration = Field(
        default="2h",
        alias="updateTimeout",
        description="an online device of the open share that does not run the release this long after its "
        "wave opened (paused time not counted) counts as failed, reason 'timed out'",
    )
    paused: bool = Field(
        default=False,
        description="hold the rollout where it is: no device is newly offered the release, every clock "
        "stops; false again continues where it stopped",
    )
    abort: bool = Field(
        default=False,
        description="stop the rollout of this release now: the candidate is offered to no device any more; "
        "devices that installed it keep it until a rollback or the next release. Clear it together with "
        "the next release (clearing it alone starts this release again from the first wave)",
    )
    rollback: bool = Field(
        default=False,
        description="take the whole fleet back to status.rollout.rollbackVersion (the stable release before "
        "this one) at once, without waves: every device is offered it, and devices that installed this "
        "release are authorised to go back. Clear it together with the next release",
    )
    announce: bool = Field(
        default=True,
        description="notify devices over MQTT when the plan opens a wave to them (or halts, or rolls back), "
        "instead of waiting for their next periodic check",
    )
    announce_window: Duration = Field(
        default="1m",
        alias="announceWindow",
        description="notifications of one change are spread evenly over this window so that OtaFlux and "
        "the broker are not stampeded",
    )

    @model_validator(mode="after")
    def _waves_increase_to_100(self) -> RolloutSpec:
        percents = [w.percent for w in self.waves]
        if any(b <= a for a, b in itertools.pairwise(percents)):
            shown = ", ".join(f"{p:g}" for p in percents)
            raise ValueError(f"wave percentages must be strictly increasing, got {shown}")
        if percents[-1] != 100:
            raise ValueError(f"the last wave must open the rollout to 100 percent, got {percents[-1]:g}")
        return self


class SensorFleetSpec(Model):
    selector: LabelSelector = Field(
        description="the WeatherSensors of this namespace that belong to the fleet"
    )
    broker: BrokerSpec = Field(
        default_factory=BrokerSpec, description="the MQTT broker and its ACL and passwords"
    )
    certificates: CertificatePolicy = Field(
        default_factory=CertificatePolicy, description="how the boards' client certificates are issued"
    )
    grafana: GrafanaSpec = Field(
        default_factory=GrafanaSpec, description="dashboard and alert rule placement"
    )
    alerting: FleetAlerting = Field(default_factory=FleetAlerting, description='"no data" alerts')
    rollout: RolloutSpec = Field(default_factory=RolloutSpec, description="which release, in which waves")


class SensorCounts(Model):
    """The fleet's sensors by state."""

    total: int = Field(default=0, description="sensors the selector picks")
    online: int = Field(default=0, description="heard from within noDataAfter")
    stale: int = Field(default=0, description="heard from once, silent for longer than noDataAfter")


class FailedDevice(Model):
    """A device that counted as failed in the rollout."""

    device_id: str = Field(alias="deviceId", description="the device")
    reason: str = Field(
        description="failed, rolled back (with the device's reason), offline after updating, ..."
    )


RolloutPhase = Literal["Idle", "Progressing", "Paused", "Halted", "Aborted", "RolledBack", "Complete"]


class RolloutStatus(Model):
    release: str | None = Field(default=None, description="the FirmwareRelease this rollout is about")
    version: str | None = Field(default=None, description="its version: the candidate until complete")
    stable_version: str | None = Field(
        default=None,
        alias="stableVersion",
        description="what devices outside the open share are offered: the release the fleet was on before "
        "(or the version all its devices reported); after completion the release itself. Unknown: they "
        "are offered nothing and keep what they run",
    )
    rollback_version: str | None = Field(
        default=None, alias="rollbackVersion", description="where spec.rollout.rollback takes the fleet"
    )
    phase: RolloutPhase = Field(default="Idle", description="where the rollout stands")
    wave: int = Field(default=0, description="index of the open wave (0 is the first)")
    percent: float = Field(default=0, description="the open wave's percentage")
    threshold: str | None = Field(
        default=None,
        description="rank of the last device inside the open share (a device is inside when "
        "sha256(rolloutId NUL deviceId) is at most this); never below a device that started on the release",
    )
    eligible: int = Field(default=0, description="members the release can go to (not pinned, not excluded)")
    opened: int = Field(default=0, description="devices inside the open share")
    wave_started_at: datetime | None = Field(
        default=None, alias="waveStartedAt", description="when the open wave opened"
    )
    paused_at: datetime | None = Field(
        default=None, alias="pausedAt", description="since when the clocks stand still (paused or aborted)"
    )
    paused_seconds: float = Field(
        default=0, alias="pausedSeconds", description="time the open wave spent paused, not counted"
    )
    updated: int = Field(default=0, description="devices of the share running the release")
    failed: int = Field(default=0, description="devices of the share that failed (see failedDevices)")
    pending: int = Field(default=0, description="online devices of the share not running it yet")
    offline: int = Field(default=0, description="devices of the share not seen recently (not counted)")
    reason: str = Field(default="", description="why the rollout is where it is, for a person")
    failed_devices: list[FailedDevice] = Field(
        default_factory=list, alias="failedDevices", description="the failed devices and why"
    )


class SensorFleetStatus(Model):
    """What the operator observed and decided for the fleet."""

    observed_generation: int | None = Field(
        default=None, alias="observedGeneration", description="the spec generation this status describes"
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready, BrokerConfigured, ReleaseAvailable, RolloutHealthy, AlertingConfigured",
    )
    sensors: SensorCounts = Field(default_factory=SensorCounts, description="the fleet's sensors by state")
    rollout: RolloutStatus = Field(default_factory=RolloutStatus, description="the rollout's progress")


class SensorFleet(Resource):
    kind: Literal["SensorFleet"] = "SensorFleet"
    spec: SensorFleetSpec = Field(
        description="the fleet: its sensors, broker, certificates, Grafana, rollout"
    )
    status: SensorFleetStatus = Field(
        default_factory=SensorFleetStatus, description="written by the operator: counts, rollout, conditions"
    )
