"""A device's `config.json` (schema: docs/firmware-device.md) from its WeatherSensor, and the file set a
board needs: config, CA, client certificate and key, taken from what cert-manager issued for it (and, for
NanoMQ, its broker login). Shared by `weatherfleet provision` (a real board), the local mode and devicesim
(emulated boards), so all of them boot from exactly the same files."""

from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict

from ..models import SensorFleet, WeatherSensor
from ..reconcilers.devicetwin import desired_config

CA_PATH = "certs/ca.pem"
CERT_PATH = "certs/device.pem"
KEY_PATH = "certs/device.key"


class Endpoints(BaseModel):
    broker_host: str
    broker_port: int
    ota_host: str
    ota_port: int
    ota_tls: bool = False


class Timing(BaseModel):
    """Overrides for a time-compressed run (the demo); None keeps the WeatherSensor's own values."""

    measurement_interval: int | None = None
    check_interval: int | None = None
    jitter: int | None = None
    keepalive: int = 60


def device_config(
    sensor: WeatherSensor,
    fleet: SensorFleet | None,
    endpoints: Endpoints,
    signing_keys: list[str],
    timing: Timing | None = None,
    wifi: dict[str, str] | None = None,
    firmware_version: str | None = None,
    login: tuple[str, str] | None = None,
    rollout_keys: list[str] | None = None,
) -> dict:
    """`login`: the broker username and password (NanoMQ fleets; Mosquitto takes the certificate's CN).
    `rollout_keys`: the operator's rollout public keys (raw Ed25519, hex), the only keys whose signed
    downgrade authorisation lets the board install an older release (docs/rollouts.md)."""
    timing = timing or Timing()
    spec = sensor.spec
    # what the board acts on comes from the one definition the operator also publishes as the device
    # twin (reconcilers.devicetwin); generation 0: "as provisioned", any published generation replaces it
    desired = desired_config(sensor, fleet)
    config: dict = {
        "device": spec.device_id,
        "location": spec.location,
        "broker": {
            "host": endpoints.broker_host,
            "port": endpoints.broker_port,
            "tls": spec.features.tls,
            "keepalive": timing.keepalive,
            "username": login[0] if login else None,
            "password": login[1] if login else None,
        },
        "ota": {
            "host": endpoints.ota_host,
            "port": endpoints.ota_port,
            "tls": endpoints.ota_tls,
            "checkIntervalSeconds": timing.check_interval or desired["ota"]["checkIntervalSeconds"],
            "jitterSeconds": desired["ota"]["jitterSeconds"] if timing.jitter is None else timing.jitter,
            "channel": desired["ota"]["channel"],
            "kind": "bundle",
        },
        "measurementIntervalSeconds": timing.measurement_interval or desired["measurementIntervalSeconds"],
        "heartbeatSeconds": desired["heartbeatSeconds"],
        "features": spec.firmware_features(),
        "sensors": desired["sensors"],
        "tls": {"ca": CA_PATH, "cert": CERT_PATH, "key": KEY_PATH},
        "signingKeys": list(signing_keys),
        "topicPrefix": fleet.spec.broker.topic_prefix if fleet else "sensors",
        "otaTopic": "ota",
        "bufferSize": 32,
        "watchdogSeconds": 120,
    }
    if wifi:
        config["wifi"] = wifi
    if firmware_version:
        config["firmwareVersion"] = firmware_version  # what the device reports until its first OTA
    if rollout_keys:
        config["rolloutKeys"] = list(rollout_keys)
    return config


class Credentials(BaseModel):
    """What a board needs to authenticate: the fleet CA, its client certificate and key (PEM, from the
    `kubernetes.io/tls` Secret cert-manager wrote), and for NanoMQ its broker login."""

    model_config = ConfigDict(frozen=True)

    ca: bytes
    cert: bytes
    key: bytes
    username: str | None = None
    password: str | None = None

    @property
    def login(self) -> tuple[str, str] | None:
        return (self.username, self.password) if self.username and self.password else None


def device_files(config: dict, credentials: Credentials) -> dict[str, bytes]:
    """Board path -> content: config, CA, and the device's client certificate and key (CN = deviceId)."""
    return {
        # UTF-8, not \\u escapes: MicroPython's json turns an escaped surrogate pair (an emoji in a
        # location) into invalid UTF-8 instead of one character (issue 14)
        "config.json": (json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode(),
        CA_PATH: credentials.ca,
        CERT_PATH: credentials.cert,
        KEY_PATH: credentials.key,
    }
