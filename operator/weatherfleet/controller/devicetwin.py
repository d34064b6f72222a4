"""Publishing the device twin: each board's desired configuration (reconcilers.devicetwin) as a retained
QoS 1 message on `twin/<deviceId>/desired`, sent on the operator's own MQTT connection.

Level-triggered like the rest of the controller: every sensor reconcile hands over the document it
wants; only a document that differs from the last one sent goes out (a resync sends nothing). After a
(re)connection everything is sent again, since a broker restart without persistence loses retained
messages. The board ignores a document equal to the one it applied, so sending twice costs nothing.
Decommissioning clears the device's retained topics (an empty retained message deletes one)."""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from ..durations import parse_duration
from ..messages import TWIN_BASE, desired_topic, status_topic
from ..reconcilers.certificates import CERT_MANAGER_API, device_secret_name
from ..reconcilers.common import DEVICE_LABEL, Event, labels
from ..reconcilers.credentials import (
    CSR_LABEL,
    CsrRejected,
    approval,
    certificate_request,
    csr_digest,
    is_approved,
    issued_certificate,
    review_csr,
)
from ..reconcilers.revocation import (
    CRL_CONFIGMAP,
    certificate_serial,
    crl_config_map,
    revocation_list,
    revoked_serials,
)

log = logging.getLogger(__name__)
Publish = Callable[[str, bytes, bool], bool]


class TwinPublisher:
    def __init__(self, publish: Publish) -> None:
        self._publish = publish
        self._lock = threading.Lock()
        self._sent: dict[str, str] = {}
        self.published = 0

    def desired(self, device_id: str, text: str) -> bool:
        """Send the desired configuration if it changed; whether a message went out."""
        with self._lock:
            if self._sent.get(device_id) == text:
                return False
        if not self._publish(desired_topic(device_id), text.encode(), True):
            return False  # not connected: sent again after the connection (forget_all + resync)
        with self._lock:
            self._sent[device_id] = text
            self.published += 1
        log.info("desired configuration published", extra={"device": device_id})
        return True

    def cert(self, device_id: str, pem: str) -> bool:
        """Send a signed certificate (retained, so a board that was offline gets it on reconnecting)."""
        text = json.dumps({"cert": pem})
        key = f"cert:{device_id}"
        with self._lock:
            if self._sent.get(key) == text:
                return False
        if not self._publish(f"{TWIN_BASE}/{device_id}/cert", text.encode(), True):
            return False
        with self._lock:
            self._sent[key] = text
        log.info("renewed certificate published", extra={"device": device_id})
        return True

    def forget_all(self) -> None:
        with self._lock:
            self._sent.clear()

    def decommission(self, device_id: str, prefix: str) -> None:
        """Clear what the broker keeps for a deleted device: its desired configuration, any certificate
        sent to it, and its retained status (which would otherwise announce a device that is gone)."""
        with self._lock:
            self._sent.pop(device_id, None)
            self._sent.pop(f"cert:{device_id}", None)
        for topic in (
            desired_topic(device_id),
            f"{TWIN_BASE}/{device_id}/cert",
            status_topic(device_id, prefix),
        ):
            self._publish(topic, b"", True)
        log.info("retained topics of a decommissioned device cleared", extra={"device": device_id})


def decommission(ctl: Any, body: dict) -> None:
    """A WeatherSensor was deleted (`ctl`: the Controller): clear its retained topics on the broker. Its
    children go by owner references; the fleet's next ACL leaves it out."""
    device_id = (body.get("spec") or {}).get("deviceId")
    namespace = body["metadata"].get("namespace") or ""
    if not device_id:
        return
    if ctl.devices.get(device_id) == ("WeatherSensor", namespace, body["metadata"]["name"]):
        ctl.devices.pop(device_id, None)
    prefix = "sensors"
    fleet_name = (body.get("status") or {}).get("fleet")
    for fleet in ctl.cached_fleets(namespace):
        if fleet.metadata.name == fleet_name:
            prefix = fleet.spec.broker.topic_prefix
    twin = getattr(ctl, "twin", None)
    if twin is not None:
        twin.decommission(device_id, prefix)
    serials = (getattr(ctl, "device_serials", None) or {}).pop(device_id, set())
    serials |= _serials_in_cache(ctl, namespace, device_id, body["metadata"].get("uid") or "")
    revoke(ctl, device_id, serials)


