"""Publishing the device twin: each board's desired configuration (reconcilers.devicetwin) as a retained
QoS 1 message on `twin/<deviceId>/desired`, sent on the operator's own MQTT connection.

Level-triggered like the rest of the controller: every sensor reconcile hands over the document it
wants; only a document that differs from the last one sent goes out (a resync sends nothing). After a
(re)connection everything is sent again, since a broker restart without persistence loses retained
messages. The board ignores a document equal to the one it applied, so sending twice costs nothing.
Decommissioning clears the device's retained topics (an empty retained message deletes one)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from ..messages import TWIN_BASE, desired_topic, status_topic

log = logging.getLogger(__name__)
Publish = Callable[[str, bytes, bool], bool]


class TwinPublisher:
    def __init__(self, publish: Publish) -> None:
        self._publish = publish
        self._lock = threading.Lock()
        self._sent: dict[str, str] = {}
        self.published = 0

    def desired(self, device_id: str, text: str) -> bool:
        """Send the desired configuration if it changed; whether a message went out."""
        with self._lock:
            if self._sent.get(device_id) == text:
                return False
        if not self._publish(desired_topic(device_id), text.encode(), True):
            return False  # not connected: sent again after the connection (forget_all + resync)
        with self._lock:
            self._sent[device_id] = text
            self.published += 1
        log.info("desired configuration published", extra={"device": device_id})
        return True

    def forget_all(self) -> None:
        with self._lock:
            self._sent.clear()

    def decommission(self, device_id: str, prefix: str) -> None:
        """Clear what the broker keeps for a deleted device: its desired configuration, any certificate
        sent to it, and its retained status (which would otherwise announce a device that is gone)."""
        with self._lock:
            self._sent.pop(device_id, None)
        for topic in (
            desired_topic(device_id),
            f"{TWIN_BASE}/{device_id}/cert",
            status_topic(device_id, prefix),
        ):
            self._publish(topic, b"", True)
        log.info("retained topics of a decommissioned device cleared", extra={"device": device_id})


def decommission(ctl: Any, body: dict) -> None:
    """A WeatherSensor was deleted (`ctl`: the Controller): clear its retained topics on the broker. Its
    children go by owner references; the fleet's next ACL leaves it out."""
    device_id = (body.get("spec") or {}).get("deviceId")
    namespace = body["metadata"].get("namespace") or ""
    if not device_id:
        return
    if ctl.devices.get(device_id) == ("WeatherSensor", namespace, body["metadata"]["name"]):
        ctl.devices.pop(device_id, None)
    prefix = "sensors"
    fleet_name = (body.get("status") or {}).get("fleet")
    for fleet in ctl.cached_fleets(namespace):
        if fleet.metadata.name == fleet_name:
            prefix = fleet.spec.broker.topic_prefix
    twin = getattr(ctl, "twin", None)
    if twin is not None:
        twin.decommission(device_id, prefix)
