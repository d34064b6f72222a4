"""WeatherSensor: one ESP32 board, its sensors, and how it gets firmware."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from ..semver import SEMVER_PATTERN
from .common import Channel, Condition, DeviceId, Duration, Model, Resource, matching

SensorType = Literal["bme280", "scd30", "sds011"]
SENSOR_TYPES: tuple[str, ...] = ("bme280", "scd30", "sds011")
I2C_SENSORS = {"bme280": 0x76, "scd30": 0x61}
UART_SENSORS = {"sds011": 2}
Gpio = Annotated[int, Field(ge=0, le=39)]
SemVer = Annotated[str, matching(SEMVER_PATTERN, "a semantic version like '1.2.3' or '1.3.0-rc.1'")]


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
    """Where an I2C sensor is wired."""

    bus: Annotated[int, Field(ge=0, le=1)] = Field(
        default=0, description="I2C controller of the ESP32 (0 or 1)"
    )
    sda: Gpio = Field(
        default=21, description="GPIO of the data line (SDA); not 6-11 (flash) or 34-39 (input only)"
    )
    scl: Gpio = Field(
        default=22, description="GPIO of the clock line (SCL); not 6-11 (flash) or 34-39 (input only)"
    )
    # 7-bit addresses outside 0x08..0x77 are reserved by the I2C specification.
    address: Annotated[int, Field(ge=0x08, le=0x77)] | None = Field(
        default=None,
        description="7-bit I2C address; default the sensor's usual one (bme280 0x76, scd30 0x61). Two sensors "
        "on one bus need different addresses",
    )

    @model_validator(mode="after")
    def _pins_usable(self) -> I2CBus:
        _check_pins({"sda": self.sda, "scl": self.scl}, {})
        return self


class UartPort(Model):
    """Where a UART sensor is wired."""

    # UART0 carries the REPL on an ESP32 DevKit; sensors get UART1 or UART2.
    id: Annotated[int, Field(ge=1, le=2)] = Field(
        default=2, description="UART of the ESP32: 1 or 2 (UART0 carries the REPL)"
    )
    tx: Gpio = Field(default=17, description="GPIO the board transmits on (to the sensor's RX)")
    rx: Gpio = Field(default=16, description="GPIO the board receives on (from the sensor's TX)")

    @model_validator(mode="after")
    def _pins_usable(self) -> UartPort:
        _check_pins({"tx": self.tx}, {"rx": self.rx})
        return self


class SensorSpec(Model):
    """One sensor on the board. Each type at most once."""

    type: SensorType = Field(
        description="bme280 (temperature, humidity, pressure; I2C), scd30 (CO2; I2C) or sds011 (PM2.5, PM10; UART)"
    )
    i2c: I2CBus | None = Field(
        default=None, description="wiring of an I2C sensor (default bus 0, SDA 21, SCL 22)"
    )
    uart: UartPort | None = Field(
        default=None, description="wiring of a UART sensor (default UART2, TX 17, RX 16)"
    )

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
    """What the firmware built for this board includes."""

    payload: Literal["influx", "json"] = Field(
        default="influx", description="measurement format on MQTT: InfluxDB line protocol or JSON"
    )
    tls: bool = Field(default=True, description="MQTT over TLS, the broker checked against the fleet's CA")
    mtls: bool = Field(default=True, description="a client certificate as well (needs tls)")
    ota: bool = Field(
        default=True, description="over-the-air updates from OtaFlux; false keeps the board out of rollouts"
    )

    @model_validator(mode="after")
    def _mtls_needs_tls(self) -> Features:
        if self.mtls and not self.tls:
            raise ValueError("mtls requires tls: a client certificate is presented inside a TLS session")
        return self


class FirmwarePolicy(Model):
    """Which firmware the board gets and how often it asks."""

    channel: Channel = Field(
        default="stable",
        description="release channel: only releases of this channel are rolled out to the board",
    )
    pinned_version: SemVer | None = Field(
        default=None,
        alias="pinnedVersion",
        description="keep the board on exactly this version, whatever the fleet's rollout offers",
    )
    check_interval_seconds: Annotated[int, Field(ge=60, le=86400)] = Field(
        default=3600,
        alias="checkIntervalSeconds",
        description="how often the board asks OtaFlux for a version",
    )
    jitter_seconds: Annotated[int, Field(ge=0, le=3600)] = Field(
        default=300,
        alias="jitterSeconds",
        description="random delay added to each check so a fleet does not ask at once; at most the interval",
    )

    @model_validator(mode="after")
    def _jitter_within_interval(self) -> FirmwarePolicy:
        if self.jitter_seconds > self.check_interval_seconds:
            raise ValueError(
                f"jitterSeconds ({self.jitter_seconds}) must not exceed "
                f"checkIntervalSeconds ({self.check_interval_seconds})"
            )
        return self


class SensorAlerting(Model):
    """When the board counts as silent."""

    no_data_after: Duration | None = Field(
        default=None,
        alias="noDataAfter",
        description="silence after which the board is offline and a Grafana alert fires, e.g. 15m; default the "
        "fleet's",
    )


class WeatherSensorSpec(Model):
    device_id: DeviceId = Field(
        alias="deviceId",
        description="the board's identity: MQTT client id, certificate common name and OTA device id; a DNS-1123 "
        "label, immutable",
    )
    location: Annotated[
        str, matching(r"^[^\x00-\x1f]+$", "text without control characters", min_length=1, max_length=63)
    ] = Field(description="where the board hangs (free text): a tag of every measurement, a dashboard series")
    board: Literal["esp32-devkit-v1", "esp32-devkitc", "esp32-s3-devkitc"] = Field(
        default="esp32-devkit-v1", description="the ESP32 board, for firmware builds"
    )
    sensors: Annotated[list[SensorSpec], Field(min_length=1, max_length=3)] = Field(
        description="the sensors on the board (1 to 3, each type once, no shared pins or I2C addresses)"
    )
    features: Features = Field(default_factory=Features, description="what the board's firmware includes")
    measurement_interval_seconds: Annotated[int, Field(ge=1, le=86400)] = Field(
        default=60, alias="measurementIntervalSeconds", description="seconds between two measurements"
    )
    heartbeat_seconds: Annotated[int, Field(ge=5, le=3600)] | None = Field(
        default=None,
        alias="heartbeatSeconds",
        description="how often the board republishes its retained status; default: a quarter of "
        "noDataAfter, 5 s to 5 min",
    )
    firmware: FirmwarePolicy = Field(
        default_factory=FirmwarePolicy, description="firmware channel, pin and update checks"
    )
    alerting: SensorAlerting = Field(default_factory=SensorAlerting, description="this board's silence limit")

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
    """The newest measurement the time-series store holds for the board."""

    time: datetime = Field(description="when it was measured")
    values: dict[str, float] = Field(
        default_factory=dict,
        description="quantity -> value (temperature in °C, humidity in %, pressure in hPa, "
        "co2 in ppm, pm25 and pm10 in µg/m³)",
    )


class FirmwareStatus(Model):
    """The board's firmware as it reports it, and what the rollout offers it."""

    reported: str | None = Field(default=None, description="version the board runs (its retained status)")
    desired: str | None = Field(default=None, description="version the fleet's rollout plan offers the board")
    state: str | None = Field(
        default=None,
        description="its last OTA event: checking, downloading, installed, confirmed, failed, ...",
    )
    progress: int | None = Field(
        default=None, description="download progress of the update under way: 0, 25, 50, 75 or 100 (percent)"
    )
    last_error: str | None = Field(
        default=None, alias="lastError", description="why the last update failed or was rolled back"
    )


