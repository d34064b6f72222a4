"""Release signatures in cosign's format (see `contract`): Ed25519 or ECDSA P-256 over sigstore's
simple-signing payload that names the manifest digest, stored as cosign stores a key-based signature:
a manifest under the tag `sha256-<hex>.sig` whose one layer is the payload, the base64 signature in the
layer's `dev.cosignproject.cosign/signature` annotation. `cosign verify --key <pem>
--insecure-ignore-tlog` and Harbor accept these; OtaFlux, the operator and the device verify the same bytes.

Signing, verifying, and the registry side."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from . import contract
from .errors import NotFound
from .manifest import Descriptor
from .references import canonical_json, check_digest, check_repository, sha256_digest

if TYPE_CHECKING:
    from .store import OciStore, Pushed

PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey
PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
SIGNATURE_DOCUMENT_LIMIT = 64 * 1024
# What the payload names when the signer does not say where the artifact goes (cosign does not compare it
# with anything; `weatherfleet firmware push --key` names the repository it pushes to).
UNNAMED_REFERENCE = "weatherfleet/firmware"


def simple_signing_payload(manifest_digest: str, docker_reference: str = UNNAMED_REFERENCE) -> bytes:
    """The bytes that are signed, as cosign writes them (Go's encoding/json of sigstore's
    payload.SimpleContainerImage: declared field order, no spaces, `optional` null)."""
    check_digest(manifest_digest)
    document = {
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": manifest_digest},
            "type": contract.SIMPLE_SIGNING_TYPE,
        },
        "optional": None,
    }
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def payload_claims(payload: bytes) -> tuple[str, str] | None:
    """(manifest digest, docker reference) a simple-signing payload names, None when it is no such payload
    (wrong type, missing digest): what cosign's SimpleClaimVerifier reads."""
    try:
        document = json.loads(payload)
        critical = document["critical"]
        if critical["type"] != contract.SIMPLE_SIGNING_TYPE:
            return None
        digest = critical["image"]["docker-manifest-digest"]
        reference = (critical.get("identity") or {}).get("docker-reference") or ""
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return (digest, reference) if isinstance(digest, str) and isinstance(reference, str) else None


def signed_message(document: contract.SignatureDocument) -> bytes:
    """What is signed: the payload bytes."""
    return base64.b64decode(document.payload, validate=True)


def key_id(public_key: PublicKey) -> str:
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()[:16]


def algorithm_of(key: PublicKey) -> contract.Algorithm:
    return "ed25519" if isinstance(key, ed25519.Ed25519PublicKey) else "ecdsa-p256"


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


def sign(
    private_key: PrivateKey, manifest_digest: str, docker_reference: str = UNNAMED_REFERENCE
) -> contract.SignatureDocument:
    """Sign the simple-signing payload naming `manifest_digest` (cosign's key-based signing)."""
    payload = simple_signing_payload(manifest_digest, docker_reference)
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        raw, algorithm = private_key.sign(payload), "ed25519"
    else:
        raw, algorithm = private_key.sign(payload, ec.ECDSA(hashes.SHA256())), "ecdsa-p256"
    return contract.SignatureDocument(
        manifestDigest=manifest_digest,
        algorithm=algorithm,
        keyId=key_id(private_key.public_key()),
        signature=base64.b64encode(raw).decode(),
        payload=base64.b64encode(payload).decode(),
        dockerReference=docker_reference,
    )


