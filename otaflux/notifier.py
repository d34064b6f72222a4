"""Update notifications over MQTT, as the original OtaFlux: `<topic>/<device>`, JSON {version, size},
QoS 1, retained (a device that connects later still learns of the update). TLS and mutual TLS through
weatherfleet.mqtt when certificates are configured.

`Announcer`: announced waves. When the rollout plan changes, every device whose offered version changed
to a version (newly inside an opened wave, sent back by a halt, a fleet rollback) is notified, instead of
learning it at its next periodic check (hourly, plus jitter). The notifications of one change are spread
evenly over the fleet's `announceWindow`, so OtaFlux, the registry and the broker are not stampeded; a
device whose decision changes again before its turn is told only the latest."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt

from weatherfleet.messages import OtaNotification, notify_topic
from weatherfleet.mqtt import MqttSettings, make_client
from weatherfleet.rollout.plan import newly_offered

from .config import Settings

if TYPE_CHECKING:
    from weatherfleet.rollout import RolloutPlan

    from .cache import Firmware
    from .firmware import FirmwareService

log = logging.getLogger("otaflux.notifier")


# One session per worker process: several connections share the OtaFlux login (services' listener).
CLIENT_ID_PREFIX = "otaflux"


class Notifier:
    def __init__(self, settings: Settings, on_result=None) -> None:
        parts = urlsplit(settings.mqtt_url or "")
        self.topic = settings.mqtt_topic
        self.on_result = on_result or (lambda ok: None)
        tls = parts.scheme in ("mqtts", "ssl") or settings.mqtt_ca_cert_path is not None
        self.host, self.port = parts.hostname or "localhost", parts.port or (8883 if tls else 1883)
        client_id = f"{CLIENT_ID_PREFIX}-{socket.gethostname()}-{os.getpid()}"
        if settings.mqtt_client_cert_path and settings.mqtt_ca_cert_path:
            self.client = make_client(
                MqttSettings(
                    host=self.host,
                    port=self.port,
                    ca=settings.mqtt_ca_cert_path,
                    cert=settings.mqtt_client_cert_path,
                    key=settings.mqtt_client_key_path,
                ),
                client_id,
            )
        else:
            self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
            if tls:
                context = ssl.create_default_context(
                    cafile=str(settings.mqtt_ca_cert_path) if settings.mqtt_ca_cert_path else None
                )
                self.client.tls_set_context(context)
            self.client.reconnect_delay_set(min_delay=1, max_delay=30)
        if settings.mqtt_username:
            self.client.username_pw_set(settings.mqtt_username, settings.mqtt_password)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.connected = False

    def _on_connect(self, _client, _userdata, _flags, reason_code, _properties=None) -> None:
        self.connected = not reason_code.is_failure
        if self.connected:
            log.info("connected to MQTT broker %s:%d", self.host, self.port)
        else:
            log.error("MQTT broker %s:%d refused the connection: %s", self.host, self.port, reason_code)

    def _on_disconnect(self, *_args) -> None:
        self.connected = False

    def start(self) -> None:
        # connect_async + loop_start: a broker that is down at start is retried, never fatal.
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def publish(self, device: str, version: str, size: int) -> bool:
        topic = notify_topic(device, self.topic)
        payload = json.dumps(OtaNotification(version=version, size=size).model_dump())
        info = self.client.publish(topic, payload, qos=1, retain=True)
        ok = info.rc == mqtt.MQTT_ERR_SUCCESS
        if ok:
            log.info("notified %s: version %s, %d bytes", topic, version, size)
        else:
            log.warning("notification to %s queued or failed (%s)", topic, mqtt.error_string(info.rc))
        self.on_result(ok)
        return ok


class Announcer:
    """Notify the devices a plan change offers a new version, spread over the fleet's announce window."""

    def __init__(
        self,
        service: FirmwareService,
        publish: Callable[[Firmware], object],
        concurrency: int = 16,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.service, self.publish, self.clock = service, publish, clock
        self.due: dict[str, tuple[float, str]] = {}  # device -> (when, version)
        self.sent = 0
        self._generation: int | None = None
        self._previous: RolloutPlan | None = None
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task] = set()

    def plan_changed(self, old: RolloutPlan | None, new: RolloutPlan, now: float) -> int:
        """Schedule the devices whose offered version changed; returns how many."""
        count = 0
        for key in sorted(new.fleets):
            fleet = new.fleets[key]
            if not fleet.announce:
                continue
            changed = newly_offered(old.fleets.get(key) if old is not None else None, fleet)
            step = fleet.announce_window / len(changed) if changed else 0.0
            # the other workers re-read the plan within one poll interval: a device told before then
            # could ask one that still answers the old version
            settle = self.service.plan.poll_interval
            for i, (device, version) in enumerate(changed):
                self.due[device] = (now + settle + i * step, version)
            count += len(changed)
            if changed:
                log.info("announcing %d device(s) of %s over %gs", len(changed), key, fleet.announce_window)
        return count

    def poll(self) -> None:
        """Look at the plan: schedule what a change offers (the first plan seen is only the baseline)."""
        plan = self.service.plan.current()
        generation = self.service.plan.generation
        if generation == self._generation:
            return
        if self._generation is not None and plan is not None:
            self.plan_changed(self._previous, plan, self.clock())
        self._previous, self._generation = plan, generation

    async def run(self, stop: asyncio.Event, poll_interval: float = 0.5) -> None:
        while not stop.is_set():
            self.poll()
            now = self.clock()
            for device, (when, version) in sorted(self.due.items(), key=lambda item: item[1][0]):
                if when > now:
                    break
                del self.due[device]
                task = asyncio.create_task(self._send(device, version))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            upcoming = min((when for when, _ in self.due.values()), default=now + poll_interval)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.005, min(upcoming - now, poll_interval)))
        for task in list(self._tasks):
            task.cancel()

    async def _send(self, device: str, version: str) -> None:
        async with self._slots:
            try:
                firmware = await self.service.firmware_for(device)  # warms the cache it will ask next
            except Exception as exc:
                log.warning("not announcing %s to %s: %s", version, device, exc)
                return
            if firmware is None or firmware.version != version:
                return  # the plan moved on meanwhile
            self.publish(firmware)
            self.sent += 1
