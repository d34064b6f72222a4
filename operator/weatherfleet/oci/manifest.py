"""OCI manifests: reading them (`Descriptor`, `Manifest`) and building the exact bytes a push stores, so a
release can be signed offline before it is pushed (`bundle_manifest_bytes`, `image_manifest_bytes`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from . import contract
from .payload import file_checksums
from .references import canonical_json, check_digest, sha256_digest


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        out: dict = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out

    @classmethod
    def from_json(cls, value: dict) -> Descriptor:
        digest = check_digest(str(value.get("digest", "")))
        return cls(
            str(value.get("mediaType", "")), digest, int(value["size"]), dict(value.get("annotations") or {})
        )

    @property
    def title(self) -> str | None:
        return self.annotations.get(contract.ANNOTATION_TITLE)


EMPTY_CONFIG = Descriptor(contract.EMPTY_MEDIA_TYPE, contract.EMPTY_DIGEST, len(contract.EMPTY_BLOB))


@dataclass(frozen=True)
class Manifest:
    """A manifest exactly as stored: `raw` hashes to `digest`."""

    raw: bytes
    digest: str
    media_type: str = contract.OCI_MANIFEST

    @property
    def document(self) -> dict:
        return json.loads(self.raw)

    @property
    def layers(self) -> list[Descriptor]:
        return [Descriptor.from_json(layer) for layer in self.document.get("layers", [])]

    @property
    def config(self) -> Descriptor | None:
        config = self.document.get("config")
        return Descriptor.from_json(config) if config else None

    @property
    def annotations(self) -> dict[str, str]:
        return dict(self.document.get("annotations") or {})

    @property
    def artifact_type(self) -> str | None:
        doc = self.document
        return doc.get("artifactType") or (doc.get("config") or {}).get("mediaType")

    @property
    def kind(self) -> contract.Kind | None:
        """image or bundle; a plain single-layer artifact (as pushed for the original OtaFlux) is an image."""
        annotated = self.annotations.get(contract.ANNOTATION_KIND)
        if annotated in ("image", "bundle"):
            return annotated  # type: ignore[return-value]
        if self.artifact_type == contract.BUNDLE_ARTIFACT_TYPE:
            return "bundle"
        if self.document.get("layers"):
            return "image"
        return None

    @property
    def version(self) -> str | None:
        return self.annotations.get(contract.ANNOTATION_VERSION)

    @property
    def security_version(self) -> int:
        """The signed anti-rollback counter (0 when the release carries none)."""
        text = self.annotations.get(contract.ANNOTATION_SECURITY_VERSION, "0")
        return int(text) if text.isdigit() else 0


def manifest_bytes(
    artifact_type: str, config: Descriptor, layers: list[Descriptor], annotations: dict[str, str]
) -> bytes:
    """The canonical bytes of an artifact manifest (same input, same bytes, same digest)."""
    document: dict = {
        "schemaVersion": 2,
        "mediaType": contract.OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": config.to_json(),
        "layers": [layer.to_json() for layer in layers],
    }
    if annotations:
        document["annotations"] = annotations
    return canonical_json(document)


def bundle_manifest(manifest: contract.BundleManifest) -> tuple[bytes, bytes]:
    """(manifest bytes, config blob) of a bundle: one layer per file, titled with its path, sorted."""
    layers = [
        Descriptor(contract.FILE_LAYER, "sha256:" + f.sha256, f.size, {contract.ANNOTATION_TITLE: f.path})
        for f in sorted(manifest.files, key=lambda f: f.path)
    ]
    config_raw = manifest.model_dump_json().encode()
    config = Descriptor(contract.BUNDLE_CONFIG, sha256_digest(config_raw), len(config_raw))
    annotations = contract.annotations(
        "bundle", manifest.version, manifest.board, manifest.features, manifest.security_version
    )
    return manifest_bytes(contract.BUNDLE_ARTIFACT_TYPE, config, layers, annotations), config_raw


def image_manifest(
    layer: Descriptor, *, version: str, board: str, features: list[str], security_version: int = 0
) -> tuple[bytes, bytes]:
    """(manifest bytes, config blob) of an image: one layer, and a config of its own media type (an empty
    config makes a registry such as Harbor show the artifact as UNKNOWN)."""
    annotations = contract.annotations("image", version, board, features, security_version)
    config_raw = (
        contract.ImageConfig(
            version=version, board=board, features=features, security_version=security_version
        )
        .model_dump_json()
        .encode()
    )
    config = Descriptor(contract.IMAGE_CONFIG, sha256_digest(config_raw), len(config_raw))
    return manifest_bytes(contract.IMAGE_ARTIFACT_TYPE, config, [layer], annotations), config_raw


def image_layer(binary: Path, digest: str, size: int) -> Descriptor:
    """The one layer of an image: the whole binary, titled with its file name."""
    return Descriptor(contract.IMAGE_LAYER, digest, size, {contract.ANNOTATION_TITLE: Path(binary).name})


def bundle_manifest_bytes(manifest: contract.BundleManifest) -> bytes:
    """The exact manifest bytes `OciStore.push_bundle` stores for this bundle, computed offline from the
    BundleManifest alone, so `weatherfleet firmware sign` can sign a bundle before it is pushed
    (`push` checks the pushed digest equals the signed one)."""
    return bundle_manifest(manifest)[0]


def image_manifest_bytes(
    binary: Path,
    *,
    version: str,
    board: str = "",
    features: list[str] | None = None,
    security_version: int = 0,
) -> bytes:
    """The exact manifest bytes `OciStore.push_image` stores for this binary (see bundle_manifest_bytes)."""
    size, _crc, sha = file_checksums(Path(binary))
    return image_manifest(
        image_layer(binary, "sha256:" + sha, size),
        version=version,
        board=board,
        features=features or [],
        security_version=security_version,
    )[0]
