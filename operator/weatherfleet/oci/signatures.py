"""Release signatures: Ed25519 or ECDSA P-256 over the manifest digest, stored as an artifact under the
manifest's `sha256-<hex>.sig` tag (`contract.signature_tag`). Signing, verifying, and the registry side."""

from __future__ import annotations

import base64
import hashlib
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from . import contract
from .errors import NotFound
from .manifest import EMPTY_CONFIG, Descriptor, manifest_bytes
from .references import check_digest, check_repository

if TYPE_CHECKING:
    from .store import OciStore, Pushed

PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey
PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
SIGNATURE_DOCUMENT_LIMIT = 64 * 1024


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


def sign(private_key: PrivateKey, manifest_digest: str) -> contract.SignatureDocument:
    message = signed_message(manifest_digest)
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        raw, algorithm = private_key.sign(message), "ed25519"
    else:
        raw, algorithm = private_key.sign(message, ec.ECDSA(hashes.SHA256())), "ecdsa-p256"
    return contract.SignatureDocument(
        manifestDigest=manifest_digest,
        algorithm=algorithm,
        keyId=key_id(private_key.public_key()),
        signature=base64.b64encode(raw).decode(),
    )


def verify(public_keys: list[PublicKey], document: contract.SignatureDocument, manifest_digest: str) -> bool:
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


def push_signature(store: OciStore, repository: str, document: contract.SignatureDocument) -> Pushed:
    """The signature artifact under the tag `sha256-<hex>.sig` of the signed manifest."""
    from .store import Pushed

    check_repository(repository)
    tag = contract.signature_tag(check_digest(document.manifest_digest))
    body = document.model_dump_json(by_alias=True).encode()
    digest, size = store.push_blob(repository, body)
    store.push_blob(repository, contract.EMPTY_BLOB)
    layer = Descriptor(contract.SIGNATURE_LAYER, digest, size)
    raw = manifest_bytes(contract.SIGNATURE_ARTIFACT_TYPE, EMPTY_CONFIG, [layer], {})
    return Pushed(repository, tag, store.push_manifest(repository, tag, raw), len(raw))


def fetch_signature(
    store: OciStore, repository: str, manifest_digest: str
) -> contract.SignatureDocument | None:
    """The stored signature document, None when the artifact is unsigned (or the document unreadable)."""
    check_repository(repository)
    try:
        manifest = store.fetch_manifest(repository, contract.signature_tag(check_digest(manifest_digest)))
    except NotFound:
        return None
    layers = [layer for layer in manifest.layers if layer.media_type == contract.SIGNATURE_LAYER]
    if not layers:
        return None
    try:
        raw = store.fetch_blob_bytes(repository, layers[0].digest, limit=SIGNATURE_DOCUMENT_LIMIT)
        return contract.SignatureDocument.model_validate_json(raw)
    except (NotFound, ValueError):
        return None