# Where the CA's key is, for the CRL: OperatorSettings.crl_ca_secret, from this variable.
CRL_CA_SECRET_ENV = "WEATHERFLEET_CRL_CA_SECRET"


def _serials_in_cache(ctl: Any, namespace: str, device_id: str, uid: str) -> set[int]:
    """Serials of the device's certificates still in the cache: the Secret cert-manager issued at
    provisioning and the signed renewals."""
    found: set[int] = set()
    secret = ctl.cache.get("Secret", namespace, device_secret_name(device_id))
    crt = ((secret or {}).get("data") or {}).get("tls.crt")
    if crt:
        try:
            serial = certificate_serial(base64.b64decode(crt))
        except ValueError:
            serial = None
        if serial is not None:
            found.add(serial)
    for r in ctl.cache.owned_by(uid) if uid else []:  # the owner index: no scan of the namespace
        if (
            r.get("kind") == "CertificateRequest"
            and (r["metadata"].get("labels") or {}).get(DEVICE_LABEL) == device_id
        ):
            pem = issued_certificate(r)
            serial = certificate_serial(pem) if pem else None
            if serial is not None:
                found.add(serial)
    return found


def note_serials(ctl: Any, namespace: str, device_id: str, uid: str) -> None:
    """Remember a device's certificate serials while it exists (from its reconcile): when it is deleted,
    garbage collection may have taken its Secret and requests before the operator hears of it."""
    serials = _serials_in_cache(ctl, namespace, device_id, uid)
    if serials:
        if getattr(ctl, "device_serials", None) is None:
            ctl.device_serials = {}
        ctl.device_serials.setdefault(device_id, set()).update(serials)


def revoke(ctl: Any, device_id: str, serials: set[int]) -> bool:
    """Add serials to the fleet CA's CRL ConfigMap (in the operator's namespace). False when there is no
    CA key to sign with or nothing to add."""
    if not serials or not _write_crl(ctl, serials):
        return False
    log.info("certificates revoked", extra={"device": device_id, "serials": len(serials)})
    return True


def ensure_crl(ctl: Any) -> None:
    """The CRL exists before anything is revoked (from the fleet reconcile), when the operator may sign one:
    a broker that mounts `weatherfleet-crl` can then start with it (Mosquitto's crlfile must parse, and its
    listener takes the crlfile setting only at start; the file's content it re-reads on SIGHUP). Once per
    operator process."""
    if getattr(ctl, "crl_ensured", False) or not ctl.settings.crl_ca_secret:
        return
    if ctl.kube.get("v1", "ConfigMap", ctl.settings.namespace, CRL_CONFIGMAP) is not None or _write_crl(
        ctl, set()
    ):
        ctl.crl_ensured = True


def _write_crl(ctl: Any, serials: set[int]) -> bool:
    """Sign the live list plus `serials` with the CA key and apply it; False without a CA key pair."""
    ref = ctl.settings.crl_ca_secret
    if not ref:
        return False
    ca_namespace, ca_name = ref.split("/", 1)
    secret = ctl.kube.get("v1", "Secret", ca_namespace, ca_name)
    data = (secret or {}).get("data") or {}
    if not (data.get("tls.crt") and data.get("tls.key")):
        log.error("no CA key pair to sign the CRL with", extra={"secret": ref})
        return False
    namespace = ctl.settings.namespace
    live = ctl.kube.get("v1", "ConfigMap", namespace, CRL_CONFIGMAP)
    everything = revoked_serials(live) | serials
    from datetime import UTC, datetime

    pem = revocation_list(
        base64.b64decode(data["tls.crt"]), base64.b64decode(data["tls.key"]), everything, datetime.now(UTC)
    )
    result = ctl.kube.apply_raw(crl_config_map(namespace, pem, everything, labels(None)), "weatherfleet-crl")
    ctl.cache.put({**result, "apiVersion": "v1", "kind": "ConfigMap"})
    return True


