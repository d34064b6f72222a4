"""The MQTT side: a persistent MQTT v5 session as weatherfleet-ingest, QoS 1, acknowledged by hand.

paho sends PUBACK only when the pipeline says the message's batch is durable (`manual_ack`). Acks carry
the connection generation: after a reconnect, message ids of the old connection are not acknowledged on
the new one (the broker redelivers those messages; the idempotent store keeps one row).

Scaling out: with a share group, replicas subscribe `$share/<group>/sensors/#` (MQTT 5 shared
subscriptions, which Mosquitto and NanoMQ implement) and the broker hands each message to one of them.
Each replica keeps its own persistent session under its own client id: a replica that is killed resumes
its session when it comes back, so what the broker queued for it while it was away is not lost (Mosquitto
queues shared messages to offline sessions). A replica that leaves for good (a scale-down, a rollout) first
unsubscribes, drains what its session still holds, and ends the session (`stop`)."""

from __future__ import annotations

import logging
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from .. import identities
from ..mqtt import MqttSettings, make_client
from .pipeline import Delivery, Ingestor

log = logging.getLogger(__name__)


class MqttConsumer:
    def __init__(
        self,
        settings: MqttSettings,
        ingestor: Ingestor,
        *,
        topic: str = "sensors/#",
        client_id: str = identities.INGEST,
        session_expiry_s: int = 7 * 24 * 3600,
        receive_maximum: int | None = None,
        share_group: str | None = None,
    ) -> None:
        self.settings, self.ingestor, self.topic = settings, ingestor, topic
        self.share_group = share_group
        self.subscription = f"$share/{share_group}/{topic}" if share_group else topic
        self.session_expiry_s = session_expiry_s
        # the broker holds back further messages while this many are unacknowledged: room for the batch
        # being committed and the ones filling behind it (and the bound of ingest's memory)
        self.receive_maximum = min(65535, receive_maximum or 4 * ingestor.policy.max_rows)
        self.client = make_client(settings, client_id, clean_start=False, protocol=mqtt.MQTTv5)
        self.client.manual_ack_set(True)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self._generation = 0
        self._ack_lock = threading.Lock()
        self.received = 0  # messages handed to the pipeline
        self._last_message = time.monotonic()
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        ingestor.ack = self._ack

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> MqttConsumer:
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = self.session_expiry_s
        properties.ReceiveMaximum = self.receive_maximum
        self.ingestor.start()
        self.client.connect_async(
            self.settings.host,
            self.settings.port,
            keepalive=self.settings.keepalive,
            clean_start=False,
            properties=properties,
        )
        self.client.loop_start()
        return self

    def stop(self, drain_seconds: float = 30.0) -> None:
        """Commit and acknowledge what arrived, then leave. Alone, the session stays for the next start. In
        a share group the replica may not come back under this client id: it unsubscribes first, takes what
        its session still holds (until nothing came for a second, at most `drain_seconds`), and ends the
        session, so the broker queues nothing more for it and the other replicas carry on."""
        leaving = self.share_group is not None and self.connected.is_set()
        if leaving:
            self.client.unsubscribe(self.subscription)
            deadline = time.monotonic() + drain_seconds
            while time.monotonic() < deadline and (
                time.monotonic() - self._last_message < 1.0 or self.ingestor.committed < self.received
            ):
                time.sleep(0.05)
        self.ingestor.stop()
        if leaving:
            properties = Properties(PacketTypes.DISCONNECT)
            properties.SessionExpiryInterval = 0
            self.client.disconnect(properties=properties)
        else:
            self.client.disconnect()
        self.client.loop_stop()
        self.ingestor.metrics.connected.set(0)

    # -- paho callbacks (network thread) ------------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, _userdata, flags, reason_code, _properties) -> None:
        if reason_code.is_failure:
            log.error("broker refused the connection: %s", reason_code)
            return
        with self._ack_lock:
            self._generation += 1
        log.info("connected (session present: %s)", flags.session_present)
        self.ingestor.metrics.connected.set(1)
        self.connected.set()
        # retain handling 1: retained status is sent only for a new subscription, so re-subscribing on
        # every reconnect does not store the same retained status again
        options = SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)
        client.subscribe(self.subscription, options=options)

    def _on_subscribe(self, _client, _userdata, _mid, reason_codes, _properties) -> None:
        if any(code.is_failure for code in reason_codes):
            log.error(
                "subscription to %s refused: %s (check the broker ACL)", self.subscription, reason_codes
            )
            return
        self.subscribed.set()

    def _on_disconnect(self, _client, _userdata, _flags, reason_code, _properties) -> None:
        self.connected.clear()
        self.ingestor.metrics.connected.set(0)
        log.warning("disconnected from the broker: %s", reason_code)

    def _on_message(self, _client, _userdata, message: mqtt.MQTTMessage) -> None:
        try:
            topic = message.topic
        except UnicodeDecodeError:  # a broker that does not check topics: the parser rejects it with a reason
            topic = message._topic.decode("utf-8", "backslashreplace")
        self.received += 1
        self._last_message = time.monotonic()
        self.ingestor.submit(
            Delivery(topic, message.payload, time.time_ns(), (self._generation, message.mid, message.qos))
        )

    # -- acknowledgements (writer thread) -----------------------------------------------------------

    def _ack(self, deliveries: list[Delivery]) -> None:
        with self._ack_lock:
            generation = self._generation
            for delivery in deliveries:
                token_generation, mid, qos = delivery.token
                if qos and token_generation == generation:
                    self.client.ack(mid, qos)
