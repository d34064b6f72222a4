"""The OCI artifact contract shared by `weatherfleet firmware push`, OtaFlux, the operator and the device.

A firmware release is an OCI manifest in the device's repository, tagged with its semantic version:

- *image*: artifactType IMAGE_ARTIFACT_TYPE, one layer (IMAGE_LAYER) holding a full binary;
- *bundle*: artifactType BUNDLE_ARTIFACT_TYPE, a config blob (BUNDLE_CONFIG: version, features, board,
  files with sha256) and one layer per file (FILE_LAYER, path in the `org.opencontainers.image.title`
  annotation), so a device fetches only files whose digest changed.

The signature covers the manifest digest (which covers every layer digest). The registry has no referrers
API, so it is stored as its own artifact under the tag `sha256-<hex>.sig`, the fallback scheme cosign uses.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from pydantic import BaseModel, Field

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

Algorithm = Literal["ed25519", "ecdsa-p256"]
PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey
PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey


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


class SignatureDocument(BaseModel):
    """The one layer of a signature artifact."""

    manifest_digest: str = Field(alias="manifestDigest")
    algorithm: Algorithm
    key_id: str = Field(alias="keyId")
    signature: str  # base64; Ed25519: 64 raw bytes, ECDSA: DER

    model_config = {"populate_by_name": True}


def signature_tag(manifest_digest: str) -> str:
    algorithm, _, hexdigest = manifest_digest.partition(":")
    return f"{algorithm}-{hexdigest}.sig"


def signed_message(manifest_digest: str) -> bytes:
    """What is signed: the manifest digest as ASCII, e.g. b"sha256:ab12..."."""
    return manifest_digest.encode("ascii")


def key_id(public_key: PublicKey) -> str:
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()[:16]


def load_private_key(pem: bytes) -> PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey):
        raise ValueError("signing keys must be Ed25519 or ECDSA P-256")
    return key


def load_public_key(pem: bytes) -> PublicKey:
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey):
        raise ValueError("verification keys must be Ed25519 or ECDSA P-256")
    return key


def sign(private_key: PrivateKey, manifest_digest: str) -> SignatureDocument:
    message = signed_message(manifest_digest)
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        raw, algorithm = private_key.sign(message), "ed25519"
    else:
        raw, algorithm = private_key.sign(message, ec.ECDSA(hashes.SHA256())), "ecdsa-p256"
    return SignatureDocument(
        manifestDigest=manifest_digest,
        algorithm=algorithm,
        keyId=key_id(private_key.public_key()),
        signature=base64.b64encode(raw).decode(),
    )


def verify(public_keys: list[PublicKey], document: SignatureDocument, manifest_digest: str) -> bool:
    """True when one of the keys signed exactly this manifest digest."""
    if document.manifest_digest != manifest_digest:
        return False
    try:
        raw = base64.b64decode(document.signature, validate=True)
    except ValueError:
        return False
    message = signed_message(manifest_digest)
    for key in public_keys:
        if key_id(key) != document.key_id:
            continue
        try:
            if isinstance(key, ed25519.Ed25519PublicKey):
                key.verify(raw, message)
            else:
                key.verify(raw, message, ec.ECDSA(hashes.SHA256()))
            return True
        except InvalidSignature:
            return False
    return False
