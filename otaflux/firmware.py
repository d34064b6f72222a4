"""Which firmware a device gets, fetched once: rollout plan or highest semver tag -> manifest digest ->
cached artifact (downloaded, signature-checked, payload prepared on disk).

A device's answer is trusted for `refresh_interval` seconds (or until the plan changes or a webhook says
its repository changed); then one cheap check (tags + HEAD manifest) tells whether the digest moved.
Concurrent requests for a device share one refresh (single-flight), so a burst of devices asking at once
costs the registry one fetch."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gzip
import logging
import re
import shutil
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import zstandard

from weatherfleet import oci, semver
from weatherfleet.oci import signatures

from .cache import Firmware, FirmwareCache
from .metrics import Metrics, RequestStats
from .plan import PlanSource
from .signatures import SignaturePolicy, SignatureRejected

log = logging.getLogger("otaflux.firmware")

# What a device id may look like before anything is built from it (repository name, path, topic).
DEVICE_ID = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,126}[A-Za-z0-9])?$")
RETRY_AFTER_FAILURE = 5.0
FIRMWARE_FILENAME = "firmware.bin"
MISS = object()


class InvalidDevice(ValueError):
    pass


class RegistryDown(Exception):
    """The registry is unreachable and nothing is cached for the device."""


class ArtifactUnusable(oci.OciError):
    """The artifact exists but cannot be served (not a firmware artifact, corrupt)."""


def check_device(device: str | None) -> str:
    if not device:
        raise InvalidDevice("Missing required query parameter: 'device'")
    if not DEVICE_ID.fullmatch(device) or ".." in device:  # fullmatch: `$` accepts a trailing newline
        raise InvalidDevice("Invalid device id: letters, digits, '.', '_' and '-' only, at most 128")
    return device


@dataclass
class Answer:
    """What a device is told, and until when that holds."""

    firmware: Firmware | None
    error: Exception | None
    checked: float
    plan_generation: int


class FirmwareService:
    def __init__(
        self,
        store: oci.OciStore,
        prefix: str,
        cache: FirmwareCache,
        plan: PlanSource,
        policy: SignaturePolicy,
        metrics: Metrics,
        refresh_interval: float = 30.0,
        on_change: Callable[[Firmware], None] | None = None,
    ) -> None:
        self.store, self.prefix, self.cache, self.plan, self.policy = store, prefix, cache, plan, policy
        self.metrics, self.refresh_interval = metrics, refresh_interval
        self.on_change = on_change or (lambda firmware: None)
        self.stats = RequestStats(metrics)
        self._answers: dict[str, Answer] = {}
        self._inflight: dict[str, asyncio.Future[Answer]] = {}
        self.decisions: dict[str, str] = {}  # device -> why the plan offered what it did (plan.Decision.why)
        self.degraded_reason: str | None = None

    def repository(self, device: str) -> str | None:
        repository = self.prefix + device
        try:
            return oci.check_repository(repository)
        except ValueError:
            return None  # e.g. upper case: no registry can hold it, so nothing is known

    def _fresh(self, answer: Answer | None, now: float) -> bool:
        if answer is None or answer.plan_generation != self.plan.generation:
            return False
        if answer.firmware is not None and answer.firmware.key not in self.cache:
            return False
        ttl = RETRY_AFTER_FAILURE if answer.error is not None else self.refresh_interval
        return now - answer.checked < ttl

    def last_answer(self, device: str) -> Answer | None:
        """What this worker last resolved for the device (fresh or not), without asking anything."""
        return self._answers.get(device)

    def cached(self, device: str) -> Firmware | object | None:
        """The answer without waiting, when a fresh one is known; MISS otherwise. Raises like
        firmware_for. This is the hot path of /version: no task, no thread, no registry."""
        self.plan.current()  # re-reads the plan when it changed; bumps plan.generation
        answer = self._answers.get(device)
        if not self._fresh(answer, time.monotonic()):
            return MISS
        self.stats.hits += 1
        return self._outcome(answer)

    async def firmware_for(self, device: str) -> Firmware | None:
        """The firmware to serve (None: nothing known). Raises SignatureRejected, ArtifactUnusable,
        RegistryDown. `device` must have passed check_device."""
        found = self.cached(device)
        if found is not MISS:
            return found  # type: ignore[return-value]
        self.metrics.cache_misses.inc()
        return self._outcome(await self.refresh(device))

    @staticmethod
    def _outcome(answer: Answer) -> Firmware | None:
        # While the registry is unreachable, what was served before is served on.
        if answer.error is not None and (
            answer.firmware is None or not isinstance(answer.error, oci.Unreachable)
        ):
            raise answer.error
        return answer.firmware

    async def refresh(self, device: str) -> Answer:
        """Ask the registry now; concurrent callers for the same device share one attempt."""
        pending = self._inflight.get(device)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._inflight[device] = future
        try:
            answer = await self._refresh(device)
            future.set_result(answer)
            return answer
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody else waited
            raise
        finally:
            del self._inflight[device]

    async def _refresh(self, device: str) -> Answer:
        previous = self._answers.get(device)
        plan = self.plan.current()
        generation = self.plan.generation  # after current(): the answer belongs to the plan it used
        try:
            firmware, new = await asyncio.to_thread(self._lookup, device, plan)
            if new:
                self.cache.put(firmware)  # on the event loop thread: the index is never touched concurrently
            error = None
            self.degraded_reason = None
        except oci.Unreachable as exc:
            self.metrics.registry_errors.labels("unreachable").inc()
            self.degraded_reason = str(exc)
            log.warning("registry unreachable for %s: %s", device, exc)
            # Keep serving what we had; retry after a short pause rather than on every request.
            firmware = previous.firmware if previous else None
            error = (
                exc
                if firmware is not None
                else RegistryDown(f"registry unreachable, nothing cached for {device}")
            )
            answer = Answer(firmware, error, time.monotonic(), generation)
            self._answers[device] = answer
            return answer
        except SignatureRejected as exc:
            self.metrics.signature_failures.labels(exc.reason).inc()
            log.error("refusing firmware for %s: %s", device, exc)
            firmware, error = None, exc
        except (oci.OciError, ValueError) as exc:
            self.metrics.registry_errors.labels("artifact").inc()
            log.error("cannot serve firmware for %s: %s", device, exc)
            firmware, error = None, ArtifactUnusable(str(exc))
        except Exception as exc:  # a manifest of an unexpected shape must not become a 500 per request
            self.metrics.registry_errors.labels("artifact").inc()
            log.exception("cannot serve firmware for %s", device)
            firmware, error = None, ArtifactUnusable(f"unexpected artifact: {type(exc).__name__}: {exc}")
        answer = Answer(firmware, error, time.monotonic(), generation)
        self._answers[device] = answer
        self._gauges()
        old = previous.firmware if previous else None
        if firmware is not None and old is not None and old.key != firmware.key:
            log.info(
                "%s: now %s (%s), was %s (%s)",
                device,
                firmware.version,
                firmware.manifest.digest,
                old.version,
                old.manifest.digest,
            )
            self.on_change(firmware)
        return answer

    def authorisation_for(self, device: str, version: str) -> dict | None:
        """The signed downgrade authorisation the device's plan holds for `version` (halted candidate going
        back, fleet rollback), as the /v1/manifest answer carries it; None otherwise."""
        plan = self.plan.current()
        fleet = plan.fleet_of(device) if plan is not None else None
        auth = fleet.authorisation_for(device, version) if fleet is not None else None
        return auth.model_dump(by_alias=True) if auth is not None else None

    async def refresh_after_change(self, device: str) -> Answer:
        """A webhook said the repository changed: a refresh that started before the push may have read
        the old state, so wait for it and then ask again."""
        pending = self._inflight.get(device)
        if pending is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(pending)
        return await self.refresh(device)

    async def probe(self) -> None:
        """Check the registry now; sets or clears degraded_reason."""
        try:
            await asyncio.to_thread(self.store.ping)
            self.degraded_reason = None
        except oci.Unreachable as exc:
            if self.degraded_reason is None:
                log.warning("registry unreachable: %s", exc)
            self.degraded_reason = str(exc)
            self.metrics.registry_errors.labels("unreachable").inc()

    def _gauges(self) -> None:
        self.metrics.cache_entries.set(len(self.cache))
        self.metrics.cache_bytes.set(self.cache.bytes)

    # -- blocking part, in a worker thread --

    def _lookup(self, device: str, plan) -> tuple[Firmware | None, bool]:
        """(firmware, whether it was just fetched)."""
        repository = self.repository(device)
        if repository is None:
            return None, False
        if plan is not None:
            # The plan alone decides: None is "no update" (outside the open share with no stable version,
            # on hold, not in any fleet), never the highest tag.
            decision = plan.decide(device)
            self.decisions[device] = decision.why
            version = decision.version
            if version is None:
                return None, False
        else:
            version = semver.highest(self.store.list_tags(repository))
            if version is None:
                return None, False
        digest = self.store.manifest_digest(repository, version)
        if digest is None:
            log.warning("%s: version %s is not in %s", device, version, repository)
            return None, False
        cached = self.cache.get((repository, digest))
        if cached is not None and cached.version == version:
            return cached, False
        return self._fetch(device, repository, version, digest), True

    def _fetch(self, device: str, repository: str, version: str, digest: str) -> Firmware:
        manifest = self.store.fetch_manifest(repository, digest)
        signature = signatures.fetch_signature(self.store, repository, digest)
        signature = self.policy.check(digest, signature)  # before a payload byte is downloaded or served
        # The version announced is the one the signed manifest states, never the tag alone: a signed 1.0.0
        # re-tagged 9.9.9 is not served (a /version client would install 1.0.0 believing it is 9.9.9).
        signed = manifest.version
        if signed is not None and signed != version:
            raise SignatureRejected(
                "version-mismatch",
                f"{repository}:{version} is signed as version {signed}: a re-tagged release is not served",
            )
        if signed is None and self.policy.required:
            raise SignatureRejected(
                "unversioned", f"{repository}:{version} ({digest}) states no version in its signed manifest"
            )
        kind = manifest.kind
        if kind is None:
            raise ArtifactUnusable(f"{repository}:{version} is not a firmware artifact")
        self.metrics.registry_fetches.inc()
        directory = self.cache.directory_for(repository, digest)
        directory.mkdir(parents=True, exist_ok=True)
        try:
            resolved = oci.resolve_manifest(self.store, repository, version, manifest, directory)
        except BaseException:
            if (repository, digest) not in self.cache:  # half a download must not linger on disk
                shutil.rmtree(directory, ignore_errors=True)
            raise
        if kind == "image":
            unpacked = unpack_firmware(resolved.payload, directory / FIRMWARE_FILENAME)
            if unpacked is not None:  # served instead of the archive: its own checks
                size, crc, sha = oci.file_checksums(unpacked)
                resolved = dataclasses.replace(resolved, payload=unpacked, size=size, crc32=crc, sha256=sha)
        log.info("cached %s %s (%s, %d bytes, %s)", repository, version, kind, resolved.size, digest)
        return Firmware.from_resolved(device, resolved, manifest, signature, directory)


GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # a zstd frame (RFC 8878)


def _open_layer(layer: Path, compression: str | None):
    if compression == "gzip":
        return gzip.open(layer, "rb")
    if compression == "zstd":
        # a stream, never the whole archive in memory; frames are read one after another, as a zstd
        # stream written in pieces (`zstd` of a pipe) has several
        return zstandard.ZstdDecompressor().stream_reader(open(layer, "rb"), read_across_frames=True)
    return open(layer, "rb")


def unpack_firmware(layer: Path, dest: Path) -> Path | None:
    """As the original OtaFlux (before it dropped archives): a layer that is a tar, plain or compressed
    with gzip or zstd (recognised by their magic bytes), holding `firmware.bin` is served as that file.
    None when the layer is the binary itself (the usual case)."""
    with open(layer, "rb") as stream:
        head = stream.read(262)
    compression = "gzip" if head[:2] == GZIP_MAGIC else "zstd" if head[:4] == ZSTD_MAGIC else None
    if compression is None and head[257:262] != b"ustar":
        return None
    try:
        with (
            _open_layer(layer, compression) as raw,
            tarfile.open(fileobj=raw, mode="r|") as archive,
        ):
            for member in archive:
                if member.isfile() and member.name.rsplit("/", 1)[-1] == FIRMWARE_FILENAME:
                    with archive.extractfile(member) as source, open(dest, "wb") as out:
                        shutil.copyfileobj(source, out, 1 << 16)
                    return dest
    except (OSError, tarfile.TarError, EOFError, zstandard.ZstdError) as exc:
        if compression is None:
            return None  # a binary that happens to look like a tar header: serve it as it is
        raise ArtifactUnusable(f"layer looks {compression}-compressed but does not unpack: {exc}") from exc
    raise ArtifactUnusable(f"the layer is an archive without {FIRMWARE_FILENAME}")
