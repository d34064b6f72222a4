"""A board at its default heap cap (devicesim.vm.DEFAULT_HEAP, the ESP32's usable heap as this VM counts
it) keeps doing what the heap must always leave room for, in any order and after any number of OTA checks:
full OTA checks (answer parsed, sha256, Ed25519, plan; then refused as an unauthorised downgrade), a
certificate renewal from its own CSR and the reconnect with the new certificate, a reconnect after the
broker restarted, and then an OTA check and install of the all-features bundle, reboot and confirm. The
real firmware on the real VM, the real Mosquitto over mutual TLS, OtaFlux and the registry."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from pathlib import Path

from cryptography import x509

from devicesim.provision import build_bundle, device_config, provision
from weatherfleet import identities, oci

from .ota_fixtures import RELEASE_1_1, Keys, OtaFlux, release, source_variant

ALL_FEATURES = ("bme280", "scd30", "sds011", "tls", "mtls", "ota", "influx")
DEVICE = "dev-13"


def _events(collector, suffix: str) -> list[dict]:
    return [
        json.loads(m.payload) for m in list(collector.messages) if m.topic == f"sensors/{DEVICE}/{suffix}"
    ]


def _failed_checks(collector) -> int:
    return sum(
        e["event"] == "failed" and "downgrade" in (e.get("reason") or "") for e in _events(collector, "ota")
    )


def _current_serial(device) -> int:
    data = (device.flash.fs_root / "certs" / "device.pem").read_bytes()
    cert = (
        x509.load_pem_x509_certificate(data)
        if data.startswith(b"-----")
        else x509.load_der_x509_certificate(data)
    )
    return cert.serial_number


async def _renew(device, operator, local_ca, duration: dt.timedelta) -> int:
    """Answer the board's next CSR with a certificate valid for `duration`; wait until the board runs it."""
    asked = len(operator.messages)
    await device.wait_for(lambda: len(operator.messages) > asked, 120, "a CSR from the board")
    csr = json.loads(operator.messages[-1].payload)["csr"].encode()
    cert = local_ca.sign_csr(csr, DEVICE, duration=duration)
    serial = x509.load_pem_x509_certificate(cert).serial_number
    switched = device.console_text().count("switched to the renewed certificate")
    operator.client.publish(
        f"twin/{DEVICE}/cert", json.dumps({"cert": cert.decode()}), qos=1
    ).wait_for_publish(10)
    await device.wait_for(
        lambda: device.console_text().count("switched to the renewed certificate") > switched,
        60,
        "the board connected with its renewed certificate",
    )
    assert _current_serial(device) == serial
    return serial


async def test_renewal_reconnect_and_update_fit_the_default_heap_after_ota_checks(
    devices, mosquitto_factory, mqtt_subscriber, local_ca, registry, tmp_path: Path
) -> None:
    broker = mosquitto_factory()
    keys = Keys.make(tmp_path / "keys", "release")
    prefix = f"heap{uuid.uuid4().hex[:8]}/"
    store = oci.connect(registry.url)
    # an older release, validly signed: every check reads, hashes and verifies all of it, then refuses it
    release(store, prefix + DEVICE, "0.9.0", source_variant(tmp_path, "0.9.0"), keys, tmp_path, ALL_FEATURES)
    otaflux = OtaFlux(tmp_path / "otaflux", registry.url, prefix, [keys.public]).start()
    try:
        collector = mqtt_subscriber(broker, f"sensors/{DEVICE}/#")
        operator = mqtt_subscriber(broker, f"twin/{DEVICE}/csr", identities.OPERATOR)
        # a certificate due for renewal from the start (10 days left, renewBefore 15 days)
        issued = local_ca.issue(DEVICE, duration=dt.timedelta(days=10), renew_before=dt.timedelta(days=1))
        config = device_config(
            DEVICE,
            broker=(broker.host, broker.port),
            version="1.0.0",
            features=ALL_FEATURES,
            interval=2,
            ota=("127.0.0.1", otaflux.port),
            signing_keys=[keys.device_text],
            certificates={"renewBeforeSeconds": 15 * 86400, "checkSeconds": 2, "retrySeconds": 5},
        )
        config["ota"].update(checkIntervalSeconds=10, jitterSeconds=0)
        device = devices(DEVICE)  # the default heap cap
        provision(
            device,
            config,
            build_bundle("1.0.0", ALL_FEATURES),
            ca=issued.ca,
            cert=issued.cert,
            key=issued.key,
        )
        first_serial = _current_serial(device)
        device.start()

        # OTA checks first (and the CSR meanwhile): the heap as it is after several full checks
        await device.wait_for(lambda: _failed_checks(collector) >= 2, 120, "two full OTA checks")
        # the first renewal: a certificate that is due again at once (10 days), so the board asks again
        renewed = await _renew(device, operator, local_ca, dt.timedelta(days=10))
        assert renewed != first_serial
        checks = _failed_checks(collector)
        await device.wait_for(lambda: _failed_checks(collector) > checks, 60, "another OTA check")
        # the second: the first renewal's context must have been freed for this one's
        await _renew(device, operator, local_ca, dt.timedelta(days=90))

        # more checks, then the broker goes away and comes back: the board reconnects
        checks = _failed_checks(collector)
        await device.wait_for(lambda: _failed_checks(collector) > checks, 60, "one more OTA check")
        connects = device.console_text().count("connected to")
        await asyncio.to_thread(broker.stop)
        await asyncio.sleep(3)  # the outage: the board's connection breaks, it retries with backoff
        await asyncio.to_thread(broker.start)
        await device.wait_for(
            lambda: device.console_text().count("connected to") > connects,
            90,
            "the reconnect after the restart",
        )
        await device.wait_for(
            lambda: _failed_checks(collector) >= checks + 2, 60, "a check after the reconnect"
        )

        # the update: check, install, reboot, confirm
        release(
            store,
            prefix + DEVICE,
            "1.1.0",
            source_variant(tmp_path, "1.1.0", appends={"payload.py": RELEASE_1_1}),
            keys,
            tmp_path,
            ALL_FEATURES,
        )
        await device.wait_for(
            lambda: any(
                e["event"] == "confirmed" and e.get("version") == "1.1.0" for e in _events(collector, "ota")
            ),
            180,
            "1.1.0 installed and confirmed",
        )
        assert "memory allocation failed" not in device.console_text()
    finally:
        otaflux.stop()
