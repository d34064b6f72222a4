"""Update notifications over MQTT, as the original OtaFlux: `<topic>/<device>`, JSON {version, size},
QoS 1, retained (a device that connects later still learns of the update). TLS and mutual TLS through
weatherfleet.mqtt when certificates are configured."""

from __future__ import annotations

import json
import logging
import os
import socket
import ssl
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt

from weatherfleet.messages import OtaNotification, notify_topic
from weatherfleet.mqtt import MqttSettings, make_client

from .config import Settings

log = logging.getLogger("otaflux.notifier")


class Notifier:
    def __init__(self, settings: Settings, on_result=None) -> None:
        parts = urlsplit(settings.mqtt_url or "")
        self.topic = settings.mqtt_topic
        self.on_result = on_result or (lambda ok: None)
        tls = parts.scheme in ("mqtts", "ssl") or settings.mqtt_ca_cert_path is not None
        self.host, self.port = parts.hostname or "localhost", parts.port or (8883 if tls else 1883)
        client_id = f"{settings.mqtt_client_id}-{socket.gethostname()}-{os.getpid()}"
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
