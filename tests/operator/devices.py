"""Devices as the operator sees them over MQTT: each with its own client certificate (identity = device
id), a retained status with a last will, and OTA events when the rollout plan offers it a new version
(as OtaFlux would answer it). A device never retries a version it rolled back."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

from weatherfleet.messages import ota_events_topic, status_topic
from weatherfleet.mqtt import MqttSettings, make_client
from weatherfleet.rollout import FleetPlan


class FakeDevice:
    def __init__(self, device_id: str, settings: MqttSettings, firmware: str) -> None:
        self.device_id, self.firmware = device_id, firmware
        self.rejected: set[str] = set()
        self.client = make_client(settings, device_id)
        self.client.will_set(status_topic(device_id), json.dumps({"online": False}), qos=1, retain=True)
        self._connected = threading.Event()
        self.client.on_connect = lambda *_a: self._connected.set()
        self.client.connect(settings.host, settings.port)
        self.client.loop_start()
        assert self._connected.wait(20), f"{device_id} could not connect"
        self.publish_status()

    def publish_status(self) -> None:
        body = {"online": True, "firmware": self.firmware, "uptime": 10, "heap": 90000, "boot": "power_on"}
        self.client.publish(
            status_topic(self.device_id), json.dumps(body), qos=1, retain=True
        ).wait_for_publish(10)

    def event(self, name: str, version: str, **extra) -> None:
        body = {"event": name, "version": version, **extra}
        self.client.publish(ota_events_topic(self.device_id), json.dumps(body), qos=1).wait_for_publish(10)

    def update(self, version: str, healthy: bool) -> None:
        for step in ("checking", "downloading", "verifying", "installed", "booted"):
            self.event(step, version)
        if healthy:
            self.event("confirmed", version)
            self.firmware = version
        else:
            self.event("rolled_back", version, reason="health check failed after boot")
            self.rejected.add(version)
        self.publish_status()

    def stop(self) -> None:
        self.client.disconnect()  # a clean disconnect: no last will
        self.client.loop_stop()


class FakeFleet:
    """Devices that follow a rollout plan; `bad` versions fail their health check and roll back."""

    def __init__(
        self,
        devices: list[str],
        settings_for: Callable[[str], MqttSettings],
        firmware: str,
        plan: Callable[[], FleetPlan | None],
        bad: set[str] | None = None,
    ) -> None:
        self.devices = {d: FakeDevice(d, settings_for(d), firmware) for d in devices}
        self.plan, self.bad = plan, bad or set()
        self.frozen: set[str] = set()  # devices that do not follow the plan for now (slow, stuck)
        self.updates: list[tuple[str, str, bool]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="fake-fleet", daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        while not self._stop.wait(0.2):
            try:
                plan = self.plan()
            except Exception:
                continue
            if plan is None:
                continue
            for device_id, device in list(self.devices.items()):
                if device_id in self.frozen:
                    continue
                wanted = plan.version_for(device_id) if device_id in plan.devices else None
                if wanted and wanted != device.firmware and wanted not in device.rejected:
                    healthy = wanted not in self.bad
                    device.update(wanted, healthy)
                    self.updates.append((device_id, wanted, healthy))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for device in self.devices.values():
            device.stop()
