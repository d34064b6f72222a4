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

Signatures are cosign's (sigstore's "simple signing", as `cosign sign --key` makes them), so `cosign
verify --key`, Harbor ("signed", "prevent unsigned") and the project's own readers agree:

- the signed bytes are the payload `{"critical":{"identity":{"docker-reference":<repository>},"image":
  {"docker-manifest-digest":<manifest digest>},"type":"cosign container image signature"},"optional":null}`
  (the manifest digest covers every layer digest and the annotations);
- Ed25519 signs the payload bytes themselves, ECDSA P-256 their SHA-256 (ASN.1 DER signature);
- the payload is the one layer (SIMPLE_SIGNING_LAYER) of a manifest tagged `sha256-<hex>.sig` in the same
  repository (`signature_tag`: the registry has no referrers API), with the base64 signature in the layer
  annotation COSIGN_SIGNATURE_ANNOTATION.

Each artifact's config blob has its own media type (IMAGE_CONFIG, BUNDLE_CONFIG): registries such as Harbor
take the artifact type from it (`application/vnd.<org>.<type>.config.<v>+json`: FIRMWARE.IMAGE,
FIRMWARE.BUNDLE); an empty config shows as UNKNOWN.
"""

from __future__ import annotations

import hashlib
from typing import Literal

from pydantic import BaseModel, Field

# OCI image spec media types
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_IMAGE_CONFIG = "application/vnd.oci.image.config.v1+json"
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
IMAGE_CONFIG = "application/vnd.weatherfleet.firmware.image.config.v1+json"

# cosign's signature format (sigstore/cosign: pkg/oci/static, pkg/types; sigstore: pkg/signature/payload)
SIMPLE_SIGNING_LAYER = "application/vnd.dev.cosign.simplesigning.v1+json"
SIMPLE_SIGNING_TYPE = "cosign container image signature"
COSIGN_SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
# Unsigned hints beside it (cosign ignores annotations it does not know): which key and algorithm signed.
KEY_ID_ANNOTATION = "io.weatherfleet.signature.key-id"
ALGORITHM_ANNOTATION = "io.weatherfleet.signature.algorithm"

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


class ImageConfig(BaseModel):
    """The config blob of an image artifact (what registries show about it)."""

    version: str
    board: str
    features: list[str]
    security_version: int = Field(default=0, ge=0)


class SignatureDocument(BaseModel):
    """A release signature: cosign's simple-signing payload and the signature over its bytes, with what the
    payload names (`manifest_digest`, `docker_reference`) and, as hints, the algorithm and key id. Also the
    file `weatherfleet firmware sign` writes (signature.json) and what OtaFlux hands devices."""

    manifest_digest: str = Field(alias="manifestDigest", description="the digest the payload names")
    algorithm: Algorithm
    key_id: str = Field(alias="keyId", description="sha256 of the public key's DER, 16 hex digits (a hint)")
    signature: str = Field(description="base64; Ed25519: 64 raw bytes, ECDSA: DER")
    payload: str = Field(default="", description="base64 of the simple-signing payload bytes that are signed")
    docker_reference: str = Field(default="", alias="dockerReference")

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
