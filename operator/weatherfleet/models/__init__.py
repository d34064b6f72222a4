"""The three custom resources of group weatherfleet.io/v1alpha1, as pydantic models."""

from .common import Condition, ObjectMeta, SecretKeyRef, set_condition
from .fleet import FailureThreshold, RolloutSpec, RolloutStatus, SensorFleet, SensorFleetSpec, Wave
from .release import FirmwareRelease, FirmwareReleaseSpec
from .sensor import SENSOR_TYPES, WeatherSensor, WeatherSensorSpec

KINDS = {"WeatherSensor": WeatherSensor, "SensorFleet": SensorFleet, "FirmwareRelease": FirmwareRelease}

__all__ = [
    "KINDS",
    "SENSOR_TYPES",
    "Condition",
    "FailureThreshold",
    "FirmwareRelease",
    "FirmwareReleaseSpec",
    "ObjectMeta",
    "RolloutSpec",
    "RolloutStatus",
    "SecretKeyRef",
    "SensorFleet",
    "SensorFleetSpec",
    "Wave",
    "WeatherSensor",
    "WeatherSensorSpec",
    "set_condition",
]