class CsrInbox:
    """Certificate signing requests received over MQTT (paho's thread), taken by the device's reconcile.
    The latest per device; a device has no reason to send more than one at a time."""

    MAX_BYTES = 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, bytes] = {}

    def put(self, device_id: str, payload: bytes) -> bool:
        if len(payload) > self.MAX_BYTES:
            log.warning("oversized CSR message ignored", extra={"device": device_id})
            return False
        try:
            pem = json.loads(payload)["csr"].encode()
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("malformed CSR message ignored", extra={"device": device_id})
            return False
        with self._lock:
            self._pending[device_id] = pem
        return True

    def take(self, device_id: str) -> bytes | None:
        with self._lock:
            return self._pending.pop(device_id, None)


KEEP_REQUESTS = 2  # a device's newest CertificateRequests kept; older ones are deleted


def _age(request: dict, now: Any) -> float:
    from datetime import datetime

    text = request["metadata"].get("creationTimestamp")
    if not text:
        return 0.0
    try:
        return (now - datetime.fromisoformat(text.replace("Z", "+00:00"))).total_seconds()
    except ValueError:
        return 0.0


def renew_credentials(ctl: Any, body: dict, sensor: Any, fleet: Any, now: Any) -> None:
    """One sensor's part in certificates that renew themselves (from its reconcile): a CSR the device sent
    becomes an approved cert-manager CertificateRequest for the fleet's issuer (after review: its own id,
    the fleet's key type), and the newest signed certificate goes back retained on twin/<id>/cert."""
    twin, inbox = getattr(ctl, "twin", None), getattr(ctl, "csrs", None)
    if twin is None or inbox is None or fleet is None:
        return
    device_id = sensor.spec.device_id
    namespace = sensor.metadata.namespace
    note_serials(ctl, namespace, device_id, sensor.metadata.uid)

    def mine() -> list[dict]:
        # through the cache's owner index: a reconcile never scans the namespace's requests
        owned = ctl.cache.owned_by(sensor.metadata.uid) if sensor.metadata.uid else []
        found = [
            r
            for r in owned
            if r.get("kind") == "CertificateRequest"
            and (r["metadata"].get("labels") or {}).get(DEVICE_LABEL) == device_id
        ]
        return sorted(
            found, key=lambda r: (r["metadata"].get("creationTimestamp") or "", r["metadata"]["name"])
        )

    pem = inbox.take(device_id)
    if pem is not None:
        try:
            review_csr(device_id, pem, fleet)
        except CsrRejected as exc:
            log.warning(
                "certificate signing request refused", extra={"device": device_id, "reason": str(exc)}
            )
            ctl.emit(body, [Event(type="Warning", reason="CsrRejected", message=f"{device_id}: {exc}")])
        else:
            digest = csr_digest(pem)
            same = [r for r in mine() if (r["metadata"].get("labels") or {}).get(CSR_LABEL) == digest]
            pending = [r for r in same if not issued_certificate(r)]
            renew_before = parse_duration(fleet.spec.certificates.renew_before)
            recent = same and _age(same[-1], now) < renew_before / 4
            if pending or recent:
                live = (pending or same)[-1]  # a repeat of a request in flight or just answered
            else:
                desired = certificate_request(sensor, fleet, pem, attempt=len(same))
                live = ctl.apply(desired)
                log.info(
                    "certificate request made",
                    extra={"device": device_id, "request": desired["metadata"]["name"]},
                )
            name = live["metadata"]["name"]
            if not is_approved(live):
                conditions = [*((live.get("status") or {}).get("conditions") or []), approval(now, device_id)]
                result = ctl.kube.patch_status(
                    CERT_MANAGER_API, "CertificateRequest", namespace, name, {"conditions": conditions}
                )
                if isinstance(result, dict) and result.get("metadata"):
                    ctl.cache.put({**result, "apiVersion": CERT_MANAGER_API, "kind": "CertificateRequest"})
    requests = mine()
    issued = [(r, issued_certificate(r)) for r in requests]
    issued = [(r, cert) for r, cert in issued if cert]
    if issued:
        twin.cert(device_id, issued[-1][1])
    for old in requests[:-KEEP_REQUESTS]:
        meta = old["metadata"]
        if ctl.kube.delete(
            CERT_MANAGER_API, "CertificateRequest", namespace, meta["name"], meta.get("uid", "")
        ):
            ctl.cache.remove("CertificateRequest", namespace, meta["name"])
