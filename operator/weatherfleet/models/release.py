"""FirmwareRelease: one built and signed firmware version, stored as an OCI artifact."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from .common import Channel, Condition, ConfigMapKeyRef, Model, Resource, matching
from .sensor import SemVer

Digest = Annotated[str, matching(r"^sha256:[a-f0-9]{64}$", "a digest: 'sha256:' and 64 lowercase hex digits")]
FEATURES: tuple[str, ...] = ("bme280", "scd30", "sds011", "influx", "json", "tls", "mtls", "ota")


class ArtifactRef(Model):
    """Where the artifact lives. `{deviceId}` in the repository stands for each device's own repository,
    the layout the original OtaFlux serves (REPOSITORY_PREFIX + device id)."""

    repository: Annotated[
        str,
        matching(
            r"^[a-z0-9.:-]+(/([a-z0-9._-]|\{deviceId\})+)+$",
            "an OCI repository like 'registry.example:5000/firmware/{deviceId}' (lowercase; '{deviceId}' "
            "stands for each device)",
            max_length=255,
        ),
    ] = Field(
        description="registry host and repository, e.g. registry.example:5000/firmware/{deviceId}; {deviceId} "
        "stands for each device's own repository"
    )
    tag: (
        Annotated[
            str,
            matching(
                r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$",
                "an OCI tag: letters, digits, '_', '.' and '-', at most 128",
            ),
        ]
        | None
    ) = Field(
        default=None, description="the artifact's tag; default the version (set tag or digest, not both)"
    )
    digest: Digest | None = Field(default=None, description="the artifact's manifest digest, sha256:<64 hex>")
    kind: Literal["image", "bundle"] = Field(
        default="bundle",
        description="image: one layer, a whole firmware binary; bundle: one layer per MicroPython file",
    )

    @model_validator(mode="after")
    def _tag_or_digest(self) -> ArtifactRef:
        if self.tag and self.digest:
            raise ValueError("set tag or digest, not both")
        return self


class SignaturePolicy(Model):
    """Whether the release must be signed, and by which key."""

    required: bool = Field(
        default=True, description="roll out only once the signature verified with the key of publicKeyRef"
    )
    public_key_ref: ConfigMapKeyRef | None = Field(
        default=None,
        alias="publicKeyRef",
        description="a ConfigMap key holding the PEM public key (Ed25519 or ECDSA P-256) that signs releases",
    )

    @model_validator(mode="after")
    def _key_when_required(self) -> SignaturePolicy:
        if self.required and self.public_key_ref is None:
            raise ValueError(
                "a required signature needs publicKeyRef (a ConfigMap key holding the PEM public key)"
            )
        return self


class FirmwareReleaseSpec(Model):
    version: SemVer = Field(
        description="semantic version, as the artifact's annotation says and devices report"
    )
    channel: Channel = Field(
        default="stable", description="release channel; only devices on this channel are offered the release"
    )
    board: Literal["esp32-devkit-v1", "esp32-devkitc", "esp32-s3-devkitc"] = Field(
        default="esp32-devkit-v1", description="the board the firmware is built for"
    )
    artifact: ArtifactRef = Field(description="where the firmware is: OCI repository, tag or digest, kind")
    features: list[Literal["bme280", "scd30", "sds011", "influx", "json", "tls", "mtls", "ota"]] = Field(
        default_factory=list,
        description="what the build includes (sensor drivers, payload format, tls, mtls, ota)",
    )
    signature: SignaturePolicy = Field(
        default_factory=lambda: SignaturePolicy(required=False), description="signature requirement and key"
    )

    @model_validator(mode="after")
    def _features_consistent(self) -> FirmwareReleaseSpec:
        if len(set(self.features)) != len(self.features):
            raise ValueError("features listed more than once")
        if "influx" in self.features and "json" in self.features:
            raise ValueError("features influx and json are exclusive: a build has one payload format")
        if "mtls" in self.features and "tls" not in self.features:
            raise ValueError("feature mtls requires tls")
        return self

    def reference(self) -> str:
        return self.artifact.digest or self.artifact.tag or self.version


UnavailableReason = Literal[
    "NotFound",
    "VersionMismatch",
    "RegistryUnreachable",
    "RegistryRefused",
    "SignatureMissing",
    "SignatureInvalid",
    "SignatureUnavailable",
    "PublicKeyMissing",
    "PublicKeyInvalid",
]
MAX_UNAVAILABLE_LISTED = 1000


class ReleaseDevices(Model):
    """For a per-device release (`{deviceId}` in the repository): how its devices' artifacts fared. The
    devices are the namespace's WeatherSensors with OTA on the release's channel."""

    total: int = Field(default=0, description="devices the release is for")
    resolved: int = Field(default=0, description="devices whose artifact was found and pinned to a digest")
    verified: int = Field(default=0, description="devices whose artifact's signature verified")
    missing: int = Field(default=0, description="devices without an artifact for this release")
    invalid: int = Field(
        default=0, description="devices whose artifact is badly signed or of another version"
    )
    digests: int = Field(default=0, description="distinct manifest digests among the resolved artifacts")


class UnavailableDevice(Model):
    """A device the release is not offered to, and why (the fleet excludes it from the rollout)."""

    device_id: str = Field(alias="deviceId", description="the device")
    reason: UnavailableReason = Field(description="why its artifact cannot be offered")


class FirmwareReleaseStatus(Model):
    """What the operator found in the registry."""

    observed_generation: int | None = Field(
        default=None, alias="observedGeneration", description="the spec generation this status describes"
    )
    conditions: list[Condition] = Field(
        default_factory=list, description="Resolved, SignatureVerified, Ready"
    )
    digest: str | None = Field(
        default=None, description="per-device releases: set when every device has the same"
    )
    size: int | None = Field(
        default=None, description="bytes a device downloads (the image, or the bundle's files)"
    )
    crc32: int | None = Field(
        default=None, description="CRC32 of what a device downloads, as /version reports it"
    )
    sha256: str | None = Field(default=None, description="sha256 of what a device downloads (hex)")
    signature_verified: bool | None = Field(
        default=None,
        alias="signatureVerified",
        description="true: the signature verified with the configured key; false: it did not or is missing; "
        "unset: not checked (yet)",
    )
    devices: ReleaseDevices | None = Field(default=None, description="per-device releases only")
    unavailable_devices: list[UnavailableDevice] = Field(
        default_factory=list,
        alias="unavailableDevices",
        max_length=MAX_UNAVAILABLE_LISTED,
        description="per-device releases: the devices whose artifact is missing or fails a check, sorted",
    )


class FirmwareRelease(Resource):
    kind: Literal["FirmwareRelease"] = "FirmwareRelease"
    spec: FirmwareReleaseSpec = Field(description="the firmware version, its artifact and signature policy")
    status: FirmwareReleaseStatus = Field(
        default_factory=FirmwareReleaseStatus,
        description="written by the operator: resolved digest, size, checksums, signature",
    )
