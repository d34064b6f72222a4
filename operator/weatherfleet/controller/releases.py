"""FirmwareRelease resolution: pin the artifact to its digest, compute what a device checks (size, CRC32,
sha256), and verify its signature with the key from the release's publicKeyRef.

Registry I/O is `weatherfleet.oci`, signature checks `weatherfleet.oci.signatures.verify`. The registry is
asked again only when the spec changed or `release_resync_seconds` passed, so a resync is cheap."""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime

from .. import oci
from ..models import FirmwareRelease, set_condition
from ..models.common import Condition, ConditionStatus
from ..models.release import FirmwareReleaseStatus
from ..oci import contract, signatures
from ..reconcilers.common import Event
from .kube import KubeClient
from .settings import OperatorSettings

log = logging.getLogger(__name__)


class _Conditions:
    def __init__(self, items: list[Condition], now: datetime, generation: int | None) -> None:
        self.items, self.now, self.generation = items, now, generation

    def put(self, type_: str, status: ConditionStatus, reason: str, message: str) -> None:
        self.items = set_condition(self.items, type_, status, reason, message, self.now, self.generation)


def split_repository(repository: str) -> tuple[str, str]:
    """`registry.example:5000/fleet/dev-01` -> (`registry.example:5000`, `fleet/dev-01`)."""
    host, _, path = repository.partition("/")
    return host, path


