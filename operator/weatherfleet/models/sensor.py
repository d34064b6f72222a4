"""WeatherSensor: one ESP32 board, its sensors, and how it gets firmware."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, StringConstraints, model_validator

from ..semver import SEMVER_PATTERN
from .common import Condition, DeviceId, Duration, Model, ObjectMeta

SensorType = Literal["bme280", "scd30", "sds011"]
SENSOR_TYPES: tuple[str, ...] = ("bme280", "scd30", "sds011")
I2C_SENSORS = {"bme280": 0x76, "scd30": 0x61}
UART_SENSORS = {"sds011": 2}
Gpio = Annotated[int, Field(ge=0, le=39)]
SemVer = Annotated[str, StringConstraints(pattern=SEMVER_PATTERN)]


class I2CBus(Model):
    bus: Annotated[int, Field(ge=0, le=1)] = 0
    sda: Gpio = 21
    scl: Gpio = 22
    # 7-bit addresses outside 0x08..0x77 are reserved by the I2C specification.
    address: Annotated[int, Field(ge=0x08, le=0x77)] | None = None


class UartPort(Model):
    # UART0 carries the REPL on an ESP32 DevKit; sensors get UART1 or UART2.
    id: Annotated[int, Field(ge=1, le=2)] = 2
    tx: Gpio = 17
    rx: Gpio = 16


class SensorSpec(Model):
    type: SensorType
    i2c: I2CBus | None = None
    uart: UartPort | None = None

    @model_validator(mode="after")
    def _bus_matches_type(self) -> SensorSpec:
        if self.type in I2C_SENSORS:
            if self.uart is not None:
                raise ValueError(f"{self.type} is an I2C sensor: set i2c, not uart")
            if self.i2c is None:
                self.i2c = I2CBus()
            if self.i2c.address is None:
                self.i2c.address = I2C_SENSORS[self.type]
        else:
            if self.i2c is not None:
                raise ValueError(f"{self.type} is a UART sensor: set uart, not i2c")
            if self.uart is None:
                self.uart = UartPort(id=UART_SENSORS[self.type])
        return self


class Features(Model):
    payload: Literal["influx", "json"] = "influx"
    tls: bool = True
    mtls: bool = True
    ota: bool = True

    @model_validator(mode="after")
    def _mtls_needs_tls(self) -> Features:
        if self.mtls and not self.tls:
            raise ValueError("mtls requires tls: a client certificate is presented inside a TLS session")
        return self


class FirmwarePolicy(Model):
    channel: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{0,30}$")] = "stable"
    pinned_version: SemVer | None = Field(default=None, alias="pinnedVersion")
    check_interval_seconds: Annotated[int, Field(ge=60, le=86400)] = Field(
        default=3600, alias="checkIntervalSeconds"
    )
    jitter_seconds: Annotated[int, Field(ge=0, le=3600)] = Field(default=300, alias="jitterSeconds")

    @model_validator(mode="after")
    def _jitter_within_interval(self) -> FirmwarePolicy:
        if self.jitter_seconds > self.check_interval_seconds:
            raise ValueError(
                f"jitterSeconds ({self.jitter_seconds}) must not exceed "
                f"checkIntervalSeconds ({self.check_interval_seconds})"
            )
        return self


class SensorAlerting(Model):
    no_data_after: Duration | None = Field(default=None, alias="noDataAfter")


class WeatherSensorSpec(Model):
    device_id: DeviceId = Field(alias="deviceId")
    location: Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=r"^[^\x00-\x1f]+$")]
    board: Literal["esp32-devkit-v1", "esp32-devkitc", "esp32-s3-devkitc"] = "esp32-devkit-v1"
    sensors: Annotated[list[SensorSpec], Field(min_length=1, max_length=3)]
    features: Features = Field(default_factory=Features)
    measurement_interval_seconds: Annotated[int, Field(ge=5, le=86400)] = Field(
        default=60, alias="measurementIntervalSeconds"
    )
    firmware: FirmwarePolicy = Field(default_factory=FirmwarePolicy)
    alerting: SensorAlerting = Field(default_factory=SensorAlerting)

    @model_validator(mode="after")
    def _sensor_types_unique(self) -> WeatherSensorSpec:
        types = [s.type for s in self.sensors]
        duplicates = sorted({t for t in types if types.count(t) > 1})
        if duplicates:
            raise ValueError(f"sensor type listed more than once: {', '.join(duplicates)}")
        return self

    def firmware_features(self) -> list[str]:
        """The build features this board needs, in the vocabulary of `weatherfleet firmware build`."""
        features = sorted(s.type for s in self.sensors)
        features += [self.features.payload]
        features += [f for f in ("tls", "mtls", "ota") if getattr(self.features, f)]
        return features


class LastReading(Model):
    time: datetime
    values: dict[str, float] = Field(default_factory=dict)


class FirmwareStatus(Model):
    reported: str | None = None
    desired: str | None = None
    state: str | None = None
    last_error: str | None = Field(default=None, alias="lastError")


class WeatherSensorStatus(Model):
    observed_generation: int | None = Field(default=None, alias="observedGeneration")
    conditions: list[Condition] = Field(default_factory=list)
    fleet: str | None = None
    online: bool | None = None
    last_seen: datetime | None = Field(default=None, alias="lastSeen")
    last_reading: LastReading | None = Field(default=None, alias="lastReading")
    firmware: FirmwareStatus = Field(default_factory=FirmwareStatus)


class WeatherSensor(Model):
    api_version: Literal["weatherfleet.io/v1alpha1"] = Field(
        default="weatherfleet.io/v1alpha1", alias="apiVersion"
    )
    kind: Literal["WeatherSensor"] = "WeatherSensor"
    metadata: ObjectMeta
    spec: WeatherSensorSpec
    status: WeatherSensorStatus = Field(default_factory=WeatherSensorStatus)
