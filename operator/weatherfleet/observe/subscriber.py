"""A paho subscriber with the operator's own client certificate (CN weatherfleet-operator), feeding a
FleetView. Subscribes only what the ACL grants the operator: `<prefix>/+/status` and `<prefix>/+/ota`.
Retained status messages rebuild the view after a restart.

The same connection publishes what the operator sends devices (the desired configuration on
`twin/<id>/desired`): one MQTT session per identity, since the broker binds a client id to its
certificate."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt

from ..identities import OPERATOR
from ..mqtt import MqttSettings, make_client
from .fleetview import FleetView

log = logging.getLogger(__name__)
CSR_TOPIC = "twin/+/csr"


class MqttObserver:
    def __init__(
        self,
        settings: MqttSettings,
        view: FleetView,
        prefixes: tuple[str, ...] = ("sensors",),
        client_id: str = OPERATOR,
        settle_seconds: float = 1.0,
        password: str | None = None,
    ) -> None:
        self.settings, self.view, self.prefixes = settings, view, prefixes
        self.settle_seconds = settle_seconds
        self.client = make_client(settings, client_id)
        if password:
            # The operator's login (NanoMQ; Mosquitto's services' listener), whatever the client id: the
            # operator and the local view connect under ids of their own with this one identity.
            self.client.username_pw_set(OPERATOR, password)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect
        self._subscribed_at: float | None = None
        self._pending: set[int] = set()
        self._lock = threading.Lock()
        # called (from paho's thread) after every successful (re)connection: whoever publishes through
        # this client sends again what a broker restart may have lost
        self.on_connected: list[Callable[[], None]] = []
        # renewal requests from devices (`twin/<id>/csr`): (device id, payload), from paho's thread
        self.on_csr: Callable[[str, bytes], None] | None = None

    @property
    def topics(self) -> list[str]:
        return [f"{p}/+/{kind}" for p in self.prefixes for kind in ("status", "ota")]

    def start(self) -> MqttObserver:
        self.client.connect_async(self.settings.host, self.settings.port, keepalive=self.settings.keepalive)
        self.client.loop_start()
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def publish(self, topic: str, payload: bytes | str, retain: bool = True, qos: int = 1) -> bool:
        """Queue a message on the operator's connection; False when not connected (the caller tries
        again after the next connection, see `on_connected`)."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    def ready(self) -> bool:
        """Subscribed, and long enough ago that the broker has delivered the retained status messages:
        before that an empty view would look like a fleet where nobody has updated yet."""
        with self._lock:
            return (
                self._subscribed_at is not None
                and time.monotonic() - self._subscribed_at >= self.settle_seconds
            )

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready():
                return True
            time.sleep(0.05)
        return False

    def _on_connect(self, client: mqtt.Client, _userdata, _flags, reason_code, _properties=None) -> None:
        if reason_code.is_failure:
            log.error("MQTT connection refused", extra={"reason": str(reason_code)})
            return
        _result, mid = client.subscribe([(t, 1) for t in self.topics])
        with self._lock:
            self._pending.add(mid)
        if self.on_csr is not None:
            # A subscription of its own: a broker whose ACL predates it refuses only this one, and the
            # fleet view (rollouts wait for it) is not held up.
            client.subscribe(CSR_TOPIC, 1)
        log.info("MQTT connected", extra={"topics": self.topics})
        for callback in list(self.on_connected):
            try:
                callback()
            except Exception:
                log.exception("on_connected callback failed")

    def _on_subscribe(self, _client, _userdata, mid, reason_codes, _properties=None) -> None:
        refused = [rc for rc in reason_codes if rc.is_failure]
        with self._lock:
            ours = mid in self._pending
        if refused and not ours:
            log.error("MQTT subscription to %s refused by the broker ACL: no certificate renewals", CSR_TOPIC)
            return
        if refused:
            log.error("MQTT subscription refused by the broker ACL", extra={"topics": self.topics})
            return
        with self._lock:
            if mid in self._pending:
                self._pending.discard(mid)
                self._subscribed_at = time.monotonic()

    def _on_message(self, _client, _userdata, message: mqtt.MQTTMessage) -> None:
        # paho re-raises what a callback raises, which ends its network thread: nothing a device sends
        # may get that far (the view is total; this is the last line, e.g. a topic that is not UTF-8)
        try:
            if message.topic.startswith("twin/"):
                parts = message.topic.split("/")
                if len(parts) == 3 and parts[2] == "csr" and parts[1] and self.on_csr is not None:
                    self.on_csr(parts[1], message.payload)
                return
            self.view.handle(message.topic, message.payload)
        except Exception:
            self.view.rejected += 1
            log.exception("a device message could not be handled")

    def _on_disconnect(self, _client, _userdata, _flags, reason_code, _properties=None) -> None:
        with self._lock:
            self._subscribed_at = None
        if reason_code != 0:
            log.warning("MQTT disconnected; paho reconnects", extra={"reason": str(reason_code)})
