"""Release signatures are cosign's: a release pushed by `weatherfleet firmware push --key` to a real
distribution registry verifies

- with an independent implementation of `cosign verify --key <pem> --insecure-ignore-tlog`, written here
  from cosign's and sigstore's sources (pkg/cosign/verify.go verifyOCISignature + SimpleClaimVerifier,
  pkg/oci/remote signatures under `sha256-<hex>.sig`, sigstore pkg/signature/payload), reading the
  registry over its HTTP API only;
- with the rules Harbor applies when such a manifest is pushed (src/server/middleware/cosign: the tag
  pattern and the simple-signing layer media type make it a signature accessory of the subject, which
  "prevent unsigned" then accepts), and Harbor's artifact type from the config media type;
- with the device's own code under MicroPython (the payload must name the manifest digest the device
  computed; Ed25519 over the payload bytes), given the signature as OtaFlux hands it over.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import urllib.request
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from mpy_harness import raw_public_key, run_micropython

from weatherfleet import oci
from weatherfleet.firmware import push
from weatherfleet.oci import signatures

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"


# --- cosign verify --key, from the spec ---------------------------------------------------------------


def _get(url: str, accept: str | None = None) -> tuple[bytes, dict[str, str]]:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read(), dict(response.headers)


def cosign_verify(registry: str, repository: str, reference: str, public_key_pem: bytes) -> list[dict]:
    """The payloads of the signatures of REPOSITORY:REFERENCE that verify with the key, as `cosign verify
    --key` accepts them (without a transparency log); raises AssertionError when none does."""
    body, headers = _get(f"{registry}/v2/{repository}/manifests/{reference}", OCI_MANIFEST)
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    assert headers.get("Docker-Content-Digest", digest) == digest
    sig_tag = digest.replace(":", "-") + ".sig"  # cosign's legacy tag scheme
    sig_manifest = json.loads(_get(f"{registry}/v2/{repository}/manifests/{sig_tag}", OCI_MANIFEST)[0])
    key = serialization.load_pem_public_key(public_key_pem)
    verified = []
    for layer in sig_manifest["layers"]:
        payload = _get(f"{registry}/v2/{repository}/blobs/{layer['digest']}")[0]
        assert "sha256:" + hashlib.sha256(payload).hexdigest() == layer["digest"]
        b64 = (layer.get("annotations") or {}).get(SIGNATURE_ANNOTATION)
        if not b64:
            continue
        signature = base64.b64decode(b64)
        try:  # sigstore's verifiers: Ed25519 over the message, ECDSA over its SHA-256
            if isinstance(key, ed25519.Ed25519PublicKey):
                key.verify(signature, payload)
            else:
                key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            continue
        claims = json.loads(payload)  # SimpleClaimVerifier
        if claims["critical"]["type"] != "cosign container image signature":
            continue
        if claims["critical"]["image"]["docker-manifest-digest"] != digest:
            continue
        verified.append(claims)
    assert verified, f"no matching signatures for {repository}@{digest}"
    return verified


# --- Harbor --------------------------------------------------------------------------------------------

# src/server/middleware/cosign/cosign.go (reference.NameRegexp simplified to the names used here)
_HARBOR_COSIGN = re.compile(
    r"^/v2/(?P<repository>[a-z0-9._/-]+)/manifests/sha256-(?P<digest>[a-f0-9]{64})\.sig$"
)
# src/controller/artifact/processor/default.go
_HARBOR_TYPE = re.compile(r"^application/vnd\.[^.]*\.(.*)\.config\.[^.]*\+json$")


def harbor_accessory(path: str, manifest: dict) -> tuple[str, str] | None:
    """(repository, subject digest) Harbor links the pushed manifest to as a cosign signature, or None."""
    match = _HARBOR_COSIGN.match(path)
    if match is None:
        return None
    references = [manifest.get("config") or {}, *manifest.get("layers", [])]
    if not any(d.get("mediaType") == SIMPLE_SIGNING for d in references):
        return None
    return match["repository"], "sha256:" + match["digest"]


def harbor_type(config_media_type: str) -> str:
    match = _HARBOR_TYPE.match(config_media_type)
    return match[1].upper() if match else "UNKNOWN"


# --- the release ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keys() -> dict:
    out = {}
    for name, key in (
        ("ed25519", ed25519.Ed25519PrivateKey.generate()),
        ("ecdsa", ec.generate_private_key(ec.SECP256R1())),
    ):
        pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        out[name] = (key, pem)
    return out


def _push_bundle(registry, tmp_path: Path, key, repository: str) -> push.PushResult:
    folder = tmp_path / "bundle"
    folder.mkdir()
    files = {"app.mpy": b"\x01" * 300, "ota.mpy": b"\x02" * 500}
    listed = []
    for name, data in files.items():
        (folder / name).write_bytes(data)
        listed.append({"path": name, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)})
    manifest = {"version": "1.4.0", "board": "esp32-devkit-v1", "features": ["bme280"], "files": listed}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    store = oci.connect(registry.url)
    ref = push.parse_reference(f"{repository}:1.4.0", registry=registry.url)
    return push.push_bundle(store, ref, folder, key=key)


@pytest.mark.parametrize("algorithm", ["ed25519", "ecdsa"])
def test_a_pushed_release_verifies_as_cosign_verifies_it(registry, keys, tmp_path, algorithm) -> None:
    key, public_pem = keys[algorithm]
    repository = f"cosign{algorithm}/dev-01"
    result = _push_bundle(registry, tmp_path, key, repository)
    (claims,) = cosign_verify(registry.url, repository, "1.4.0", public_pem)
    assert claims["critical"]["image"]["docker-manifest-digest"] == result.digest
    assert claims["critical"]["identity"]["docker-reference"] == f"{registry.address}/{repository}"
    assert claims["optional"] is None
    other = ed25519.Ed25519PrivateKey.generate().public_key()
    with pytest.raises(AssertionError, match="no matching signatures"):
        cosign_verify(
            registry.url,
            repository,
            "1.4.0",
            other.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        )


def test_harbor_links_the_signature_and_names_the_artifact_type(registry, keys, tmp_path) -> None:
    key, _ = keys["ed25519"]
    repository = "harbor/dev-01"
    result = _push_bundle(registry, tmp_path, key, repository)
    sig_path = f"/v2/{repository}/manifests/{result.signature_tag}"
    sig_manifest = json.loads(_get(f"{registry.url}{sig_path}", OCI_MANIFEST)[0])
    assert harbor_accessory(sig_path, sig_manifest) == (repository, result.digest)
    bundle = json.loads(_get(f"{registry.url}/v2/{repository}/manifests/1.4.0", OCI_MANIFEST)[0])
    assert harbor_type(bundle["config"]["mediaType"]) == "FIRMWARE.BUNDLE"
    image = tmp_path / "firmware.bin"
    image.write_bytes(b"\xe9" + b"\x00" * 4000)
    store = oci.connect(registry.url)
    pushed = store.push_image("harbor/dev-02", "2.0.0", image, version="2.0.0")
    manifest = json.loads(_get(f"{registry.url}/v2/harbor/dev-02/manifests/{pushed.digest}", OCI_MANIFEST)[0])
    assert harbor_type(manifest["config"]["mediaType"]) == "FIRMWARE.IMAGE"
    config = json.loads(_get(f"{registry.url}/v2/harbor/dev-02/blobs/{manifest['config']['digest']}")[0])
    assert config["version"] == "2.0.0"  # a JSON document Harbor can read, not the empty one


DEVICE_SCRIPT = """
import json, binascii, ota
d = json.load(open('/data/input.json'))
u = ota.Updater('dev-01', 'otaflux', 8080, None, [ota.decode_key(d['key'])], {'bad': []}, '1.0.0')
out = []
for case in d['cases']:
    try:
        u._verify_signature(case['signature'], case['digest'])
        out.append('ok')
    except ota.OtaError as e:
        out.append(str(e))
