"""The FirmwareRelease reconciler: from what the registry answered for the release's artifacts, its status
(conditions Resolved, SignatureVerified, Ready; digest, size, CRC32, sha256; for per-device releases the
device counts and the devices it cannot be offered to) and the events to emit.

Pure: the registry I/O is the caller's (`weatherfleet.controller.releases`), which passes one
`ArtifactCheck` per device for a per-device release (`{deviceId}` in the repository) or one for a shared
repository. A per-device release is usable as soon as one device's artifact resolves and (when required)
verifies; every other device is listed in `status.unavailableDevices` with its reason, and the fleet
excludes exactly those from the rollout instead of waiting for them.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from pydantic import BaseModel, Field

from ..models.common import Condition, ConditionStatus, set_condition
from ..models.release import (
    MAX_UNAVAILABLE_LISTED,
    FirmwareRelease,
    FirmwareReleaseStatus,
    ReleaseDevices,
    UnavailableDevice,
)
from .common import Event

SHARED = ""  # the key of the one artifact of a release without {deviceId}
DEVICE_PLACEHOLDER = "{deviceId}"
# reasons that mean "no artifact", for the device counts
_MISSING = ("NotFound",)
_INVALID = ("VersionMismatch", "SignatureMissing", "SignatureInvalid")
# the registry could not be asked: not a verdict on the artifact, so a release whose signature is not
# required is still offered (and one whose signature is required cannot be, as nothing verified it)
_TRANSIENT = ("RegistryUnreachable", "RegistryRefused")


class ArtifactCheck(BaseModel):
    """What the registry said about one artifact of the release."""

    repository: str
    digest: str | None = None
    kind: str | None = None
    version: str | None = Field(default=None, description="the version annotation of the artifact")
    size: int | None = None
    crc32: int | None = None
    sha256: str | None = None
    problem: str | None = Field(
        default=None, description="NotFound, RegistryUnreachable or RegistryRefused when it did not resolve"
    )
    problem_message: str = ""
    signature: bool | None = Field(default=None, description="None: not checked (no key, or not resolved)")
    signature_reason: str = ""
    signature_message: str = ""


class ReleaseObservation(BaseModel):
    now: datetime
    devices: list[str] | None = Field(
        default=None, description="the devices of a per-device release; None for a shared repository"
    )
    artifacts: dict[str, ArtifactCheck] = Field(
        default_factory=dict, description="by deviceId (per-device), or under SHARED"
    )


class ReleaseResult(BaseModel):
    status: FirmwareReleaseStatus
    events: list[Event] = Field(default_factory=list)
    usable: list[str] = Field(default_factory=list, description="per-device: devices it can be offered to")


def per_device(release: FirmwareRelease) -> bool:
    return DEVICE_PLACEHOLDER in release.spec.artifact.repository


def repository_for(release: FirmwareRelease, device_id: str | None = None) -> str:
    """`host/path` of the artifact of this device (per-device releases) or of every device."""
    repository = release.spec.artifact.repository
    return repository.replace(DEVICE_PLACEHOLDER, device_id) if device_id else repository


def _problem(release: FirmwareRelease, check: ArtifactCheck | None) -> tuple[str, str] | None:
    """(reason, message) why this artifact cannot be offered, or None when it can."""
    spec = release.spec
    if check is None:
        return "NotFound", "not looked up yet"
    if check.problem in _TRANSIENT and not spec.signature.required and per_device(release):
        return None  # nothing to verify: OtaFlux and the device check the artifact where it is served
    if check.problem is not None:
        return check.problem, check.problem_message
    if check.version and check.version != spec.version:
        return (
            "VersionMismatch",
            f"the artifact is annotated with version {check.version}, the release says {spec.version}",
        )
    if check.signature is False:
        return check.signature_reason, check.signature_message
    if spec.signature.required and check.signature is not True:
        return (
            check.signature_reason or "SignatureMissing",
            check.signature_message or "signature not checked",
        )
    return None


def _shared(release: FirmwareRelease, check: ArtifactCheck | None, put) -> FirmwareReleaseStatus:
    spec = release.spec
    status = FirmwareReleaseStatus(observedGeneration=release.metadata.generation or None)
    reference = spec.reference()
    if check is None or check.problem is not None:
        reason = check.problem if check else "NotFound"
        message = check.problem_message if check else "not looked up yet"
        if reason == "NotFound":
            message = f"{spec.artifact.repository}:{reference} not found: {message}"
        put("Resolved", "False", reason, message)
        put("SignatureVerified", "Unknown", "NotResolved", "the artifact must be resolved first")
        why = {"NotFound": "artifact not resolved", "RegistryUnreachable": "registry unreachable"}.get(
            reason, "registry refused the request"
        )
        put("Ready", "False", "NotResolved", why)
        return status
    problem = _problem(release, check)
    if problem and problem[0] == "VersionMismatch":
        put("Resolved", "False", *problem)
        put("SignatureVerified", "Unknown", "NotResolved", "the artifact must be resolved first")
        put("Ready", "False", "NotResolved", "version mismatch")
        return status
    put(
        "Resolved",
        "True",
        "Resolved",
        f"{spec.artifact.repository}@{check.digest} ({check.kind}, {check.size} bytes)",
    )
    status = status.model_copy(
        update={"digest": check.digest, "size": check.size, "crc32": check.crc32, "sha256": check.sha256}
    )
    if check.signature is None:
        put("SignatureVerified", "Unknown", check.signature_reason, check.signature_message)
    else:
        put(
            "SignatureVerified",
            "True" if check.signature else "False",
            check.signature_reason,
            check.signature_message,
        )
    if problem is None:
        put("Ready", "True", "Ready", "release can be rolled out")
    else:
        put("Ready", "False", check.signature_reason, check.signature_message)
    return status.model_copy(update={"signature_verified": check.signature})


def _per_device(
    release: FirmwareRelease, devices: list[str], artifacts: dict[str, ArtifactCheck], put
) -> tuple[FirmwareReleaseStatus, list[str]]:
    spec = release.spec
    status = FirmwareReleaseStatus(observedGeneration=release.metadata.generation or None)
    usable, unavailable = [], []
    for device in sorted(devices):
        problem = _problem(release, artifacts.get(device))
        if problem is None:
            usable.append(device)
        else:
            unavailable.append((device, problem))
    checks = [artifacts[d] for d in devices if d in artifacts]
    resolved = [c for c in checks if c.problem is None and c.digest]
    verified = [c for c in resolved if c.signature is True]
    reasons = Counter(reason for _d, (reason, _m) in unavailable)
    digests = {c.digest for c in resolved}
    status = status.model_copy(
        update={
            "devices": ReleaseDevices(
                total=len(devices),
                resolved=len(resolved),
                verified=len(verified),
                missing=sum(n for r, n in reasons.items() if r in _MISSING),
                invalid=sum(n for r, n in reasons.items() if r in _INVALID),
                digests=len(digests),
            ),
            "unavailable_devices": [
                UnavailableDevice(deviceId=d, reason=reason)
                for d, (reason, _m) in unavailable[:MAX_UNAVAILABLE_LISTED]
            ],
        }
    )
    if len(digests) == 1 and resolved:
        one = resolved[0]
        status = status.model_copy(
            update={"digest": one.digest, "size": one.size, "crc32": one.crc32, "sha256": one.sha256}
        )

    def listing(items: list[tuple[str, tuple[str, str]]]) -> str:
        shown = ", ".join(f"{d} ({reason})" for d, (reason, _m) in items[:5])
        return shown + (f" and {len(items) - 5} more" if len(items) > 5 else "")

    def put_true(type_: str, reasons: tuple[str, str], summary: str, failed: list, label: str) -> None:
        """A condition that holds, for all devices (reasons[0]) or some (reasons[1]: the others listed)."""
        detail = f"; {label}: {listing(failed)}" if failed else ""
        put(type_, "True", reasons[1] if failed else reasons[0], summary + detail)

    where = f"{spec.artifact.repository}:{spec.reference()}"
    if not devices:
        put("Resolved", "Unknown", "NoDevices", f"no WeatherSensor with OTA on channel {spec.channel} here")
        put("SignatureVerified", "Unknown", "NoDevices", "nothing to verify")
        put("Ready", "False", "NoDevices", f"no WeatherSensor with OTA on channel {spec.channel} here")
        return status, []
    not_resolved = [(d, p) for d, p in unavailable if p[0] not in _INVALID]
    if not resolved:
        reason, message = not_resolved[0][1] if not_resolved else ("NotFound", "")
        put(
            "Resolved",
            "False",
            reason,
            f"{where}: none of {len(devices)} devices resolved: {listing(not_resolved)} ({message})",
        )
    else:
        summary = f"{where}: {len(resolved)} of {len(devices)} devices, {len(digests)} distinct digest(s)"
        put_true("Resolved", ("Resolved", "PartiallyResolved"), summary, not_resolved, "not resolved")
    bad = [(d, p) for d, p in unavailable if p[0].startswith("Signature") or p[0].startswith("PublicKey")]
    if verified:
        summary = f"{len(verified)} of {len(resolved)} resolved artifacts verified"
        put_true("SignatureVerified", ("Verified", "PartiallyVerified"), summary, bad, "failed")
    elif bad:
        reason, message = bad[0][1]
        put("SignatureVerified", "False", reason, f"no artifact verified: {listing(bad)} ({message})")
    elif resolved:
        first = resolved[0]
        put("SignatureVerified", "Unknown", first.signature_reason or "NotChecked", first.signature_message)
    else:
        put("SignatureVerified", "Unknown", "NotResolved", "the artifacts must be resolved first")
    if usable:
        share = f"{len(usable)} of" if unavailable else "all"
        summary = f"release can be rolled out to {share} {len(devices)} devices"
        put_true("Ready", ("Ready", "PartiallyAvailable"), summary, unavailable, "excluded")
    else:
        reason, message = unavailable[0][1]
        put(
            "Ready",
            "False",
            reason,
            f"no device can be offered this release: {listing(unavailable)} ({message})",
        )
    signature = True if verified else (False if bad and not verified else None)
    return status.model_copy(update={"signature_verified": signature}), usable


def _events(old: FirmwareReleaseStatus, new: FirmwareReleaseStatus) -> list[Event]:
    def cond(status: FirmwareReleaseStatus, type_: str) -> Condition | None:
        return next((c for c in status.conditions if c.type == type_), None)

    events = []
    for type_ in ("Resolved", "SignatureVerified", "Ready"):
        before, after = cond(old, type_), cond(new, type_)
        if after is None or (before and before.status == after.status and before.reason == after.reason):
            continue
        if type_ == "Ready" and after.reason not in ("PartiallyAvailable",) and after.status == "True":
            continue  # Ready=True repeats what Resolved and SignatureVerified said
        if after.status == "False":
            events.append(Event(type="Warning", reason=after.reason, message=after.message))
        elif after.status == "True":
            kind = "Warning" if after.reason.startswith("Partially") else "Normal"
            events.append(Event(type=kind, reason=after.reason, message=after.message))
    return events


def reconcile_release(release: FirmwareRelease, observation: ReleaseObservation) -> ReleaseResult:
    """Status and events of one FirmwareRelease. Deterministic for the same release and observation."""
    generation = release.metadata.generation or None
    conds: list[Condition] = list(release.status.conditions)

    def put(type_: str, status: ConditionStatus, reason: str, message: str) -> None:
        nonlocal conds
        conds = set_condition(conds, type_, status, reason, message, observation.now, generation)

    if observation.devices is None:
        status = _shared(release, observation.artifacts.get(SHARED), put)
        usable: list[str] = []
    else:
        status, usable = _per_device(release, observation.devices, observation.artifacts, put)
    status = status.model_copy(update={"conditions": conds})
    return ReleaseResult(status=status, events=_events(release.status, status), usable=usable)
