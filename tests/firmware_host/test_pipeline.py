"""`weatherfleet firmware build|keygen|sign|verify|push` through the CLI, against the real device sources,
the real mpy-cross and a real distribution registry."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import pytest

from weatherfleet import oci
from weatherfleet.cli import main
from weatherfleet.firmware import features as feature_table
from weatherfleet.oci import contract, signatures

from .conftest import DEVICE_SOURCES

MPY_MAGIC = ord("M")


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """The device sources; boot.py/main.py stubs are added only while the device code has none yet."""
    if (DEVICE_SOURCES / "boot.py").exists() and (DEVICE_SOURCES / "main.py").exists():
        return DEVICE_SOURCES
    copy = tmp_path / "device-src"
    shutil.copytree(DEVICE_SOURCES, copy)
    for name in ("boot.py", "main.py"):
        if not (copy / name).exists():
            (copy / name).write_text("import sys\n")
    return copy


def build(source: Path, out: Path, features: str, version: str = "1.0.0", *extra: str) -> int:
    return main(
        [
            "firmware",
            "build",
            "--features",
            features,
            "--version",
            version,
            "--out",
            str(out),
            "--source",
            str(source),
            *extra,
        ]
    )


def test_build_selects_feature_files_and_compiles_them(source: Path, tmp_path: Path) -> None:
    assert build(source, tmp_path / "small", "bme280,influx") == 0
    assert build(source, tmp_path / "full", "bme280,scd30,sds011,tls,mtls,ota,influx") == 0
    small = contract.BundleManifest.model_validate_json((tmp_path / "small/manifest.json").read_text())
    full = contract.BundleManifest.model_validate_json((tmp_path / "full/manifest.json").read_text())
    small_files = {f.path for f in small.files}
    assert "bme280.mpy" in small_files and "sds011.mpy" not in small_files and "ota.mpy" not in small_files
    assert {"boot.py", "main.py"} <= small_files, "MicroPython runs boot.py/main.py only as source"
    assert {"scd30.mpy", "sds011.mpy", "ota.mpy", "edverify.mpy"} <= {f.path for f in full.files}
    assert small.features == ["bme280", "influx"]
    for entry in full.files:
        data = (tmp_path / "full" / entry.path).read_bytes()
        assert len(data) == entry.size
        if entry.path.endswith(".mpy"):
            assert data[0] == MPY_MAGIC and data[1] == 6, f"{entry.path} is not mpy v6 bytecode"
    assert sum(f.size for f in small.files) < sum(f.size for f in full.files)


def test_build_is_deterministic(source: Path, tmp_path: Path) -> None:
    from weatherfleet.firmware.signing import bundle_digest

    assert build(source, tmp_path / "a", "bme280,sds011,json") == 0
    assert build(source, tmp_path / "b", "bme280,sds011,json") == 0
    assert bundle_digest(tmp_path / "a") == bundle_digest(tmp_path / "b")


@pytest.mark.parametrize(
    ("features", "message"),
    [
        ("bme280,influx,json", "influx and json conflict"),
        ("bme280,mtls,influx", "mtls requires tls"),
        ("bme280,lora,influx", "unknown feature(s) lora"),
        ("bme280", "payload format"),
        ("tls,influx", "at least one sensor"),
    ],
)
def test_bad_features_are_a_clear_usage_error(
    source: Path, tmp_path: Path, capsys, features: str, message: str
) -> None:
    assert build(source, tmp_path / "out", features) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists(), "a failed build writes nothing"


def test_a_file_that_does_not_compile_fails_the_build_and_writes_nothing(
    source: Path, tmp_path: Path, capsys
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(source, broken)
    (broken / "ring.py").write_text("def broken(:\n")
    assert build(broken, tmp_path / "out", "bme280,influx") == 2
    assert "ring.py" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".build-")]


def test_every_feature_has_its_files_in_the_device_sources() -> None:
    available = {p.name for p in DEVICE_SOURCES.glob("*.py")}
    claimed = feature_table.claimed_files()
    missing = sorted(claimed - available)
    assert not missing, f"features name files the device code does not have: {missing}"


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    assert main(["firmware", "keygen", "--out", str(tmp_path / "keys" / "release")]) == 0
    private, public = tmp_path / "keys/release.key", tmp_path / "keys/release.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    return private, public


def test_sign_and_verify_a_bundle_and_detect_tampering(source: Path, tmp_path: Path, keys, capsys) -> None:
    private, public = keys
    bundle = tmp_path / "bundle"
    assert build(source, bundle, "bme280,sds011,tls,influx") == 0
    assert main(["firmware", "sign", str(bundle), "--key", str(private)]) == 0
    output = capsys.readouterr()
    assert private.read_text() not in output.out + output.err
    assert "PRIVATE KEY" not in output.out + output.err
    assert main(["firmware", "verify", str(bundle), "--public-key", str(public)]) == 0
    # another key does not verify
    assert main(["firmware", "keygen", "--out", str(tmp_path / "other")]) == 0
    assert main(["firmware", "verify", str(bundle), "--public-key", str(tmp_path / "other.pub")]) == 1
    assert "not among the given keys" in capsys.readouterr().err
    # one changed byte in a file: the bundle no longer matches its manifest
    target = bundle / "bme280.mpy"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0x01
    target.write_bytes(bytes(data))
    assert main(["firmware", "verify", str(bundle), "--public-key", str(public)]) == 2
    assert "does not match manifest.json" in capsys.readouterr().err


def test_a_group_readable_private_key_is_refused(tmp_path: Path, keys, source: Path, capsys) -> None:
    private, _public = keys
    private.chmod(0o644)
    assert build(source, tmp_path / "b", "bme280,influx") == 0
    assert main(["firmware", "sign", str(tmp_path / "b"), "--key", str(private)]) == 1
    assert "chmod 600" in capsys.readouterr().err


def test_push_bundle_with_signature_and_verify_from_the_registry(
    registry, source: Path, tmp_path: Path, keys, capsys
) -> None:
    private, public = keys
    bundle = tmp_path / "bundle"
    assert build(source, bundle, "bme280,scd30,tls,ota,influx", "1.4.0") == 0
    assert main(["firmware", "sign", str(bundle), "--key", str(private)]) == 0
    ref = f"{registry.address}/fleet/dev-01:1.4.0"
    assert main(["firmware", "push", ref, "--bundle", str(bundle), "--plain-http"]) == 0
    err = capsys.readouterr().err
    assert "pushed" in err, "the progress bar reports the uploads"
    store = oci.connect(registry.url)
    pushed = store.fetch_manifest("fleet/dev-01", "1.4.0")
    document = json.loads(pushed.raw)
    built = contract.BundleManifest.model_validate_json((bundle / "manifest.json").read_text())
    assert [layer["annotations"][contract.ANNOTATION_TITLE] for layer in document["layers"]] == sorted(
        f.path for f in built.files
    )
    assert {layer["digest"] for layer in document["layers"]} == {"sha256:" + f.sha256 for f in built.files}
    assert document["annotations"][contract.ANNOTATION_VERSION] == "1.4.0"
    assert document["annotations"][contract.ANNOTATION_FEATURES] == "bme280,influx,ota,scd30,tls"
    assert document["annotations"][contract.ANNOTATION_BOARD] == "esp32-devkit-v1"
    signature = signatures.fetch_signature(store, "fleet/dev-01", pushed.digest)
    assert signature is not None and signature.manifest_digest == pushed.digest
    assert signatures.verify([signatures.load_public_key(public.read_bytes())], signature, pushed.digest)
    assert contract.signature_tag(pushed.digest) in store.list_tags("fleet/dev-01")
    assert main(["firmware", "verify", ref, "--public-key", str(public), "--plain-http"]) == 0


def test_push_refuses_unsigned_or_mismatched_signatures_and_writes_nothing(
    registry, source: Path, tmp_path: Path, keys, capsys
) -> None:
    private, _public = keys
    bundle = tmp_path / "bundle"
    assert build(source, bundle, "bme280,influx", "2.0.0") == 0
    ref = f"{registry.address}/fleet/dev-02:2.0.0"
    assert main(["firmware", "push", ref, "--bundle", str(bundle), "--plain-http", "--quiet"]) == 2
    assert "unsigned" in capsys.readouterr().err
    other = tmp_path / "other"
    assert build(source, other, "bme280,json", "2.0.0") == 0
    assert main(["firmware", "sign", str(other), "--key", str(private)]) == 0
    shutil.copy(other / "signature.json", bundle / "signature.json")
    assert main(["firmware", "push", ref, "--bundle", str(bundle), "--plain-http", "--quiet"]) == 2
    assert "re-run sign" in capsys.readouterr().err
    assert oci.connect(registry.url).list_tags("fleet/dev-02") == []


def test_push_image_is_one_layer_signed_while_pushing(registry, tmp_path: Path, keys) -> None:
    private, public = keys
    binary = tmp_path / "micropython-esp32.bin"
    binary.write_bytes(bytes(range(256)) * 400)
    ref = f"{registry.address}/fleet/dev-03:0.9.0"
    assert (
        main(
            [
                "firmware",
                "push",
                ref,
                "--image",
                str(binary),
                "--version",
                "0.9.0",
                "--features",
                "bme280,influx",
                "--key",
                str(private),
                "--plain-http",
                "--quiet",
            ]
        )
        == 0
    )
    store = oci.connect(registry.url)
    manifest = store.fetch_manifest("fleet/dev-03", "0.9.0")
    assert manifest.kind == "image" and len(manifest.layers) == 1
    assert manifest.layers[0].media_type == contract.IMAGE_LAYER
    assert manifest.layers[0].size == binary.stat().st_size
    assert main(["firmware", "verify", ref, "--public-key", str(public), "--plain-http"]) == 0


@pytest.mark.parametrize("ref", ["no-registry-here:1.0", "localhost:5000/fleet/dev-01", "ftp://x/y:1"])
def test_bad_references_are_usage_errors(ref: str, tmp_path: Path, capsys) -> None:
    (tmp_path / "b").mkdir()
    assert main(["firmware", "push", ref, "--bundle", str(tmp_path / "b"), "--allow-unsigned"]) == 2
    assert "error:" in capsys.readouterr().err


def test_bad_input_loses_nothing(source: Path, tmp_path: Path, keys, capsys) -> None:
    private, public = keys
    before = private.read_bytes()
    assert main(["firmware", "keygen", "--out", str(tmp_path / "keys" / "release")]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err
    assert private.read_bytes() == before, "an existing key is never replaced"
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert build(source, out, "bme280,influx") == 2
    assert "not empty" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    bundle = tmp_path / "bundle"
    assert build(source, bundle, "bme280,influx") == 0
    assert main(["firmware", "sign", str(bundle), "--key", str(tmp_path / "missing.key")]) == 1
    assert "cannot read private key" in capsys.readouterr().err
    assert main(["firmware", "verify", str(bundle), "--public-key", str(public)]) == 1
    assert "cannot read signature" in capsys.readouterr().err
    wrong = tmp_path / "wrong.key"  # a public key passed where the private one belongs
    wrong.write_bytes(public.read_bytes())
    wrong.chmod(0o600)
    assert main(["firmware", "sign", str(bundle), "--key", str(wrong)]) == 1
    err = capsys.readouterr().err
    assert "not an unencrypted PEM" in err and "BEGIN" not in err
