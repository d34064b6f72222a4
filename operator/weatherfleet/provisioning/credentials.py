"""A board's credentials as the cluster holds them: the `kubernetes.io/tls` Secret cert-manager issued for
the device (`<deviceId>-device-tls`: tls.crt, tls.key, ca.crt) and, when its fleet's broker is NanoMQ,
the login the operator made (`<deviceId>-mqtt-credentials`); and the release signing keys its firmware
must verify (the ConfigMap keys the namespace's FirmwareReleases name in signature.publicKeyRef)."""

from __future__ import annotations

import base64

from kubernetes import client
from kubernetes.client.rest import ApiException

from ..firmware import signing as fw_signing
from ..models import FirmwareRelease, SensorFleet, WeatherSensor
from ..oci import signatures
from ..reconcilers.certificates import device_secret_name
from ..reconcilers.sensor import credentials_secret_name
from .deviceconfig import Credentials


class NotIssued(LookupError):
    """The Secret a board needs is not there yet (cert-manager or the operator has not made it)."""


def _secret(core: client.CoreV1Api, namespace: str, name: str) -> dict[str, bytes]:
    try:
        secret = core.read_namespaced_secret(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            raise NotIssued(f"Secret {namespace}/{name} does not exist yet") from None
        raise
    return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}


def device_credentials(
    core: client.CoreV1Api, sensor: WeatherSensor, fleet: SensorFleet | None
) -> Credentials:
    """Raises NotIssued while a Secret is missing or incomplete."""
    ns, device = sensor.metadata.namespace, sensor.spec.device_id
    tls = _secret(core, ns, device_secret_name(device))
    missing = [k for k in ("ca.crt", "tls.crt", "tls.key") if not tls.get(k)]
    if missing:
        raise NotIssued(f"Secret {ns}/{device_secret_name(device)} lacks {', '.join(missing)}")
    username = password = None
    if fleet is not None and fleet.spec.broker.kind == "nanomq":
        login = _secret(core, ns, credentials_secret_name(device))
        username, password = login.get("username", b"").decode(), login.get("password", b"").decode()
        if not (username and password):
            raise NotIssued(f"Secret {ns}/{credentials_secret_name(device)} has no username/password")
    return Credentials(
        ca=tls["ca.crt"], cert=tls["tls.crt"], key=tls["tls.key"], username=username, password=password
    )


def signing_keys(core: client.CoreV1Api, releases: list[FirmwareRelease]) -> list[str]:
    """The releases' public keys as config.json's `signingKeys` takes them (raw Ed25519, hex), each once."""
    keys: list[str] = []
    for release in releases:
        ref = release.spec.signature.public_key_ref
        if ref is None:
            continue
        try:
            cm = core.read_namespaced_config_map(ref.name, release.metadata.namespace)
        except ApiException as exc:
            if exc.status == 404:
                raise NotIssued(f"ConfigMap {release.metadata.namespace}/{ref.name} does not exist") from None
            raise
        pem = (cm.data or {}).get(ref.key)
        if not pem:
            raise NotIssued(f"ConfigMap {release.metadata.namespace}/{ref.name} has no key {ref.key}")
        text = fw_signing.device_key_text(signatures.load_public_key(pem.encode()))
        if text and text not in keys:
            keys.append(text)
    return keys
