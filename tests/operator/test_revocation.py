"""Decommission revokes, through the operator: deleting a WeatherSensor puts every certificate the device
had into the fleet CA's CRL (ConfigMap weatherfleet-crl, signed with the CA issuer's key); a real Mosquitto
that loads it (`crlfile`, re-read on SIGHUP) refuses the device's next connection attempt, while other
devices keep connecting."""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import os
import sys
import types

import pytest
from cryptography import x509
from helpers import wait_for

from weatherfleet.controller.devicetwin import CRL_CA_SECRET_ENV
from weatherfleet.mqtt import tls_context

pytestmark = pytest.mark.slow
GONE, STAYS = "dev-10", "dev-11"
DEVICE_DIR = __import__("pathlib").Path(__file__).resolve().parents[2] / "firmware" / "device"


@pytest.fixture
def device_mqtt(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    shim = types.ModuleType("micropython")
    shim.const = lambda x: x
    monkeypatch.setitem(sys.modules, "micropython", shim)
    spec = importlib.util.spec_from_file_location("device_mqtt_revocation", DEVICE_DIR / "mqtt.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def _connect(device_mqtt, settings, device_id: str):
    client = device_mqtt.MQTTClient(
        device_id, settings.host, settings.port, ssl=tls_context(settings), keepalive=30, ticks_ms=lambda: 0
    )
    await asyncio.wait_for(client.connect(), 20)
    return client


def _b64(path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


async def test_deleting_a_sensor_revokes_its_certificate_on_mosquitto(
    cluster, namespace, start_operator, fleet_broker, local_ca, device_mqtt
) -> None:
    ns = namespace
    broker, env, settings_for = fleet_broker
    broker.crl = True
    broker.restart()  # with crlfile, as the broker's configuration would mount the operator's CRL
    gone = settings_for(GONE)
    # the CA issuer's key pair, where a cert-manager CA issuer keeps it
    cluster.core.create_namespaced_secret(
        "weatherfleet",
        {
            "metadata": {"name": f"fleet-ca-{ns}"[:63]},
            "type": "kubernetes.io/tls",
            "data": {"tls.crt": _b64(local_ca.cert_path), "tls.key": _b64(local_ca.key_path)},
        },
    )
    os.environ[CRL_CA_SECRET_ENV] = f"weatherfleet/fleet-ca-{ns}"[:76]
    try:
        start_operator(env)
        cluster.create(
            "SensorFleet",
            ns,
            "garden",
            {"selector": {"matchLabels": {"fleet": "garden"}}, "broker": {"kind": "mosquitto"}},
        )
        # what cert-manager wrote for the device at provisioning (the certificate the board runs with)
        cluster.core.create_namespaced_secret(
            ns,
            {
                "metadata": {
                    "name": f"{GONE}-device-tls",
                    "labels": {
                        "app.kubernetes.io/managed-by": "weatherfleet",
                        "weatherfleet.io/device": GONE,
                    },
                },
                "type": "kubernetes.io/tls",
                "data": {"tls.crt": _b64(gone.cert), "tls.key": _b64(gone.key)},
            },
        )
        spec = {"deviceId": GONE, "location": "shed", "sensors": [{"type": "bme280"}]}
        cluster.create("WeatherSensor", ns, "shed", spec, {"fleet": "garden"})
        await asyncio.to_thread(
            wait_for, lambda: (cluster.get("WeatherSensor", ns, "shed") or {}).get("status"), 60, "a status"
        )
        await asyncio.sleep(4)  # a resync: the operator has seen the device's Secret with its reconcile
        client = await _connect(device_mqtt, gone, GONE)
        await client.disconnect()

        cluster.delete("WeatherSensor", ns, "shed")
        serial = x509.load_pem_x509_certificate(gone.cert.read_bytes()).serial_number

        def crl():
            cm = cluster.configmap("weatherfleet", "weatherfleet-crl")
            text = ((cm.data if cm else None) or {}).get("ca.crl")
            if not text:
                return None
            revoked = x509.load_pem_x509_crl(text.encode())
            return text if revoked.get_revoked_certificate_by_serial_number(serial) else None

        text = await asyncio.to_thread(wait_for, crl, 60, "the device's serial in the CRL")
        assert x509.load_pem_x509_crl(text.encode()).is_signature_valid(
            x509.load_pem_x509_certificate(local_ca.cert_path.read_bytes()).public_key()
        )
        # the broker's crlfile gets the ConfigMap's content (a mounted ConfigMap in a cluster) and SIGHUP
        local_ca.crl_path.write_text(text)
        broker.reload()
        await asyncio.sleep(1.0)
        with pytest.raises((OSError, device_mqtt.MQTTError, asyncio.TimeoutError, EOFError)):
            refused = await _connect(device_mqtt, gone, GONE)
            await refused.disconnect()
        still = await _connect(device_mqtt, settings_for(STAYS), STAYS)
        assert still.connected
        await still.disconnect()
    finally:
        os.environ.pop(CRL_CA_SECRET_ENV, None)
