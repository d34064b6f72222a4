"""Operator settings: WEATHERFLEET_* environment variables (the Deployment sets them), read when the
operator starts (`OperatorSettings.from_env()`, see weatherfleet.settings)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from ..mqtt import MqttSettings
from ..settings import ServiceSettings

ENV_PREFIX = "WEATHERFLEET_"


class OperatorSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX)

    namespace: str = Field(default="weatherfleet", description="where the rollout plan ConfigMap lives")
    resync_seconds: float = Field(default=300.0, gt=0, description="periodic full reconcile, for drift")
    rollout_seconds: float = Field(default=15.0, gt=0, description="how often rollouts are re-evaluated")
    status_refresh_seconds: float = Field(
        default=360.0,
        ge=0,
        description="lastSeen and lastReading move in a sensor's status at most this often when nothing "
        "else changed: 3600/this heartbeat writes per sensor and hour, 1 more in any one clock hour "
        "(10 and 11 by default; docs/operator.md)",
    )
    fleet_debounce_seconds: float = Field(
        default=1.0, ge=0, description="sensor changes within this window cost one fleet reconcile"
    )
    status_settle_seconds: float = Field(
        default=10.0,
        ge=0,
        description="a new sensor's first status waits this long for its certificate (saves a write)",
    )
    leader_settle_seconds: float = Field(
        default=5.0, ge=0, description="after peering settles, the leader starts reconciling"
    )
    workers: int = Field(default=8, ge=1, le=64)
    backoff_seconds: float = Field(default=1.0, gt=0, description="first retry delay of a failing resource")
    backoff_max_seconds: float = Field(default=300.0, gt=0)
    mqtt_host: str | None = None
    mqtt_port: int = 8883
    mqtt_ca: Path | None = None
    mqtt_cert: Path | None = None
    mqtt_key: Path | None = None
    mqtt_password: str | None = Field(
        default=None, repr=False, description="broker password (NanoMQ; Mosquitto's services port)"
    )
    mqtt_prefixes: str = Field(default="sensors", description="comma-separated topic prefixes")
    mqtt_settle_seconds: float = Field(default=1.0, ge=0)
    influxdb_host: str | None = Field(default=None, description="InfluxDB 3 URL, for lastReading")
    influxdb_database: str = "weather"
    influxdb_token: str | None = Field(default=None, repr=False)
    readings_sqlite: Path | None = Field(default=None, description="or ingest's SQLite store (local mode)")
    readings_seconds: float = Field(default=300.0, gt=0, description="lastReading refresh (one query)")
    registry_insecure_hosts: str = Field(default="", description="comma-separated hosts spoken to over HTTP")
    rollout_time_scale: float = Field(
        default=1.0,
        ge=1,
        description="divide the CRs' rollout durations (bake times, update timeout, announce window) by this: "
        "a compressed run of the real configuration for demos and end-to-end tests; 1 in production",
    )
    registry_mirrors: str = Field(
        default="",
        description="comma-separated HOST=URL: resolve releases naming HOST at URL instead (a registry mirror; "
        "`*=URL` for every host, as the local mode's one registry)",
    )
    registry_timeout_seconds: float = 30.0
    rollout_key: Path | None = Field(
        default=None,
        description="PEM Ed25519 private key that signs downgrade authorisations (a halted candidate going "
        "back to stable, a fleet rollback); devices trust its public half (config rolloutKeys). Unset: "
        "devices that took a candidate keep it",
    )
    release_resync_seconds: float = Field(default=600.0, gt=0, description="re-resolve releases this often")
    crl_ca_secret: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-.a-z0-9]*[a-z0-9])?$",
        description="<namespace>/<name> of the Secret the fleets' CA issuer reads (tls.crt, tls.key): with it, "
        "decommissioning revokes a device's certificates into the CRL ConfigMap weatherfleet-crl. Unset: no "
        "CRL (the ACL and the NanoMQ password file still shut the device out; docs/lifecycle.md)",
    )
    priority: int | None = Field(default=None, description="peering priority; unset: random per replica")
    metrics_port: int = Field(default=9090, ge=0, description="0 disables the Prometheus endpoint")

    def mqtt(self) -> MqttSettings | None:
        if not self.mqtt_host:
            return None
        if not (self.mqtt_ca and self.mqtt_cert and self.mqtt_key):
            raise ValueError("WEATHERFLEET_MQTT_HOST needs WEATHERFLEET_MQTT_CA, _CERT and _KEY (mutual TLS)")
        return MqttSettings(
            host=self.mqtt_host, port=self.mqtt_port, ca=self.mqtt_ca, cert=self.mqtt_cert, key=self.mqtt_key
        )

    @property
    def prefixes(self) -> tuple[str, ...]:
        return tuple(p.strip() for p in self.mqtt_prefixes.split(",") if p.strip())
