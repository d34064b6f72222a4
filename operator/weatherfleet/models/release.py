"""FirmwareRelease: one built and signed firmware version, stored as an OCI artifact."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints, model_validator

from .common import Condition, ConfigMapKeyRef, Model, ObjectMeta
from .sensor import SemVer

Digest = Annotated[str, StringConstraints(pattern=r"^sha256:[a-f0-9]{64}$")]
FEATURES: tuple[str, ...] = ("bme280", "scd30", "sds011", "influx", "json", "tls", "mtls", "ota")


class ArtifactRef(Model):
    """Where the artifact lives. `{deviceId}` in the repository stands for each device's own repository,
    the layout the original OtaFlux serves (REPOSITORY_PREFIX + device id)."""

    repository: Annotated[
        str, StringConstraints(pattern=r"^[a-z0-9.:-]+(/([a-z0-9._-]|\{deviceId\})+)+$", max_length=255)
    ]
    tag: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")] | None = None
    digest: Digest | None = None
    kind: Literal["image", "bundle"] = "bundle"

    @model_validator(mode="after")
    def _tag_or_digest(self) -> ArtifactRef:
        if self.tag and self.digest:
            raise ValueError("set tag or digest, not both")
        return self


class SignaturePolicy(Model):
    required: bool = True
    public_key_ref: ConfigMapKeyRef | None = Field(default=None, alias="publicKeyRef")

    @model_validator(mode="after")
    def _key_when_required(self) -> SignaturePolicy:
        if self.required and self.public_key_ref is None:
            raise ValueError(
                "a required signature needs publicKeyRef (a ConfigMap key holding the PEM public key)"
            )
        return self


class FirmwareReleaseSpec(Model):
    version: SemVer
    channel: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9-]{0,30}$")] = "stable"
    board: Literal["esp32-devkit-v1", "esp32-devkitc", "esp32-s3-devkitc"] = "esp32-devkit-v1"
    artifact: ArtifactRef
    features: list[Literal["bme280", "scd30", "sds011", "influx", "json", "tls", "mtls", "ota"]] = Field(
        default_factory=list
    )
    signature: SignaturePolicy = Field(default_factory=lambda: SignaturePolicy(required=False))

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


class FirmwareReleaseStatus(Model):
    observed_generation: int | None = Field(default=None, alias="observedGeneration")
    conditions: list[Condition] = Field(default_factory=list)
    digest: str | None = None
    size: int | None = None
    crc32: int | None = None
    sha256: str | None = None
    signature_verified: bool | None = Field(default=None, alias="signatureVerified")


class FirmwareRelease(Model):
    api_version: Literal["weatherfleet.io/v1alpha1"] = Field(
        default="weatherfleet.io/v1alpha1", alias="apiVersion"
    )
    kind: Literal["FirmwareRelease"] = "FirmwareRelease"
    metadata: ObjectMeta
    spec: FirmwareReleaseSpec
    status: FirmwareReleaseStatus = Field(default_factory=FirmwareReleaseStatus)
