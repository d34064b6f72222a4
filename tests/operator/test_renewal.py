"""Certificates that renew themselves, end to end with compressed time (short certificate durations set in
the SensorFleet, nothing else): the real operator against the API double, a real Mosquitto with the
generated ACL, a cert-manager stand-in that signs approved CertificateRequests from the fleet CA, and an
emulated board running the real firmware with a 30 s certificate.

The board survives at least three renewals, its readings never have a gap longer than two measurement
intervals, it keeps its key (every certificate is for the key it was provisioned with), and after its
first certificate has expired it still connects (with a renewed one)."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import itertools
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from helpers import wait_for

from devicesim import Device
from devicesim.provision import build_bundle, device_config, provision
from weatherfleet import identities
from weatherfleet.durations import parse_duration
from weatherfleet.ingest.parsing import MessageParser

pytestmark = pytest.mark.slow
DEVICE_ID = "dev-09"
FEATURES = ("bme280", "tls", "mtls", "influx")
INTERVAL = 2


class CertManagerStandIn:
    """What cert-manager's CA issuer does with a CertificateRequest: nothing until it is approved, then
    sign it from the CA for spec.duration and mark it Ready."""

    def __init__(self, cluster, namespace: str, ca) -> None:
        self.cluster, self.namespace, self.ca = cluster, namespace, ca
        self.signed: list[x509.Certificate] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cert-manager-stand-in", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            try:
                items = self.cluster.crs.list_namespaced_custom_object(
                    "cert-manager.io", "v1", self.namespace, "certificaterequests"
                )["items"]
            except Exception:
                continue
            for cr in items:
                conds = {c["type"]: c["status"] for c in (cr.get("status") or {}).get("conditions") or []}
                if conds.get("Approved") != "True" or "Ready" in conds:
                    continue
                pem = base64.b64decode(cr["spec"]["request"])
                csr = x509.load_pem_x509_csr(pem)
                cn = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
                duration = dt.timedelta(seconds=parse_duration(cr["spec"]["duration"]))
                cert_pem = self.ca.sign_csr(pem, cn, duration=duration)
                status = {
                    "conditions": [
                        *cr["status"]["conditions"],
                        {"type": "Ready", "status": "True", "reason": "Issued", "message": "signed"},
                    ],
                    "certificate": base64.b64encode(cert_pem).decode(),
                    "ca": base64.b64encode(self.ca.cert_path.read_bytes()).decode(),
                }
                self.cluster.crs.patch_namespaced_custom_object_status(
                    "cert-manager.io",
                    "v1",
                    self.namespace,
                    "certificaterequests",
                    cr["metadata"]["name"],
                    {"status": status},
                )
                self.signed.append(x509.load_pem_x509_certificate(cert_pem))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def _short_certificate(ca, directory: Path) -> tuple[Path, Path, ec.EllipticCurvePrivateKey]:
    """The board's first certificate: 30 s, like the fleet's policy (a fresh key made at provisioning)."""
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, DEVICE_ID)]))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    cert = directory / "device.pem"
    cert.write_bytes(ca.sign_csr(csr, DEVICE_ID, duration=dt.timedelta(seconds=30)))
    key_path = directory / "device.key"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert, key_path, key


async def test_a_board_survives_three_renewals_without_a_reading_gap(
    cluster, namespace, start_operator, fleet_broker, mqtt_subscriber, local_ca, tmp_path
) -> None:
    ns = namespace
    broker, env, _settings_for = fleet_broker
    collector = mqtt_subscriber(broker, f"sensors/{DEVICE_ID}/measurements", identities.INGEST)
    start_operator(env)
    signer = CertManagerStandIn(cluster, ns, local_ca)
    await asyncio.to_thread(
        cluster.create,
        "SensorFleet",
        ns,
        "garden",
        {
            "selector": {"matchLabels": {"fleet": "garden"}},
            "broker": {"kind": "mosquitto"},
            "certificates": {"duration": "30s", "renewBefore": "20s"},
        },
    )
    spec = {
        "deviceId": DEVICE_ID,
        "location": "shed",
        "sensors": [{"type": "bme280"}],
        "measurementIntervalSeconds": INTERVAL,
        "features": {"payload": "influx", "ota": False},
    }
    await asyncio.to_thread(cluster.create, "WeatherSensor", ns, "shed", spec, {"fleet": "garden"})
    cert, key_path, key = _short_certificate(local_ca, tmp_path)
    first = x509.load_pem_x509_certificate(cert.read_bytes())
    config = device_config(
        DEVICE_ID, broker=(broker.host, broker.port), version="1.0.0", features=FEATURES, interval=INTERVAL
    )
    device = Device(DEVICE_ID, tmp_path / "board")
    provision(device, config, build_bundle("1.0.0", FEATURES), ca=local_ca.cert_path, cert=cert, key=key_path)
    device.start()
    started = time.monotonic()
    try:

        def renewed(n: int):
            return len(signer.signed) >= n and device.console_text().count("switched to the renewed") >= n

        try:
            await asyncio.to_thread(wait_for, lambda: renewed(3), 120, "three renewals")
            # past the first certificate's expiry, the board still publishes (on a renewed certificate)
            expiry = first.not_valid_after_utc.timestamp()
            await asyncio.to_thread(
                wait_for, lambda: time.time() > expiry + 2, 60, "the first certificate expired"
            )
            seen = len(collector.messages)
            await asyncio.to_thread(
                wait_for, lambda: len(collector.messages) >= seen + 2, 20, "readings go on"
            )
        except AssertionError as error:
            raise AssertionError(f"{error}\n--- board console ---\n{device.console_text()[-4000:]}") from None
    finally:
        await device.stop()
        signer.stop()

    # the key never changed: every certificate issued is for the key the board was provisioned with
    mine = key.public_key().public_numbers()
    assert all(c.public_key().public_numbers() == mine for c in signer.signed)
    assert len({c.serial_number for c in signer.signed}) == len(signer.signed) >= 3
    # every CertificateRequest named the device and was approved by the operator
    requests = cluster.crs.list_namespaced_custom_object("cert-manager.io", "v1", ns, "certificaterequests")[
        "items"
    ]
    assert requests and all(r["metadata"]["name"].startswith(f"{DEVICE_ID}-") for r in requests)
    assert all(
        any(c["type"] == "Approved" and c["status"] == "True" for c in r["status"]["conditions"])
        for r in requests
    )
    # readings: no gap longer than two measurement intervals, by the board's own timestamps
    parser = MessageParser()
    stamps = sorted(
        p.time_ns / 1e9 for m in collector.messages for p in parser.parse(m.topic, m.payload, time.time_ns())
    )
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert len(stamps) >= (time.monotonic() - started) / INTERVAL / 2, "too few readings"
    assert max(gaps) <= 2 * INTERVAL, f"largest gap between readings {max(gaps):.1f} s"