class ReleaseResolver:
    def __init__(self, settings: OperatorSettings, kube: KubeClient | None = None) -> None:
        self.settings = settings
        self._insecure = {h.strip() for h in settings.registry_insecure_hosts.split(",") if h.strip()}
        self._stores: dict[str, oci.RegistryStore] = {}
        self._last: dict[tuple[str, str], tuple[int, float, FirmwareReleaseStatus, int]] = {}
        self._lock = threading.Lock()

    def store(self, host: str) -> oci.RegistryStore:
        with self._lock:
            if host not in self._stores:
                self._stores[host] = oci.RegistryStore(
                    host, insecure=host in self._insecure, timeout=self.settings.registry_timeout_seconds
                )
            return self._stores[host]

    def reconcile(
        self, release: FirmwareRelease, public_key_pem: str | None, now: datetime
    ) -> tuple[FirmwareReleaseStatus, list[Event], float]:
        """(status, events, seconds until the next look)."""
        key = (release.metadata.namespace, release.metadata.name)
        generation = release.metadata.generation
        cached = self._last.get(key)
        if cached and cached[0] == generation and time.monotonic() - cached[1] < self._delay(cached[3]):
            return cached[2], [], self._delay(cached[3]) - (time.monotonic() - cached[1])
        status, failures = self._resolve(release, public_key_pem, now, cached[3] if cached else 0)
        self._last[key] = (generation, time.monotonic(), status, failures)
        events = self._events(release.status, status)
        return status, events, self._delay(failures)

    def _delay(self, failures: int) -> float:
        if failures == 0:
            return self.settings.release_resync_seconds
        return min(self.settings.backoff_seconds * 2 ** (failures - 1) * 5, self.settings.backoff_max_seconds)

    def _resolve(
        self, release: FirmwareRelease, public_key_pem: str | None, now: datetime, failures: int
    ) -> tuple[FirmwareReleaseStatus, int]:
        spec = release.spec
        gen = release.metadata.generation or None
        conds = _Conditions(list(release.status.conditions), now, gen)
        put = conds.put

        host, path = split_repository(spec.artifact.repository)
        reference = spec.reference()
        status = FirmwareReleaseStatus(observedGeneration=gen)
        if "{deviceId}" in path:
            # Built per device: each device's repository holds its own artifact; OtaFlux resolves those
            # per request. Resolving here would need every device; report it plainly instead.
            put(
                "Resolved",
                "Unknown",
                "PerDeviceRepository",
                f"{spec.artifact.repository}: resolved per device by OtaFlux",
            )
            put(
                "SignatureVerified",
                "Unknown",
                "PerDeviceRepository",
                "verified per device by OtaFlux and the device",
            )
            put(
                "Ready",
                "True" if not spec.signature.required else "False",
                "PerDeviceRepository",
                "per-device artifacts are checked where they are served",
            )
            return status.model_copy(update={"conditions": conds.items}), 0
        try:
            resolved = self.store(host).resolve(path, reference)
        except oci.NotFound as exc:
            put("Resolved", "False", "NotFound", f"{spec.artifact.repository}:{reference} not found: {exc}")
            return self._failed(status, conds, "artifact not resolved"), failures + 1
        except oci.Unreachable as exc:
            put("Resolved", "False", "RegistryUnreachable", str(exc))
            return self._failed(status, conds, "registry unreachable"), failures + 1
        except (oci.OciError, ValueError) as exc:
            put("Resolved", "False", "RegistryRefused", str(exc))
            return self._failed(status, conds, "registry refused the request"), failures + 1
        if resolved.version and resolved.version != spec.version:
            put(
                "Resolved",
                "False",
                "VersionMismatch",
                f"the artifact is annotated with version {resolved.version}, the release says {spec.version}",
            )
            return self._failed(status, conds, "version mismatch"), failures + 1
        put(
            "Resolved",
            "True",
            "Resolved",
            f"{spec.artifact.repository}@{resolved.digest} ({resolved.kind}, {resolved.size} bytes)",
        )
        status = status.model_copy(
            update={
                "digest": resolved.digest,
                "size": resolved.size,
                "crc32": resolved.crc32,
                "sha256": resolved.sha256,
            }
        )
        verified, reason, message = self._verify(
            host, path, resolved.digest, public_key_pem, spec.signature.public_key_ref
        )
        if verified is None:
            put("SignatureVerified", "Unknown", reason, message)
        else:
            put("SignatureVerified", "True" if verified else "False", reason, message)
        ok = verified is True or (not spec.signature.required and verified is not False)
        put(
            "Ready",
            "True" if ok else "False",
            "Ready" if ok else reason,
            "release can be rolled out" if ok else message,
        )
        status = status.model_copy(update={"conditions": conds.items, "signature_verified": verified})
        return status, 0 if ok else failures + 1

    @staticmethod
    def _failed(status: FirmwareReleaseStatus, conds: _Conditions, why: str) -> FirmwareReleaseStatus:
        conds.put("SignatureVerified", "Unknown", "NotResolved", "the artifact must be resolved first")
        conds.put("Ready", "False", "NotResolved", why)
        return status.model_copy(update={"conditions": conds.items})

    def _verify(self, host, path, digest, public_key_pem, ref) -> tuple[bool | None, str, str]:
        if ref is None:
            return None, "NoPublicKey", "no publicKeyRef: signature not checked (signature.required is false)"
        if not public_key_pem:
            return False, "PublicKeyMissing", f"ConfigMap {ref.name} key {ref.key} not found"
        try:
            key = signatures.load_public_key(public_key_pem.encode())
        except ValueError as exc:
            return False, "PublicKeyInvalid", f"ConfigMap {ref.name} key {ref.key}: {exc}"
        try:
            document = signatures.fetch_signature(self.store(host), path, digest)
        except oci.OciError as exc:
            return False, "SignatureUnavailable", str(exc)
        if document is None:
            return False, "SignatureMissing", f"no signature under tag {contract.signature_tag(digest)}"
        if not signatures.verify([key], document, digest):
            return (
                False,
                "SignatureInvalid",
                f"signature {document.key_id} does not verify {digest} with the configured key",
            )
        return True, "Verified", f"{document.algorithm} signature by key {document.key_id}"

    @staticmethod
    def _events(old: FirmwareReleaseStatus, new: FirmwareReleaseStatus) -> list[Event]:
        def cond(status, type_):
            return next((c for c in status.conditions if c.type == type_), None)

        events = []
        for type_ in ("Resolved", "SignatureVerified"):
            before, after = cond(old, type_), cond(new, type_)
            if after is None or (before and before.status == after.status and before.reason == after.reason):
                continue
            if after.status == "False":
                events.append(Event(type="Warning", reason=after.reason, message=after.message))
            elif after.status == "True":
                events.append(Event(type="Normal", reason=after.reason, message=after.message))
        return events
