"""`weatherfleet firmware push`: a bundle (one layer per file, config = BundleManifest) or an image (one
layer) to an OCI registry through `weatherfleet.oci`, then its signature under `sha256-<hex>.sig`.

Signatures are checked before anything is uploaded: a signature.json for another digest, or a missing
signature without --allow-unsigned, stops the push with nothing written."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .. import oci
from ..oci import contract, signatures
from . import signing
from .build import load_bundle

Progress = Callable[[str, int], None]  # (file name, bytes done for it) after each upload


class PushError(RuntimeError):
    pass


@dataclass(frozen=True)
class Reference:
    registry: str  # a URL oci.connect understands
    repository: str
    tag: str

    def __str__(self) -> str:
        return f"{urlsplit(self.registry).netloc or self.registry}/{self.repository}:{self.tag}"

    @property
    def name(self) -> str:
        """`host[:port]/repository`: what a signature's payload names (cosign's docker-reference); an OCI
        layout on disk has no host, so the repository alone."""
        host = urlsplit(self.registry).netloc if "://" in self.registry else self.registry
        if self.registry.startswith("oci-layout:") or not host:
            return self.repository
        return f"{host}/{self.repository}"


def parse_reference(ref: str, registry: str | None = None, plain_http: bool = False) -> Reference:
    """`host[:port]/repo:tag`, `http(s)://host[:port]/repo:tag`, or `repo:tag` with `registry` given
    (which may be an `oci-layout:///dir` URL)."""
    text = ref.strip()
    if registry is None:
        scheme = ""
        if "://" in text:
            scheme, text = text.split("://", 1)
            if scheme not in ("http", "https"):
                raise PushError(f"{ref!r}: only http:// and https:// registry references are supported")
        host, _, rest = text.partition("/")
        if not rest or not ("." in host or ":" in host or host == "localhost"):
            raise PushError(
                f"{ref!r}: expected REGISTRY/REPOSITORY:TAG, e.g. localhost:5000/fleet/dev-01:1.2.0"
            )
        registry = f"{scheme or ('http' if plain_http else 'https')}://{host}"
        text = rest
    repository, sep, tag = text.rpartition(":")
    if not sep or "/" in tag:
        raise PushError(f"{ref!r}: a tag is required (REPOSITORY:TAG)")
    try:
        oci.check_repository(repository)
        oci.check_reference(tag)
    except ValueError as error:
        raise PushError(str(error)) from None
    return Reference(registry, repository, tag)


@dataclass(frozen=True)
class PushResult:
    reference: Reference
    digest: str
    kind: str
    uploaded: int  # bytes of layers
    signature_tag: str | None


def _signature(
    digest: str,
    signature_file: Path | None,
    key: signatures.PrivateKey | None,
    allow_unsigned: bool,
    reference: str = signatures.UNNAMED_REFERENCE,
) -> contract.SignatureDocument | None:
    if key is not None:
        return signatures.sign(key, digest, reference)  # the payload names where it is pushed
    if signature_file is not None and signature_file.exists():
        document = signing.read_signature(signature_file)
        if document.manifest_digest != digest:
            raise PushError(
                f"{signature_file} signs {document.manifest_digest}, but this push is {digest}; re-run sign"
            )
        return document
    if allow_unsigned:
        return None
    raise PushError(
        "refusing to push unsigned firmware: run `weatherfleet firmware sign` or pass --key "
        "(or --allow-unsigned for a registry nobody installs from)"
    )


def push_bundle(
    store: oci.OciStore,
    ref: Reference,
    folder: Path,
    *,
    key: signatures.PrivateKey | None = None,
    allow_unsigned: bool = False,
    progress: Progress | None = None,
) -> PushResult:
    manifest, files = load_bundle(folder)
    signed_digest = oci.sha256_digest(oci.bundle_manifest_bytes(manifest))
    document = _signature(signed_digest, Path(folder) / signing.SIGNATURE_FILE, key, allow_unsigned, ref.name)
    uploaded = 0
    for name in sorted(files):
        _digest, size = store.push_blob(ref.repository, files[name])
        uploaded += size
        if progress:
            progress(name, size)
    pushed = store.push_bundle(ref.repository, ref.tag, files, manifest)
    if pushed.digest != signed_digest:
        raise PushError(
            f"registry stored {pushed.digest}, but {signed_digest} was signed (manifest encoding drift)"
        )
    sig_tag = signatures.push_signature(store, ref.repository, document).tag if document else None
    return PushResult(ref, pushed.digest, "bundle", uploaded, sig_tag)


def push_image(
    store: oci.OciStore,
    ref: Reference,
    binary: Path,
    *,
    version: str,
    board: str = "",
    features: list[str] | None = None,
    signature_file: Path | None = None,
    key: signatures.PrivateKey | None = None,
    allow_unsigned: bool = False,
    progress: Progress | None = None,
    security_version: int = 0,
) -> PushResult:
    binary = Path(binary)
    if not binary.is_file():
        raise PushError(f"{binary}: no such image file")
    signed_digest = signing.image_digest(binary, version, board, features or [], security_version)
    document = _signature(signed_digest, signature_file, key, allow_unsigned, ref.name)
    _digest, size = store.push_blob(ref.repository, binary)
    if progress:
        progress(binary.name, size)
    pushed = store.push_image(
        ref.repository,
        ref.tag,
        binary,
        version=version,
        board=board,
        features=features,
        security_version=security_version,
    )
    if pushed.digest != signed_digest:
        raise PushError(
            f"registry stored {pushed.digest}, but {signed_digest} was signed (manifest encoding drift)"
        )
    sig_tag = signatures.push_signature(store, ref.repository, document).tag if document else None
    return PushResult(ref, pushed.digest, "image", size, sig_tag)


def verify_pushed(store: oci.OciStore, ref: Reference, public_keys: list[signatures.PublicKey]) -> str:
    """The digest of REF when its stored signature verifies with one of the keys; raises otherwise."""
    manifest = store.fetch_manifest(ref.repository, ref.tag)
    document = signatures.fetch_signature(store, ref.repository, manifest.digest)
    if document is None:
        raise signing.SigningError(
            f"{ref} ({manifest.digest}) has no signature at {contract.signature_tag(manifest.digest)}"
        )
    signing.check(public_keys, document, manifest.digest)
    return manifest.digest
