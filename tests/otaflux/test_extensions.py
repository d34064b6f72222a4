"""The /v1 extensions: JSON manifest, blobs by digest with Range/ETag/HEAD, bundles."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import zlib
from pathlib import Path

from weatherfleet import oci
from weatherfleet.oci import contract


def test_manifest_matches_the_registry_and_blob_resumes_with_range(
    registry, store, prefix, push_image, otaflux_factory
) -> None:
    firmware = os.urandom(1_500_000)
    pushed = push_image(f"{prefix}dev-07", "2.0.0", firmware)
    server = otaflux_factory({"REGISTRY_URL": registry.url, "REPOSITORY_PREFIX": prefix})

    status, headers, body = server.get("/v1/manifest?device=dev-07")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    doc = json.loads(body)
    assert doc["device"] == "dev-07" and doc["version"] == "2.0.0" and doc["kind"] == "image"
    assert doc["manifestDigest"] == pushed.digest
    assert "sha256:" + hashlib.sha256(doc["manifest"].encode()).hexdigest() == pushed.digest
    assert doc["manifest"].encode() == store.fetch_manifest(f"{prefix}dev-07", "2.0.0").raw
    assert (doc["size"], doc["crc32"]) == (len(firmware), zlib.crc32(firmware))
    assert doc["sha256"] == hashlib.sha256(firmware).hexdigest()
    assert doc["signature"] is None and "files" not in doc

    layer = json.loads(doc["manifest"])["layers"][0]["digest"]
    url = f"/v1/blobs/{layer}?device=dev-07"
    status, headers, _ = server.get(url, method="HEAD")
    assert status == 200 and headers["Content-Length"] == str(len(firmware))
    assert headers["ETag"] == f'"{layer}"' and headers["Accept-Ranges"] == "bytes"

    # An interrupted download: the first 600 000 bytes arrived, then resume from there.
    status, headers, first = server.get(url, {"Range": "bytes=0-599999"})
    assert status == 206 and len(first) == 600_000
    assert headers["Content-Range"] == f"bytes 0-599999/{len(firmware)}"
    status, headers, rest = server.get(url, {"Range": "bytes=600000-"})
    assert status == 206 and first + rest == firmware

    assert server.get(url, {"If-None-Match": f'"{layer}"'})[0] == 304
    status, _, body = server.get(f"/v1/blobs/sha256:{'0' * 64}?device=dev-07")
    assert status == 404
    assert server.get("/v1/blobs/sha256:..%2F..%2Fetc?device=dev-07")[0] == 400
    assert server.get("/v1/blobs/not-a-digest?device=dev-07")[0] == 400

    # The legacy download honours Range as well.
    status, _, tail = server.get("/firmware?device=dev-07", {"Range": "bytes=-1000"})
    assert status == 206 and tail == firmware[-1000:]
    assert server.metric("otaflux_bytes_served_total") == 600_000 + 900_000 + 1000  # HEAD and 304 send none


def test_bundle_manifest_files_and_legacy_tar(
    registry, store, prefix, tmp_path: Path, otaflux_factory
) -> None:
    files = {"main.py": b"import app\napp.run()\n", "lib/app.mpy": os.urandom(4000), "boot.py": b"# boot\n"}
    paths = {}
    for name, content in files.items():
        paths[name] = tmp_path / name.replace("/", "_")
        paths[name].write_bytes(content)
    bundle = contract.BundleManifest(
        version="1.5.0",
        board="esp32",
        features=["bme280"],
        files=[
            contract.BundleFile(path=n, sha256=hashlib.sha256(c).hexdigest(), size=len(c))
            for n, c in files.items()
        ],
    )
    pushed = store.push_bundle(f"{prefix}dev-08", "1.5.0", paths, bundle)
    server = otaflux_factory({"REGISTRY_URL": registry.url, "REPOSITORY_PREFIX": prefix})

    doc = json.loads(server.get("/v1/manifest?device=dev-08")[2])
    assert doc["kind"] == "bundle" and doc["manifestDigest"] == pushed.digest
    listed = {f["path"]: f for f in doc["files"]}
    assert set(listed) == set(files)
    for name, content in files.items():
        entry = listed[name]
        assert entry["digest"] == "sha256:" + hashlib.sha256(content).hexdigest()
        assert (entry["size"], entry["crc32"]) == (len(content), zlib.crc32(content))
        status, _, body = server.get(f"/v1/blobs/{entry['digest']}?device=dev-08")
        assert status == 200 and body == content

    _version, crc, size = server.get("/version?device=dev-08")[2].decode().split("\n")
    tar_bytes = server.get("/firmware?device=dev-08")[2]
    assert (len(tar_bytes), zlib.crc32(tar_bytes)) == (int(size), int(crc))
    assert hashlib.sha256(tar_bytes).hexdigest() == doc["sha256"]
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as archive:
        assert {m.name: archive.extractfile(m).read() for m in archive.getmembers()} == files
    expected = tmp_path / "expected.tar"
    oci.write_bundle_tar([(n, paths[n]) for n in files], expected)
    assert expected.read_bytes() == tar_bytes  # deterministic: same files, same bytes


def test_an_artifact_that_is_not_firmware_is_a_502_with_the_reason(
    registry, store, prefix, otaflux_factory
) -> None:
    repository = f"{prefix}dev-18"
    store.push_blob(repository, contract.EMPTY_BLOB)
    empty = {
        "schemaVersion": 2,
        "mediaType": contract.OCI_MANIFEST,
        "config": {"mediaType": contract.EMPTY_MEDIA_TYPE, "digest": contract.EMPTY_DIGEST, "size": 2},
        "layers": [],
    }
    store.push_manifest(repository, "1.0.0", oci.canonical_json(empty))
    server = otaflux_factory({"REGISTRY_URL": registry.url, "REPOSITORY_PREFIX": prefix})
    for _ in range(2):  # the second answer comes from the remembered failure, not a new fetch
        status, _, body = server.get("/version?device=dev-18")
        assert status == 502 and b"not a firmware artifact" in body
    assert server.metric("otaflux_registry_errors_total", 'kind="artifact"') == 1