def _verifies(key: PublicKey, raw: bytes, payload: bytes) -> bool:
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(raw, payload)
        else:
            key.verify(raw, payload, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def verifying_key(
    public_keys: list[PublicKey], document: contract.SignatureDocument, manifest_digest: str
) -> PublicKey | None:
    """The key that signed a payload naming exactly `manifest_digest`, or None. The key id and algorithm
    in the document are hints only (not signed): every key is tried."""
    try:
        payload = signed_message(document)
        raw = base64.b64decode(document.signature, validate=True)
    except (ValueError, binascii.Error):
        return None
    claims = payload_claims(payload)
    if claims is None or claims[0] != manifest_digest or document.manifest_digest != manifest_digest:
        return None
    hinted = sorted(public_keys, key=lambda k: key_id(k) != document.key_id)
    return next((key for key in hinted if _verifies(key, raw, payload)), None)


def verify(public_keys: list[PublicKey], document: contract.SignatureDocument, manifest_digest: str) -> bool:
    """True when one of the keys signed a payload naming exactly this manifest digest."""
    return verifying_key(public_keys, document, manifest_digest) is not None


def device_signature(document: contract.SignatureDocument) -> dict[str, str]:
    """The signature as OtaFlux hands it to devices (`/v1/manifest`): the device checks that the payload
    names the manifest digest it computed and verifies Ed25519 over the payload bytes."""
    return {
        "algorithm": document.algorithm,
        "keyId": document.key_id,
        "signature": document.signature,
        "payload": document.payload,
    }


# --- the registry side: cosign's `.sig` artifact -----------------------------------------------------


def image_config(payload_digest: str) -> bytes:
    """The config blob of a `.sig` manifest, as go-containerregistry writes it for cosign (an image config
    whose one diff_id is the payload layer)."""
    return canonical_json(
        {
            "architecture": "",
            "config": {},
            "created": "0001-01-01T00:00:00Z",
            "history": [{"created": "0001-01-01T00:00:00Z"}],
            "os": "",
            "rootfs": {"diff_ids": [payload_digest], "type": "layers"},
        }
    )


def signature_manifest(document: contract.SignatureDocument) -> tuple[bytes, bytes, bytes]:
    """(manifest bytes, config blob, payload blob) of the `.sig` artifact for a signature."""
    payload = signed_message(document)
    payload_digest = sha256_digest(payload)
    config = image_config(payload_digest)
    layer = Descriptor(
        contract.SIMPLE_SIGNING_LAYER,
        payload_digest,
        len(payload),
        {
            contract.COSIGN_SIGNATURE_ANNOTATION: document.signature,
            contract.KEY_ID_ANNOTATION: document.key_id,
            contract.ALGORITHM_ANNOTATION: document.algorithm,
        },
    )
    raw = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": contract.OCI_MANIFEST,
            "config": Descriptor(contract.OCI_IMAGE_CONFIG, sha256_digest(config), len(config)).to_json(),
            "layers": [layer.to_json()],
        }
    )
    return raw, config, payload


def push_signature(store: OciStore, repository: str, document: contract.SignatureDocument) -> Pushed:
    """The signature artifact under the tag `sha256-<hex>.sig` of the signed manifest."""
    from .store import Pushed

    check_repository(repository)
    tag = contract.signature_tag(check_digest(document.manifest_digest))
    raw, config, payload = signature_manifest(document)
    store.push_blob(repository, payload)
    store.push_blob(repository, config)
    return Pushed(repository, tag, store.push_manifest(repository, tag, raw), len(raw))


def fetch_signature(
    store: OciStore, repository: str, manifest_digest: str
) -> contract.SignatureDocument | None:
    """The stored signature: the first simple-signing layer of the `.sig` artifact, preferring one whose
    payload names this manifest (one naming another digest comes back as it is, so the caller can say the
    signature covers something else); None when the artifact is unsigned or the signature unreadable."""
    check_repository(repository)
    try:
        manifest = store.fetch_manifest(repository, contract.signature_tag(check_digest(manifest_digest)))
    except NotFound:
        return None
    found: list[contract.SignatureDocument] = []
    for layer in manifest.layers:
        if layer.media_type != contract.SIMPLE_SIGNING_LAYER:
            continue
        signature = layer.annotations.get(contract.COSIGN_SIGNATURE_ANNOTATION)
        if not signature:
            continue
        try:
            payload = store.fetch_blob_bytes(repository, layer.digest, limit=SIGNATURE_DOCUMENT_LIMIT)
        except (NotFound, ValueError):
            continue
        claims = payload_claims(payload)
        if claims is None:
            continue
        algorithm = layer.annotations.get(contract.ALGORITHM_ANNOTATION)
        if algorithm not in ("ed25519", "ecdsa-p256"):
            # cosign's own signature carries no hint: the length of the raw signature tells (Ed25519: 64)
            try:
                algorithm = "ed25519" if len(base64.b64decode(signature)) == 64 else "ecdsa-p256"
            except (ValueError, binascii.Error):
                continue
        found.append(
            contract.SignatureDocument(
                manifestDigest=claims[0],
                algorithm=algorithm,
                keyId=layer.annotations.get(contract.KEY_ID_ANNOTATION, ""),
                signature=signature,
                payload=base64.b64encode(payload).decode(),
                dockerReference=claims[1],
            )
        )
    return next((d for d in found if d.manifest_digest == manifest_digest), found[0] if found else None)
