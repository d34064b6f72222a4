"""The firmware artifact contract: what `weatherfleet firmware push` writes and OtaFlux, the operator and
the device read. One home for media types, annotations, the bundle's config document and the signature's
location, so the pushing side and the serving side cannot drift apart.

A firmware release is an OCI manifest in the device's repository, tagged with its semantic version:

- *image*: artifactType IMAGE_ARTIFACT_TYPE, one layer (IMAGE_LAYER) holding a full binary;
- *bundle*: artifactType BUNDLE_ARTIFACT_TYPE, a config blob (BUNDLE_CONFIG: version, features, board,
  files with sha256) and one layer per file (FILE_LAYER, its path in the bundle in the
  `org.opencontainers.image.title` annotation), so a device fetches only files whose digest changed.

Every release carries a *security version* (ANNOTATION_SECURITY_VERSION, an integer, 0 when not given)
in its manifest annotations, so the signature covers it: a device refuses a release whose security
version is below the highest it has confirmed (anti-rollback, as ESP-IDF's secure_version), and OtaFlux
and the device take the version from the signed annotation, never from the tag alone.

The signature covers the manifest digest (which covers every layer digest and the annotations). The
registry has no referrers API, so it is stored as its own artifact under the tag `sha256-<hex>.sig`, the
fallback scheme cosign uses (`signature_tag`).
"""

from __future__ import annotations

import hashlib
from typing import Literal

from pydantic import BaseModel, Field

# OCI image spec media types
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_BLOB = b"{}"
EMPTY_DIGEST = "sha256:" + hashlib.sha256(EMPTY_BLOB).hexdigest()
REF_NAME = "org.opencontainers.image.ref.name"

# weatherfleet's artifact types
IMAGE_ARTIFACT_TYPE = "application/vnd.weatherfleet.firmware.image.v1"
BUNDLE_ARTIFACT_TYPE = "application/vnd.weatherfleet.firmware.bundle.v1"
IMAGE_LAYER = "application/vnd.weatherfleet.firmware.image.layer.v1+octet-stream"
FILE_LAYER = "application/vnd.weatherfleet.firmware.file.v1+octet-stream"
BUNDLE_CONFIG = "application/vnd.weatherfleet.firmware.bundle.config.v1+json"
SIGNATURE_ARTIFACT_TYPE = "application/vnd.weatherfleet.signature.v1"
SIGNATURE_LAYER = "application/vnd.weatherfleet.signature.v1+json"

ANNOTATION_TITLE = "org.opencontainers.image.title"
ANNOTATION_VERSION = "org.opencontainers.image.version"
ANNOTATION_FEATURES = "io.weatherfleet.firmware.features"
ANNOTATION_BOARD = "io.weatherfleet.firmware.board"
ANNOTATION_KIND = "io.weatherfleet.firmware.kind"
ANNOTATION_SECURITY_VERSION = "io.weatherfleet.firmware.security-version"

Kind = Literal["image", "bundle"]
Algorithm = Literal["ed25519", "ecdsa-p256"]


class BundleFile(BaseModel):
    path: str
    sha256: str
    size: int


class BundleManifest(BaseModel):
    """The config blob of a bundle artifact; also what `weatherfleet firmware build` writes as manifest.json."""

    version: str
    board: str
    features: list[str]
    files: list[BundleFile]
    security_version: int = Field(default=0, ge=0, description="anti-rollback counter (see the module)")


class SignatureDocument(BaseModel):
    """The one layer of a signature artifact."""

    manifest_digest: str = Field(alias="manifestDigest")
    algorithm: Algorithm
    key_id: str = Field(alias="keyId")
    signature: str  # base64; Ed25519: 64 raw bytes, ECDSA: DER

    model_config = {"populate_by_name": True}


def signature_tag(manifest_digest: str) -> str:
    """Where the signature of a manifest lives: the tag `sha256-<hex>.sig` in the same repository."""
    algorithm, _, hexdigest = manifest_digest.partition(":")
    return f"{algorithm}-{hexdigest}.sig"


def annotations(
    kind: Kind, version: str, board: str, features: list[str], security_version: int = 0
) -> dict[str, str]:
    """The manifest annotations of a release (covered by its signature)."""
    return {
        ANNOTATION_VERSION: version,
        ANNOTATION_BOARD: board,
        ANNOTATION_FEATURES: ",".join(features),
        ANNOTATION_KIND: kind,
        ANNOTATION_SECURITY_VERSION: str(security_version),
    }
