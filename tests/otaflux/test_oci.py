"""weatherfleet.oci against the real distribution registry and an OCI image layout on disk."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
import zlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from weatherfleet import oci
from weatherfleet.oci import contract, signatures
from weatherfleet.services.process import free_port


@pytest.fixture(params=["registry", "layout"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> oci.OciStore:
    if request.param == "registry":
        return oci.connect(request.getfixturevalue("registry").url)
    return oci.connect(f"oci-layout://{tmp_path / 'layout'}")


def _bundle(tmp_path: Path, files: dict[str, bytes], version: str = "1.1.0"):
    paths = {}
    for name, content in files.items():
        path = tmp_path / "src" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        paths[name] = path
    manifest = contract.BundleManifest(
        version=version,
        board="esp32",
        features=["bme280", "scd30"],
        files=[
            contract.BundleFile(path=n, sha256=hashlib.sha256(c).hexdigest(), size=len(c))
            for n, c in files.items()
        ],
    )
    return paths, manifest


def test_image_round_trip(store: oci.OciStore, tmp_path: Path) -> None:
    binary = tmp_path / "firmware.bin"
    binary.write_bytes(bytes(range(256)) * 600)
    pushed = store.push_image("oci-test/img", "1.0.0", binary, version="1.0.0", board="esp32", features=["a"])

    assert store.list_tags("oci-test/img") == ["1.0.0"]
    assert store.manifest_digest("oci-test/img", "1.0.0") == pushed.digest
    manifest = store.fetch_manifest("oci-test/img", "1.0.0")
    assert hashlib.sha256(manifest.raw).hexdigest() == pushed.digest.split(":")[1]
    assert (manifest.kind, manifest.version) == ("image", "1.0.0")
    assert manifest.annotations[contract.ANNOTATION_FEATURES] == "a"
    assert manifest.document["artifactType"] == contract.IMAGE_ARTIFACT_TYPE
    assert [layer.title for layer in manifest.layers] == ["firmware.bin"]

    resolved = store.resolve("oci-test/img", "1.0.0")
    data = binary.read_bytes()
    assert (resolved.digest, resolved.kind, resolved.size) == (pushed.digest, "image", len(data))
    assert resolved.crc32 == zlib.crc32(data)
    assert resolved.sha256 == hashlib.sha256(data).hexdigest()

    out = store.fetch_blob("oci-test/img", manifest.layers[0].digest, tmp_path / "out" / "blob")
    assert out.read_bytes() == data


def test_bundle_layers_config_and_deterministic_tar(store: oci.OciStore, tmp_path: Path) -> None:
    files = {"main.py": b"import app\n", "lib/app.mpy": b"M\x06" + b"x" * 3000}
    paths, manifest = _bundle(tmp_path, files)
    pushed = store.push_bundle("oci-test/bun", "1.1.0", paths, manifest)

    fetched = store.fetch_manifest("oci-test/bun", "1.1.0")
    assert fetched.kind == "bundle"
    assert sorted(layer.title for layer in fetched.layers) == ["lib/app.mpy", "main.py"]
    config = contract.BundleManifest.model_validate_json(
        store.fetch_blob_bytes("oci-test/bun", fetched.config.digest)
    )
    assert config == manifest
    assert fetched.config.media_type == contract.BUNDLE_CONFIG

    first = store.resolve("oci-test/bun", pushed.digest)
    again = store.resolve("oci-test/bun", "1.1.0")
    assert first == oci.Resolved(**{**again.__dict__, "reference": pushed.digest})
    assert {f.path: f.size for f in first.files} == {n: len(c) for n, c in files.items()}
    assert {f.path: f.crc32 for f in first.files} == {n: zlib.crc32(c) for n, c in files.items()}
    assert first.size % 512 == 0 and first.size > sum(len(c) for c in files.values())


def test_bundle_files_must_match_their_manifest(store: oci.OciStore, tmp_path: Path) -> None:
    paths, manifest = _bundle(tmp_path, {"main.py": b"one"})
    paths["main.py"].write_bytes(b"two")
    with pytest.raises(ValueError, match="differs"):
        store.push_bundle("oci-test/bad", "1.0.0", paths, manifest)
    with pytest.raises(ValueError, match="missing"):
        store.push_bundle("oci-test/bad", "1.0.0", {}, manifest)
    assert store.list_tags("oci-test/bad") == []


@pytest.mark.parametrize(
    "make_key", [ed25519.Ed25519PrivateKey.generate, lambda: ec.generate_private_key(ec.SECP256R1())]
)
def test_signature_artifact(store: oci.OciStore, tmp_path: Path, make_key) -> None:
    binary = tmp_path / "fw.bin"
    binary.write_bytes(b"signed firmware")
    repo = f"oci-test/sig-{uuid.uuid4().hex[:8]}"  # the session registry outlives this test
    pushed = store.push_image(repo, "2.0.0", binary, version="2.0.0")
    assert signatures.fetch_signature(store, repo, pushed.digest) is None

    key = make_key()
    sig = signatures.push_signature(store, repo, signatures.sign(key, pushed.digest))
    assert sig.tag == contract.signature_tag(pushed.digest)
    document = signatures.fetch_signature(store, repo, pushed.digest)
    assert signatures.verify([key.public_key()], document, pushed.digest)
    assert not signatures.verify([make_key().public_key()], document, pushed.digest)


def test_missing_things_are_not_found(store: oci.OciStore, tmp_path: Path) -> None:
    assert store.list_tags("oci-test/none") == []
    assert store.manifest_digest("oci-test/none", "1.0.0") is None
    with pytest.raises(oci.NotFound):
        store.fetch_manifest("oci-test/none", "1.0.0")
    with pytest.raises(oci.NotFound):
        store.fetch_blob("oci-test/none", "sha256:" + "0" * 64, tmp_path / "x")


@pytest.mark.parametrize(
    "name", ["../etc", "a/../../b", "UPPER", "a//b", "/abs", "a\x00b", "a" * 300, "dév", "a b", ""]
)
def test_hostile_repository_names_never_reach_a_path_or_url(tmp_path: Path, name: str) -> None:
    store = oci.connect(f"oci-layout://{tmp_path}")
    with pytest.raises(ValueError):
        store.list_tags(name)
    with pytest.raises(ValueError):
        store.fetch_manifest("ok", "../../x")
    with pytest.raises(ValueError):
        store.fetch_blob("ok", "sha256:../../etc/passwd", tmp_path / "x")
    assert list(tmp_path.iterdir()) == []


def test_unreachable_registry_fails_fast_with_a_clear_error() -> None:
    store = oci.connect(f"http://127.0.0.1:{free_port()}", timeout=2)
    started = time.monotonic()
    with pytest.raises(oci.Unreachable, match="unreachable"):
        store.list_tags("fw/dev-01")
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("url", "kind", "scheme"),
    [
        ("http://127.0.0.1:5000", oci.RegistryStore, "http"),
        ("https://registry.example", oci.RegistryStore, "https"),
        ("registry.example:443", oci.RegistryStore, "https"),
        ("oci-layout:///var/lib/fw", oci.LayoutStore, None),
    ],
)
def test_connect_picks_the_store(url: str, kind: type, scheme: str | None) -> None:
    store = oci.connect(url)
    assert isinstance(store, kind)
    if scheme:
        assert store.scheme == scheme


@pytest.mark.parametrize("url", ["ftp://x", "http://host/path", "oci-layout:", "a/b"])
def test_connect_rejects_bad_urls(url: str) -> None:
    with pytest.raises(ValueError):
        oci.connect(url)


def test_layout_is_a_valid_oci_image_layout(tmp_path: Path) -> None:
    store = oci.connect(f"oci-layout://{tmp_path}")
    binary = tmp_path / "fw.bin"
    binary.write_bytes(b"x" * 10)
    pushed = store.push_image("fleet/dev-01", "1.0.0", binary, version="1.0.0")
    store.push_image("fleet/dev-01", "1.0.0", binary, version="1.0.0")  # same tag again: one index entry
    layout = tmp_path / "fleet" / "dev-01"
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((layout / "index.json").read_text())
    assert [m["digest"] for m in index["manifests"]] == [pushed.digest]
    assert (layout / "blobs" / "sha256" / pushed.digest.split(":")[1]).exists()