class DeviceConfigStatus(Model):
    """The desired configuration (device twin) as the board reported it in its status."""

    desired_generation: int | None = Field(
        default=None,
        alias="desiredGeneration",
        description="generation of the configuration sent to the board",
    )
    applied_generation: int | None = Field(
        default=None, alias="appliedGeneration", description="generation the board reports it runs"
    )
    last_error: str | None = Field(
        default=None,
        alias="lastError",
        description="why the board refused a configuration (it kept the last good one)",
    )


class WeatherSensorStatus(Model):
    """What the operator observed about the board."""

    observed_generation: int | None = Field(
        default=None, alias="observedGeneration", description="the spec generation this status describes"
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready, CertificateReady, BrokerAccess, Online, FirmwareCurrent (and ConfigApplied)",
    )
    fleet: str | None = Field(default=None, description="the SensorFleet that selects this sensor")
    online: bool | None = Field(
        default=None, description="heard from within noDataAfter, and not gone offline"
    )
    last_seen: datetime | None = Field(
        default=None, alias="lastSeen", description="when the board was last heard from (any message)"
    )
    last_reading: LastReading | None = Field(
        default=None, alias="lastReading", description="its newest measurement"
    )
    sensors_summary: str | None = Field(
        default=None,
        alias="sensorsSummary",
        description="the sensor types of the spec, comma-separated: the SENSORS column of kubectl get (a "
        "printer column shows only the first match of a list path)",
    )
    firmware: FirmwareStatus = Field(
        default_factory=FirmwareStatus, description="reported and desired firmware"
    )
    config: DeviceConfigStatus | None = Field(
        default=None, description="the desired configuration (device twin): sent and applied generations"
    )


class WeatherSensor(Resource):
    kind: Literal["WeatherSensor"] = "WeatherSensor"
    spec: WeatherSensorSpec = Field(
        description="the board: identity, location, sensors, features, firmware policy"
    )
    status: WeatherSensorStatus = Field(
        default_factory=WeatherSensorStatus,
        description="written by the operator: conditions, last seen, firmware",
    )
