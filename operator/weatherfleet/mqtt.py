"""paho-mqtt clients for the fleet's services, always over TLS with a client certificate."""

from __future__ import annotations

import ssl
from pathlib import Path

import paho.mqtt.client as mqtt
from pydantic import BaseModel, SecretStr


class MqttSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8883
    ca: Path
    cert: Path
    key: Path
    keepalive: int = 30
    # NanoMQ cannot take the username from the certificate (nanomq issue 2023): with it, services log in
    # with a username and password as well; so do they on Mosquitto's services' listener (issue 14).
    username: str | None = None
    password: SecretStr | None = None


def tls_context(settings: MqttSettings) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(settings.ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(settings.cert), str(settings.key))
    return context


def make_client(
    settings: MqttSettings, client_id: str, *, clean_start: bool = True, protocol: int = mqtt.MQTTv311
) -> mqtt.Client:
    """A configured, not yet connected client. `clean_start=False` keeps a persistent session, so QoS 1
    messages published while the client is away are delivered when it comes back."""
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=clean_start if protocol != mqtt.MQTTv5 else None,
        protocol=protocol,
    )
    client.tls_set_context(tls_context(settings))
    if settings.username:
        client.username_pw_set(
            settings.username, settings.password.get_secret_value() if settings.password else None
        )
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    return client
