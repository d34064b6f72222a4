"""The fleet as seen over MQTT: device status and OTA events, kept as DeviceObservations. Free of any
Kubernetes import so the local mode reuses it."""

from .fleetview import FleetView, Sighting
from .subscriber import MqttObserver

__all__ = ["FleetView", "MqttObserver", "Sighting"]
