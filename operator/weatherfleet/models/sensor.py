"""WeatherSensor: one ESP32 board, its sensors, and how it gets firmware."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, model_validator

from ..semver import SEMVER_PATTERN
from .common import Condition, DeviceId, Duration, Model, ObjectMeta

SensorType = Literal["bme280", "scd30", "sds011"]
SENSOR_TYPES: tuple[str, ...] = ("bme280", "scd30", "sds011")
I2C_SENSORS = {"bme280": 0x76, "scd30": 0x61}
UART_SENSORS = {"sds011": 2}
Gpio = Annotated[int, Field(ge=0, le=39)]
SemVer = Annotated[str, StringConstraints(pattern=SEMVER_PATTERN)]


# GPIO 6..11 drive the SPI flash; 34..39 are input-only, so they cannot drive SDA, SCL or TX.
FLASH_PINS = range(6, 12)
INPUT_ONLY_PINS = range(34, 40)


def _check_pins(driven: dict[str, int], read: dict[str, int]) -> None:
    pins = {**driven, **read}
    for name, pin in pins.items():
        if pin in FLASH_PINS:
            raise ValueError(f"{name}: GPIO {pin} is wired to the SPI flash on an ESP32 and cannot be used")
    for name, pin in driven.items():
        if pin in INPUT_ONLY_PINS:
            raise ValueError(f"{name}: GPIO {pin} is input-only on an ESP32 and cannot drive this line")
    names = list(pins)
    if len(set(pins.values())) != len(pins):
        raise ValueError(f"{' and '.join(names)} must be different GPIOs, got {pins[names[0]]} for both")


class I2CBus(Model):
    bus: Annotated[int, Field(ge=0, le=1)] = 0
    sda: Gpio = 21
    scl: Gpio = 22
    # 7-bit addresses outside 0x08..0x77 are reserved by the I2C specification.
    address: Annotated[int, Field(ge=0x08, le=0x77)] | None = None

    @model_validator(mode="after")
    def _pins_usable(self) -> I2CBus:
        _check_pins({"sda": self.sda, "scl": self.scl}, {})
        return self


class UartPort(Model):
    # UART0 carries the REPL on an ESP32 DevKit; sensors get UART1 or UART2.
    id: Annotated[int, Field(ge=1, le=2)] = 2
    tx: Gpio = 17
    rx: Gpio = 16

    @model_validator(mode="after")
    def _pins_usable(self) -> UartPort:
        _check_pins({"tx": self.tx}, {"rx": self.rx})
        return self


class SensorSpec(Model):
    type: SensorType
    i2c: I2CBus | None = None
    uart: UartPort | None = None

    @model_validator(mode="before")
    @classmethod
    def _bus_matches_type(cls, data: Any) -> Any:
        """Reject the wrong bus for the type and fill in the default bus (and I2C address) before the
        fields are validated, so defaults are validated like user input and nothing is assigned twice."""
        if not isinstance(data, dict) or data.get("type") not in (*I2C_SENSORS, *UART_SENSORS):
            return data
        kind = data["type"]
        data = dict(data)
        if kind in I2C_SENSORS:
            if data.get("uart") is not None:
                raise ValueError(f"{kind} is an I2C sensor: set i2c, not uart")
            bus = data.get("i2c")
            if bus is None:
                data["i2c"] = {"address": I2C_SENSORS[kind]}
            elif isinstance(bus, dict) and bus.get("address") is None:
                data["i2c"] = {**bus, "address": I2C_SENSORS[kind]}
        else:
            if data.get("i2c") is not None:
                raise ValueError(f"{kind} is a UART sensor: set uart, not i2c")
            if data.get("uart") is None:
                data["uart"] = {"id": UART_SENSORS[kind]}
        return data


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
    measurement_interval_seconds: Annotated[int, Field(ge=1, le=86400)] = Field(
        default=60, alias="measurementIntervalSeconds"
    )
    heartbeat_seconds: Annotated[int, Field(ge=5, le=3600)] | None = Field(
        default=None,
        alias="heartbeatSeconds",
        description="how often the board republishes its retained status; default: a quarter of "
        "noDataAfter, 5 s to 5 min",
    )
    firmware: FirmwarePolicy = Field(default_factory=FirmwarePolicy)
    alerting: SensorAlerting = Field(default_factory=SensorAlerting)

    @model_validator(mode="after")
    def _sensor_types_unique(self) -> WeatherSensorSpec:
        types = [s.type for s in self.sensors]
        duplicates = sorted({t for t in types if types.count(t) > 1})
        if duplicates:
            raise ValueError(f"sensor type listed more than once: {', '.join(duplicates)}")
        seen: dict[tuple[int, int], str] = {}
        for s in self.sensors:
            if s.i2c is None:
                continue
            key = (s.i2c.bus, s.i2c.address or 0)
            if key in seen:
                raise ValueError(
                    f"{seen[key]} and {s.type} both use I2C address {key[1]:#04x} on bus {key[0]}: "
                    "give one of them another address or bus"
                )
            seen[key] = s.type
        uarts = [s.uart.id for s in self.sensors if s.uart is not None]
        if len(set(uarts)) != len(uarts):
            raise ValueError("two sensors share one UART")
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


class DeviceConfigStatus(Model):
    """The desired configuration (device twin) as the board reported it in its status."""

    desired_generation: int | None = Field(default=None, alias="desiredGeneration")
    applied_generation: int | None = Field(default=None, alias="appliedGeneration")
    last_error: str | None = Field(default=None, alias="lastError")


class WeatherSensorStatus(Model):
    observed_generation: int | None = Field(default=None, alias="observedGeneration")
    conditions: list[Condition] = Field(default_factory=list)
    fleet: str | None = None
    online: bool | None = None
    last_seen: datetime | None = Field(default=None, alias="lastSeen")
    last_reading: LastReading | None = Field(default=None, alias="lastReading")
    firmware: FirmwareStatus = Field(default_factory=FirmwareStatus)
    config: DeviceConfigStatus | None = None


class WeatherSensor(Model):
    api_version: Literal["weatherfleet.io/v1alpha1"] = Field(
        default="weatherfleet.io/v1alpha1", alias="apiVersion"
    )
    kind: Literal["WeatherSensor"] = "WeatherSensor"
    metadata: ObjectMeta
    spec: WeatherSensorSpec
    status: WeatherSensorStatus = Field(default_factory=WeatherSensorStatus)
