"""Certificates renew and decommissioning revokes in `weatherfleet up`, with compressed time through the
fleet's own settings (`certificates.duration: 45s`, `renewBefore: 30s`): the emulated board (real firmware)
sends CSRs, the operator makes approved CertificateRequests, the cert-manager stand-in signs them, and the
board switches to the renewed certificate and keeps publishing after its first one expired. Deleting its
WeatherSensor puts its certificate into the operator's CRL, which the local Mosquitto mounts and reloads:
the board's own certificate and key are then refused at the TLS handshake."""

from __future__ import annotations

import base64
import datetime as dt
import json
import ssl
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from kubernetes import client, config

from weatherfleet.mqtt import MqttSettings, make_client
from weatherfleet.services.process import wait_until

from .conftest import FLEET, sensor, write_crs
from .test_up import Up, readings_since

pytestmark = pytest.mark.slow
DEVICE = "dev-01"


def _pem_cert(data: bytes) -> x509.Certificate:
    return (
        x509.load_pem_x509_certificate(data)
        if data.startswith(b"-----")
        else x509.load_der_x509_certificate(data)
    )


def _board_identity(fs: Path, out: Path) -> tuple[x509.Certificate, Path, Path, Path]:
    """The board's current certificate, and it and its key as PEM files a client can use."""
    cert = _pem_cert((fs / "certs" / "device.pem").read_bytes())
    raw = (fs / "certs" / "device.key").read_bytes()
    key = (
        serialization.load_pem_private_key(raw, None)
        if raw.startswith(b"-----")
        else serialization.load_der_private_key(raw, None)
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "device.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (out / "device.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    ca = _pem_cert((fs / "certs" / "ca.pem").read_bytes())
    (out / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return cert, out / "ca.pem", out / "device.pem", out / "device.key"


def _connects(port: int, ca: Path, cert: Path, key: Path) -> bool:
    client_ = make_client(
        MqttSettings(host="127.0.0.1", port=port, ca=ca, cert=cert, key=key), "probe-dev-01"
    )
    answered, result = threading.Event(), []
    client_.on_connect = lambda _c, _u, _f, rc, _p=None: (result.append(not rc.is_failure), answered.set())
    client_.on_disconnect = lambda *_a: answered.set()
    try:
        client_.connect("127.0.0.1", port)
    except (ssl.SSLError, OSError):
        return False
    client_.loop_start()
    try:
        return answered.wait(10) and result == [True]
    finally:
        client_.loop_stop()
        client_.disconnect()


def test_a_board_renews_in_up_and_is_refused_once_decommissioned(tmp_path):
    fleet = {**FLEET, "spec": {**FLEET["spec"], "certificates": {"duration": "45s", "renewBefore": "30s"}}}
    crs = tmp_path / "crs"
    write_crs(crs, [fleet, sensor(DEVICE, "garden")])
    workdir = tmp_path / "wd"
    fs = workdir / "devices" / DEVICE / "fs"
    store_path = workdir / "store" / "weather.sqlite"
    start = dt.datetime.now(dt.UTC)
    up = Up(crs, workdir, tmp_path / "up.log", "--sensors", "1")
    try:
        wait_until(lambda: (fs / "certs" / "device.pem").exists(), 180, "the board provisioned", 1)
        first = _pem_cert((fs / "certs" / "device.pem").read_bytes())
        api = config.new_client_from_config(str(workdir / "kubeconfig"))
        custom, core = client.CustomObjectsApi(api), client.CoreV1Api(api)

        def signed() -> list[x509.Certificate]:
            items = custom.list_namespaced_custom_object(
                "cert-manager.io", "v1", "weatherfleet", "certificaterequests"
            )["items"]
            return [
                x509.load_pem_x509_certificate(base64.b64decode(r["status"]["certificate"]))
                for r in items
                if r["metadata"]["name"].startswith(f"{DEVICE}-")
                and (r.get("status") or {}).get("certificate")
            ]

        def renewed_on_board() -> bool:
            serials = {c.serial_number for c in signed()}
            return _pem_cert((fs / "certs" / "device.pem").read_bytes()).serial_number in serials

        # the board asks, the operator approves, the stand-in signs, the board switches
        wait_until(renewed_on_board, 150, "the board running a certificate signed from its CSR", 1)
        # still publishing after its first certificate expired (it would be refused with that one)
        expired = max(first.not_valid_after_utc, start)
        wait_until(lambda: dt.datetime.now(dt.UTC) > expired, 60, "the first certificate expired", 1)
        after = dt.datetime.now(dt.UTC)
        wait_until(lambda: DEVICE in readings_since(store_path, after), 60, "readings after expiry", 1)

        # decommission: the board's current certificate goes into the CRL the broker reloads
        cert, ca, cert_pem, key_pem = _board_identity(fs, tmp_path / "board")
        port = int(json.loads((workdir / "state.json").read_text())["ports"]["mqtt"])
        custom.delete_namespaced_custom_object(
            "weatherfleet.io", "v1alpha1", "weatherfleet", "weathersensors", DEVICE
        )

        def in_broker_crl() -> bool:
            copy = workdir / "mosquitto" / "ca.crl"
            if not copy.exists():
                return False
            crl = x509.load_pem_x509_crl(copy.read_bytes())
            return crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None

        wait_until(in_broker_crl, 60, "the board's certificate in the broker's CRL", 1)
        cm = core.read_namespaced_config_map("weatherfleet-crl", "weatherfleet")
        assert format(cert.serial_number, "x") in cm.data["revoked"]
        wait_until(lambda: not _connects(port, ca, cert_pem, key_pem), 30, "the revoked board refused", 1)
    finally:
        code = up.ctrl_c()
    assert code == 0, up.text()[-3000:]