print('RESULT', json.dumps(out))
"""


def test_the_device_verifies_the_pushed_signature(registry, keys, tmp_path) -> None:
    key, _ = keys["ed25519"]
    repository = "device/dev-01"
    result = _push_bundle(registry, tmp_path, key, repository)
    store = oci.connect(registry.url)
    document = signatures.fetch_signature(store, repository, result.digest)
    served = signatures.device_signature(document)  # what OtaFlux puts into /v1/manifest
    elsewhere = "sha256:" + hashlib.sha256(b"another manifest").hexdigest()
    moved = signatures.device_signature(signatures.sign(key, elsewhere))  # a valid signature, other digest
    ecdsa = signatures.device_signature(signatures.sign(keys["ecdsa"][0], result.digest))
    forged = dict(served, signature=base64.b64encode(bytes(64)).decode())
    cases = [
        {"signature": served, "digest": result.digest},
        {"signature": moved, "digest": result.digest},
        {"signature": forged, "digest": result.digest},
        {"signature": ecdsa, "digest": result.digest},
    ]
    out = run_micropython(DEVICE_SCRIPT, {"key": raw_public_key(key), "cases": cases}).check().json()
    assert out[0] == "ok"
    assert out[1] == f"signature payload does not name manifest {result.digest}"
    assert out[2] == "signature does not verify with any provisioned key"
    assert out[3] == "signature algorithm ecdsa-p256 not supported on the device"
