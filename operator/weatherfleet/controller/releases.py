"""FirmwareRelease resolution, the registry side: pin each artifact to its digest, compute what a device
checks (size, CRC32, sha256), and verify its signature with the key from the release's publicKeyRef; the
status is then decided by the pure `weatherfleet.reconcilers.release.reconcile_release`.

A per-device release (`{deviceId}` in the repository) is looked up for each of its devices: a cheap HEAD
per device's repository pins its digest, and the payload and signature are checked once per distinct
digest (builds are content-addressed, so boards with the same feature set share one); another device's
repository with the same digest only has to carry the same signature (one HEAD of the signature tag).
Results per digest are kept (content-addressed: they cannot change), so a resync costs two HEADs per
device.

Registry I/O is `weatherfleet.oci`, signature checks `weatherfleet.oci.signatures`. The registry is asked
again only when the spec or the device set changed, or `release_resync_seconds` passed (sooner, with
backoff, while something is missing), so a resync is cheap."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from .. import oci
from ..models import FirmwareRelease
from ..models.release import FirmwareReleaseStatus
from ..oci import contract, signatures
from ..reconcilers.common import Event
from ..reconcilers.release import (
    SHARED,
    ArtifactCheck,
    ReleaseObservation,
    per_device,
    reconcile_release,
    repository_for,
)
from .kube import KubeClient
from .settings import OperatorSettings

log = logging.getLogger(__name__)
LOOKUP_THREADS = 8
DIGEST_CACHE = 4096


def split_repository(repository: str) -> tuple[str, str]:
    """`registry.example:5000/fleet/dev-01` -> (`registry.example:5000`, `fleet/dev-01`)."""
    host, _, path = repository.partition("/")
    return host, path


def _short(exc: Exception, limit: int = 240) -> str:
    """An exception as one status-sized line (a connection error's repr runs to a screenful)."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _lookup_failed(repository: str, exc: Exception) -> ArtifactCheck:
    """A registry lookup that raised, as the reconciler reads it: NotFound, RegistryUnreachable (no
    answer: tried again) or RegistryRefused (credentials, the repository's name, an answer that is no
    manifest)."""
    if isinstance(exc, oci.NotFound):
        problem = "NotFound"
    elif isinstance(exc, oci.Unreachable):
        problem = "RegistryUnreachable"
    else:
        problem = "RegistryRefused"
    return ArtifactCheck(repository=repository, problem=problem, problem_message=_short(exc))


class _KeyProblem(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


class ReleaseResolver:
    def __init__(self, settings: OperatorSettings, kube: KubeClient | None = None) -> None:
        self.settings = settings
        self._insecure = {h.strip() for h in settings.registry_insecure_hosts.split(",") if h.strip()}
        self._mirrors = dict(
            (part.split("=", 1)[0].strip(), part.split("=", 1)[1].strip())
            for part in settings.registry_mirrors.split(",")
            if "=" in part
        )
        self._stores: dict[str, oci.OciStore] = {}
        # (namespace, name) -> (fingerprint, when, status, failures)
        self._last: dict[tuple[str, str], tuple[str, float, FirmwareReleaseStatus, int]] = {}
        # (host, digest) -> the resolved payload facts (content-addressed: they never change)
        self._payloads: OrderedDict[tuple[str, str], ArtifactCheck] = OrderedDict()
        self._lock = threading.Lock()

    def store(self, host: str) -> oci.OciStore:
        with self._lock:
            if host not in self._stores:
                mirror = self._mirrors.get(host) or self._mirrors.get("*")
                if mirror:
                    self._stores[host] = oci.connect(mirror, timeout=self.settings.registry_timeout_seconds)
                else:
                    self._stores[host] = oci.RegistryStore(
                        host, insecure=host in self._insecure, timeout=self.settings.registry_timeout_seconds
                    )
            return self._stores[host]

    # -- the entry point ----------------------------------------------------------------------------------
    def reconcile(
        self,
        release: FirmwareRelease,
        public_key_pem: str | None,
        now: datetime,
        devices: list[str] | None = None,
    ) -> tuple[FirmwareReleaseStatus, list[Event], float]:
        """(status, events, seconds until the next look). `devices`: the device ids of a per-device
        release (ignored for a shared repository)."""
        key = (release.metadata.namespace, release.metadata.name)
        devices = sorted(devices or []) if per_device(release) else None
        fingerprint = hashlib.sha256(
            repr((release.metadata.generation, devices, public_key_pem)).encode()
        ).hexdigest()
        cached = self._last.get(key)
        if cached and cached[0] == fingerprint and time.monotonic() - cached[1] < self._delay(cached[3]):
            return cached[2], [], self._delay(cached[3]) - (time.monotonic() - cached[1])
        observation = self.observe(release, public_key_pem, now, devices)
        result = reconcile_release(release, observation)
        status = result.status
        complete = all(c.status == "True" for c in status.conditions if c.type == "Ready") and not (
            status.unavailable_devices
        )
        failures = 0 if complete else (cached[3] if cached else 0) + 1
        self._last[key] = (fingerprint, time.monotonic(), status, failures)
        return status, result.events, self._delay(failures)

    def forget(self, namespace: str, name: str) -> None:
        self._last.pop((namespace, name), None)

    def _delay(self, failures: int) -> float:
        if failures == 0:
            return self.settings.release_resync_seconds
        return min(self.settings.backoff_seconds * 2 ** (failures - 1) * 5, self.settings.backoff_max_seconds)

    # -- registry I/O -------------------------------------------------------------------------------------
    def observe(
        self, release: FirmwareRelease, public_key_pem: str | None, now: datetime, devices: list[str] | None
    ) -> ReleaseObservation:
        """Look up the release's artifact(s) in the registry; everything the pure reconciler needs."""
        try:
            key = self._public_key(release, public_key_pem)
            key_problem = None
        except _KeyProblem as problem:
            key, key_problem = None, problem
        reference = release.spec.reference()
        if devices is None:
            check = self._check(repository_for(release), reference, key, key_problem, release)
            return ReleaseObservation(now=now, artifacts={SHARED: check})
        repositories = {d: repository_for(release, d) for d in devices}
        with ThreadPoolExecutor(max_workers=LOOKUP_THREADS, thread_name_prefix="release-lookup") as pool:
            digests = dict(
                zip(
                    devices,
                    pool.map(lambda d: self._digest(repositories[d], reference), devices),
                    strict=True,
                )
            )
        checks: dict[str, ArtifactCheck] = {}
        verified_by_digest: dict[
            str, tuple[str, str | None]
        ] = {}  # digest -> (device checked, signature tag digest)
        for device in devices:
            repository = repositories[device]
            found = digests[device]
            if isinstance(found, ArtifactCheck):  # the lookup failed
                checks[device] = found
                continue
            first = verified_by_digest.get(found)
            if first is not None and key is not None and first[1] is not None:
                # the same content as a device already checked: its repository must carry the same signature
                host, path = split_repository(repository)
                try:
                    same = self.store(host).manifest_digest(path, contract.signature_tag(found)) == first[1]
                except oci.OciError:
                    same = False
                if same:
                    checks[device] = checks[first[0]].model_copy(update={"repository": repository})
                    continue
            checks[device] = self._check(repository, found, key, key_problem, release)
            if found not in verified_by_digest and checks[device].signature is True:
                host, path = split_repository(repository)
                try:
                    sig = self.store(host).manifest_digest(path, contract.signature_tag(found))
                except oci.OciError:
                    sig = None
                verified_by_digest[found] = (device, sig)
        return ReleaseObservation(now=now, devices=devices, artifacts=checks)

    def _public_key(self, release: FirmwareRelease, public_key_pem: str | None):
        ref = release.spec.signature.public_key_ref
        if ref is None:
            return None
        if not public_key_pem:
            raise _KeyProblem("PublicKeyMissing", f"ConfigMap {ref.name} key {ref.key} not found")
        try:
            return signatures.load_public_key(public_key_pem.encode())
        except ValueError as exc:
            raise _KeyProblem("PublicKeyInvalid", f"ConfigMap {ref.name} key {ref.key}: {exc}") from None

    def _digest(self, repository: str, reference: str) -> str | ArtifactCheck:
        """The digest the reference points at in this repository, or a failed check saying why not."""
        host, path = split_repository(repository)
        try:
            digest = self.store(host).manifest_digest(path, reference)
        except (oci.OciError, ValueError) as exc:
            return _lookup_failed(repository, exc)
        if digest is None:
            return ArtifactCheck(
                repository=repository,
                problem="NotFound",
                problem_message=f"{repository}:{reference} not found",
            )
        return digest

    def _check(
        self, repository: str, reference: str, key, key_problem, release: FirmwareRelease
    ) -> ArtifactCheck:
        """Resolve (once per digest) and verify one artifact."""
        host, path = split_repository(repository)
        store = self.store(host)
        try:
            digest = reference if reference.startswith("sha256:") else store.manifest_digest(path, reference)
            if digest is None:
                raise oci.NotFound(f"{repository}:{reference}")
            payload = self._payloads.get((host, digest))
            if payload is None:
                resolved = store.resolve(path, digest)
                payload = ArtifactCheck(
                    repository=repository,
                    digest=resolved.digest,
                    kind=resolved.kind,
                    version=resolved.version,
                    size=resolved.size,
                    crc32=resolved.crc32,
                    sha256=resolved.sha256,
                )
                self._remember(self._payloads, (host, digest), payload)
        except (oci.OciError, ValueError) as exc:
            return _lookup_failed(repository, exc)
        check = payload.model_copy(update={"repository": repository})
        if key_problem is not None:
            return check.model_copy(
                update={
                    "signature": False,
                    "signature_reason": key_problem.reason,
                    "signature_message": key_problem.message,
                }
            )
        if key is None:
            return check.model_copy(
                update={
                    "signature": None,
                    "signature_reason": "NoPublicKey",
                    "signature_message": "no publicKeyRef: signature not checked (signature.required is false)",
                }
            )
        verified, reason, message = self._verify(store, path, digest, key)
        return check.model_copy(
            update={"signature": verified, "signature_reason": reason, "signature_message": message}
        )

    def _verify(self, store: oci.OciStore, path: str, digest: str, key) -> tuple[bool, str, str]:
        try:
            document = signatures.fetch_signature(store, path, digest)
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

    def _remember(self, cache: OrderedDict, key, value) -> None:
        with self._lock:
            cache[key] = value
            cache.move_to_end(key)
            while len(cache) > DIGEST_CACHE:
                cache.popitem(last=False)
