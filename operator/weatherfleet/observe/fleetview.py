"""What the operator knows about every device, from `<prefix>/<id>/status` (retained, last will offline;
the device republishes it every heartbeatSeconds, with the desired-configuration generation it applied
and its last reading) and `<prefix>/<id>/ota` events. Thread-safe: paho's network thread writes, the reconcilers read."""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import ValidationError

from ..messages import DeviceStatus, OtaEvent, split_topic
from ..rollout import DeviceObservation

log = logging.getLogger(__name__)

# OTA events that say nothing about success or failure; they only move the state machine along.
_PROGRESS = {"checking", "downloading", "verifying", "installed", "booted"}
_NONCHARACTERS = "\ufdd0-\ufdef" + "".join(
    f"{chr(plane * 0x10000 + 0xFFFE)}{chr(plane * 0x10000 + 0xFFFF)}" for plane in range(17)
)
# What device text may not carry into a model, a log, a timeline or a table: C0 controls, lone surrogates
# (an escaped "\ud800" is valid JSON, and no UTF-8 writer can encode it), non-characters.
_UNTEXT = re.compile(f"[\x00-\x1f\ud800-\udfff{_NONCHARACTERS}]")
MAX_PAYLOAD = 64 * 1024


def clean_text(value: object) -> object:
    """A parsed JSON value with every string made printable, encodable text (U+FFFD for what is not)."""
    if isinstance(value, str):
        return value if value.isascii() and value.isprintable() else _UNTEXT.sub("\ufffd", value)
    if isinstance(value, dict):
        return {clean_text(k): clean_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean_text(v) for v in value]
    return value


def progress_step(event: str, percent: int | None) -> int | None:
    """An update's progress as the status shows it: 0, 25, 50, 75 or 100 while downloading, 100 once the
    download is done (verifying, installed, booted, confirmed), None otherwise."""
    if event == "downloading":
        return min(100, max(0, percent or 0)) // 25 * 25
    return 100 if event in ("verifying", "installed", "booted", "confirmed") else None


@dataclass(frozen=True)
class Sighting:
    """One device's observation, when it was last heard from, and its last status payload."""

    observation: DeviceObservation
    last_seen: datetime
    status: DeviceStatus | None


class FleetView:
    """Device id -> what was last observed. `on_change(device_id)` is called after every change that
    could alter a reconcile outcome (not for repeated identical status messages)."""

    def __init__(self, on_change: Callable[[str], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._devices: dict[str, Sighting] = {}
        self.on_change = on_change
        self.rejected = 0

    def get(self, device_id: str) -> Sighting | None:
        with self._lock:
            return self._devices.get(device_id)

    def snapshot(self) -> dict[str, Sighting]:
        with self._lock:
            return dict(self._devices)

    def __len__(self) -> int:
        with self._lock:
            return len(self._devices)

    def handle(self, topic: str, payload: bytes, now: datetime | None = None) -> bool:
        """Fold one MQTT message into the view. Returns whether anything changed. Total (issue 14: a lone
        surrogate in one board's status stopped `weatherfleet up`): malformed payloads, JSON bombs and
        anything else a device can send are counted and logged (topic only: a payload is device-controlled
        input) and change nothing; text that no writer could encode is replaced before it enters the view,
        so every table, timeline and report downstream gets printable, encodable text."""
        parsed = split_topic(topic)
        if parsed is None or _UNTEXT.search(topic):
            return False
        device_id, kind = parsed
        now = now or datetime.now(UTC)
        try:
            if kind not in ("status", "ota"):
                return False
            if kind == "status" and not payload:
                # the retained status cleared (the operator does that when a device is decommissioned):
                # the device is gone from the view, not a malformed message
                with self._lock:
                    return self._devices.pop(device_id, None) is not None
            if len(payload) > MAX_PAYLOAD:
                raise ValueError(f"payload of {len(payload)} bytes")
            document = clean_text(json.loads(payload))
            if kind == "status":
                changed = self._status(device_id, DeviceStatus.model_validate(document), now)
            else:
                changed = self._ota(device_id, OtaEvent.model_validate(document), now)
        except (ValueError, ValidationError, RecursionError, TypeError):
            self.rejected += 1
            log.warning("ignored a malformed message", extra={"topic": topic})
            return False
        if changed and self.on_change:
            try:
                self.on_change(device_id)
            except Exception:
                log.exception("on_change failed", extra={"device": device_id})
        return changed

    def _status(self, device_id: str, status: DeviceStatus, now: datetime) -> bool:
        with self._lock:
            prev = self._devices.get(device_id)
            base = prev.observation if prev else DeviceObservation(device_id=device_id)
            update: dict = {"online": status.online}
            if status.firmware:
                update["reported_version"] = status.firmware
            obs = base.model_copy(update=update)
            # The last will ({"online": false}) is published by the broker, not the device: not a sighting.
            seen = now if status.online else (prev.last_seen if prev else now)
            kept = status if status.online else (prev.status if prev else status)
            self._devices[device_id] = Sighting(obs, seen, kept)
            # A heartbeat that only moves lastSeen and the reading changes no decision (the controller
            # looks again when the silence would make the device offline); a new configuration report does.
            old_config = prev.status.config if prev and prev.status else None
            return prev is None or prev.observation != obs or old_config != kept.config

    def _ota(self, device_id: str, event: OtaEvent, now: datetime) -> bool:
        with self._lock:
            prev = self._devices.get(device_id)
            base = prev.observation if prev else DeviceObservation(device_id=device_id)
            update: dict = {"ota_state": event.event, "online": True}
            if event.version:
                update["ota_version"] = event.version
            update["ota_reason"] = event.reason if event.event in ("failed", "rolled_back") else None
            if event.event == "confirmed" and event.version:
                update["reported_version"] = event.version
            # Download progress in steps of 25 %: what the status shows, and at most 5 changes an update.
            update["ota_percent"] = progress_step(event.event, event.percent)
            obs = base.model_copy(update=update)
            self._devices[device_id] = Sighting(obs, now, prev.status if prev else None)
            progress_only = (
                prev is not None
                and event.event in _PROGRESS
                and prev.observation.ota_state == event.event
                and prev.observation.ota_percent == obs.ota_percent
            )
            return not progress_only and (prev is None or prev.observation != obs)
