"""Registry I/O for firmware artifacts: push, list, fetch, resolve; used by `weatherfleet firmware push`,
OtaFlux and the operator's FirmwareRelease resolution.

Two stores behind one interface, chosen by the URL given to `connect`:

- an OCI distribution registry (`http://host:port`, `https://host`, or `host:port`), spoken to with
  oras-py's session, container URLs and auth backends (basic auth, or bearer tokens obtained with the
  basic credentials, as Harbor and GHCR want). Requests are issued here rather than through
  `oras.provider.Registry.do_request`, whose retry decorator sleeps for minutes and sets no timeout:
  OtaFlux must notice an unreachable registry in seconds and keep serving from its cache.
- an OCI image layout on disk (`oci-layout:///path/to/dir`), the embedded default of the local mode:
  one layout per repository under that directory, tags as `org.opencontainers.image.ref.name`.

Every name that reaches a URL or a path is validated first (repository grammar of the distribution spec,
tag grammar, `sha256:<64 hex>` digests), so nothing read from a device or a webhook can walk the tree.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import tarfile
import tempfile
import threading
import zlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urljoin, urlsplit

import oras.auth
import oras.container
import oras.provider
import requests

from . import artifacts

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_BLOB = b"{}"
EMPTY_DIGEST = "sha256:" + hashlib.sha256(EMPTY_BLOB).hexdigest()
ACCEPT = ", ".join((OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX))
REF_NAME = "org.opencontainers.image.ref.name"
LAYOUT_SCHEME = "oci-layout"
CHUNK = 1 << 16

_REPOSITORY = re.compile(
    r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$"
)
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")

Kind = Literal["image", "bundle"]


class OciError(RuntimeError):
    """A registry or layout operation failed; the message says which and why."""


class NotFound(OciError):
    """The repository, tag, manifest or blob does not exist."""


class Unreachable(OciError):
    """The registry did not answer (connection refused, timeout, 5xx)."""


def check_repository(name: str) -> str:
    if len(name) > 255 or not _REPOSITORY.match(name):
        raise ValueError(f"{name[:80]!r} is not a valid repository name")
    return name


def check_reference(reference: str) -> str:
    if not (_TAG.match(reference) or _DIGEST.match(reference)):
        raise ValueError(f"{reference[:80]!r} is neither a tag nor a sha256 digest")
    return reference


def check_digest(digest: str) -> str:
    if not _DIGEST.match(digest):
        raise ValueError(f"{digest[:80]!r} is not a sha256 digest")
    return digest


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


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
        return self.annotations.get(artifacts.ANNOTATION_TITLE)


@dataclass(frozen=True)
class Manifest:
    """A manifest exactly as stored: `raw` hashes to `digest`."""

    raw: bytes
    digest: str
    media_type: str = OCI_MANIFEST

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
    def kind(self) -> Kind | None:
        """image or bundle; a plain single-layer artifact (as pushed for the original OtaFlux) is an image."""
        annotated = self.annotations.get(artifacts.ANNOTATION_KIND)
        if annotated in ("image", "bundle"):
            return annotated  # type: ignore[return-value]
        if self.artifact_type == artifacts.BUNDLE_ARTIFACT_TYPE:
            return "bundle"
        if self.document.get("layers"):
            return "image"
        return None

    @property
    def version(self) -> str | None:
        return self.annotations.get(artifacts.ANNOTATION_VERSION)


@dataclass(frozen=True)
class Pushed:
    repository: str
    tag: str
    digest: str
    size: int  # of the manifest


@dataclass(frozen=True)
class ResolvedFile:
    path: str
    digest: str
    size: int
    crc32: int


@dataclass(frozen=True)
class Resolved:
    """A release pinned to its manifest digest, with the checks a device performs on its payload
    (image: the binary; bundle: the deterministic tar of its files, see `write_bundle_tar`)."""

    repository: str
    reference: str
    digest: str
    kind: Kind
    version: str | None
    size: int
    crc32: int
    sha256: str
    files: list[ResolvedFile] = field(default_factory=list)


# --- payload helpers -----------------------------------------------------------------------------------


def file_checksums(path: Path) -> tuple[int, int, str]:
    """(size, crc32, sha256 hex) of a file, read in chunks."""
    size, crc, sha = 0, 0, hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(CHUNK):
            size += len(chunk)
            crc = zlib.crc32(chunk, crc)
            sha.update(chunk)
    return size, crc, sha.hexdigest()


def write_bundle_tar(entries: list[tuple[str, Path]], dest: Path) -> None:
    """The legacy single-download form of a bundle: a ustar archive, entries sorted by path, every
    timestamp, owner and mode fixed, so the same files always give the same bytes (and CRC32)."""
    with tarfile.open(dest, "w", format=tarfile.USTAR_FORMAT) as archive:
        for name, source in sorted(entries):
            info = tarfile.TarInfo(name)
            info.size = source.stat().st_size
            info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = 0, 0o644, 0, 0, "", ""
            with open(source, "rb") as stream:
                archive.addfile(info, stream)


def _annotations(kind: Kind, version: str, board: str, features: list[str]) -> dict[str, str]:
    return {
        artifacts.ANNOTATION_VERSION: version,
        artifacts.ANNOTATION_BOARD: board,
        artifacts.ANNOTATION_FEATURES: ",".join(features),
        artifacts.ANNOTATION_KIND: kind,
    }


def _manifest_bytes(
    artifact_type: str, config: Descriptor, layers: list[Descriptor], annotations: dict[str, str]
) -> bytes:
    document: dict = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": config.to_json(),
        "layers": [layer.to_json() for layer in layers],
    }
    if annotations:
        document["annotations"] = annotations
    return canonical_json(document)


def planned_bundle_manifest(manifest: artifacts.BundleManifest) -> bytes:
    """The exact manifest bytes `OciStore.push_bundle` stores for this bundle, computed offline from the
    BundleManifest alone, so `weatherfleet firmware sign` can sign a bundle before it is pushed.
    (Added by the firmware pipeline; `push` checks the pushed digest equals the signed one.)"""
    layers = [
        Descriptor(artifacts.FILE_LAYER, "sha256:" + f.sha256, f.size, {artifacts.ANNOTATION_TITLE: f.path})
        for f in sorted(manifest.files, key=lambda f: f.path)
    ]
    config_raw = manifest.model_dump_json().encode()
    config = Descriptor(artifacts.BUNDLE_CONFIG, sha256_digest(config_raw), len(config_raw))
    annotations = _annotations("bundle", manifest.version, manifest.board, manifest.features)
    return _manifest_bytes(artifacts.BUNDLE_ARTIFACT_TYPE, config, layers, annotations)


def planned_image_manifest(
    binary: Path, *, version: str, board: str = "", features: list[str] | None = None
) -> bytes:
    """The exact manifest bytes `OciStore.push_image` stores for this binary (see planned_bundle_manifest)."""
    size, _crc, sha = file_checksums(Path(binary))
    layer = Descriptor(
        artifacts.IMAGE_LAYER, "sha256:" + sha, size, {artifacts.ANNOTATION_TITLE: Path(binary).name}
    )
    config = Descriptor(EMPTY_MEDIA_TYPE, EMPTY_DIGEST, len(EMPTY_BLOB))
    annotations = _annotations("image", version, board, features or [])
    return _manifest_bytes(artifacts.IMAGE_ARTIFACT_TYPE, config, [layer], annotations)


# --- the store interface -------------------------------------------------------------------------------


class OciStore(ABC):
    """Where firmware artifacts live. Subclasses move bytes; the artifact shapes are built here once."""

    @abstractmethod
    def ping(self) -> None:
        """Raise Unreachable unless the store answers."""

    @abstractmethod
    def list_tags(self, repository: str) -> list[str]:
        """All tags of the repository; [] when the repository does not exist."""

    @abstractmethod
    def manifest_digest(self, repository: str, reference: str) -> str | None:
        """The digest a reference points at now (a cheap HEAD), None when unknown."""

    @abstractmethod
    def fetch_manifest(self, repository: str, reference: str) -> Manifest:
        """The manifest bytes and digest; raises NotFound."""

    @abstractmethod
    def fetch_blob(self, repository: str, digest: str, dest: Path) -> Path:
        """Stream a blob into `dest` (written atomically, sha256 verified); raises NotFound."""

    @abstractmethod
    def push_blob(self, repository: str, source: Path | bytes) -> tuple[str, int]:
        """Upload a blob (skipped when present); returns (digest, size)."""

    @abstractmethod
    def push_manifest(
        self, repository: str, reference: str, raw: bytes, media_type: str = OCI_MANIFEST
    ) -> str:
        """Store manifest bytes under a tag; returns the digest of exactly those bytes."""

    # -- artifact shapes, shared by both stores --

    def fetch_blob_bytes(self, repository: str, digest: str, limit: int = 1 << 20) -> bytes:
        with tempfile.TemporaryDirectory() as tmp:
            path = self.fetch_blob(repository, digest, Path(tmp) / "blob")
            if path.stat().st_size > limit:
                raise OciError(f"blob {digest} is larger than {limit} bytes")
            return path.read_bytes()

    def _layer(self, repository: str, source: Path | bytes, media_type: str, title: str | None) -> Descriptor:
        digest, size = self.push_blob(repository, source)
        return Descriptor(media_type, digest, size, {artifacts.ANNOTATION_TITLE: title} if title else {})

    def _empty_config(self, repository: str) -> Descriptor:
        self.push_blob(repository, EMPTY_BLOB)
        return Descriptor(EMPTY_MEDIA_TYPE, EMPTY_DIGEST, len(EMPTY_BLOB))

    def push_image(
        self,
        repository: str,
        tag: str,
        binary: Path,
        *,
        version: str,
        board: str = "",
        features: list[str] | None = None,
    ) -> Pushed:
        """One layer holding the whole binary, titled with its file name."""
        check_repository(repository), check_reference(tag)
        layer = self._layer(repository, Path(binary), artifacts.IMAGE_LAYER, Path(binary).name)
        raw = _manifest_bytes(
            artifacts.IMAGE_ARTIFACT_TYPE,
            self._empty_config(repository),
            [layer],
            _annotations("image", version, board, features or []),
        )
        return Pushed(repository, tag, self.push_manifest(repository, tag, raw), len(raw))

    def push_bundle(
        self, repository: str, tag: str, files: Mapping[str, Path], manifest: artifacts.BundleManifest
    ) -> Pushed:
        """One layer per file (title = path in the bundle), config = the BundleManifest JSON. The files
        given must be exactly those the BundleManifest lists, with the same sha256 and size."""
        check_repository(repository), check_reference(tag)
        listed = {f.path: f for f in manifest.files}
        if set(listed) != set(files):
            missing, extra = sorted(set(listed) - set(files)), sorted(set(files) - set(listed))
            raise ValueError(f"bundle files do not match its manifest: missing {missing}, unlisted {extra}")
        layers = []
        for path in sorted(files):
            size, _crc, sha = file_checksums(Path(files[path]))
            if (size, sha) != (listed[path].size, listed[path].sha256):
                raise ValueError(f"{path}: content differs from the bundle manifest (sha256 or size)")
            layers.append(self._layer(repository, Path(files[path]), artifacts.FILE_LAYER, path))
        config_digest, config_size = self.push_blob(repository, manifest.model_dump_json().encode())
        config = Descriptor(artifacts.BUNDLE_CONFIG, config_digest, config_size)
        raw = _manifest_bytes(
            artifacts.BUNDLE_ARTIFACT_TYPE,
            config,
            layers,
            _annotations("bundle", manifest.version, manifest.board, manifest.features),
        )
        return Pushed(repository, tag, self.push_manifest(repository, tag, raw), len(raw))

    def push_signature(self, repository: str, document: artifacts.SignatureDocument) -> Pushed:
        """The signature artifact under the tag `sha256-<hex>.sig` of the signed manifest."""
        check_repository(repository)
        tag = artifacts.signature_tag(check_digest(document.manifest_digest))
        body = document.model_dump_json(by_alias=True).encode()
        layer = self._layer(repository, body, artifacts.SIGNATURE_LAYER, None)
        raw = _manifest_bytes(artifacts.SIGNATURE_ARTIFACT_TYPE, self._empty_config(repository), [layer], {})
        return Pushed(repository, tag, self.push_manifest(repository, tag, raw), len(raw))

    def fetch_signature(self, repository: str, manifest_digest: str) -> artifacts.SignatureDocument | None:
        """The stored signature document, None when the artifact is unsigned (or the document unreadable)."""
        check_repository(repository)
        try:
            manifest = self.fetch_manifest(repository, artifacts.signature_tag(check_digest(manifest_digest)))
        except NotFound:
            return None
        layers = [layer for layer in manifest.layers if layer.media_type == artifacts.SIGNATURE_LAYER]
        if not layers:
            return None
        try:
            raw = self.fetch_blob_bytes(repository, layers[0].digest, limit=64 * 1024)
            return artifacts.SignatureDocument.model_validate_json(raw)
        except (NotFound, ValueError):
            return None

    def resolve(self, repository: str, reference: str, workdir: Path | None = None) -> Resolved:
        """Pin a reference to its digest and compute the payload's size, CRC32 and sha256 (downloads it)."""
        check_repository(repository), check_reference(reference)
        manifest = self.fetch_manifest(repository, reference)
        with tempfile.TemporaryDirectory(dir=workdir) as tmp:
            return resolve_manifest(self, repository, reference, manifest, Path(tmp))


def resolve_manifest(
    store: OciStore, repository: str, reference: str, manifest: Manifest, tmp: Path
) -> Resolved:
    kind = manifest.kind
    layers = manifest.layers
    if kind is None or not layers:
        raise OciError(f"{repository}:{reference} is not a firmware artifact (no layers)")
    if kind == "image":
        layer = layers[0]
        path = store.fetch_blob(repository, layer.digest, tmp / "image")
        size, crc, sha = file_checksums(path)
        return Resolved(repository, reference, manifest.digest, kind, manifest.version, size, crc, sha)
    files, entries = [], []
    for index, layer in enumerate(layers):
        if not layer.title:
            raise OciError(f"{repository}:{reference}: bundle layer {layer.digest} has no title annotation")
        path = store.fetch_blob(repository, layer.digest, tmp / f"file-{index}")
        size, crc, _sha = file_checksums(path)
        files.append(ResolvedFile(layer.title, layer.digest, size, crc))
        entries.append((layer.title, path))
    write_bundle_tar(entries, tmp / "bundle.tar")
    size, crc, sha = file_checksums(tmp / "bundle.tar")
    return Resolved(repository, reference, manifest.digest, kind, manifest.version, size, crc, sha, files)


# --- distribution registry over HTTP -------------------------------------------------------------------


class RegistryStore(OciStore):
    """A distribution-spec registry, via oras-py's session and auth backends, with timeouts."""

    def __init__(
        self,
        host: str,
        *,
        insecure: bool = False,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 30.0,
        tls_verify: bool | str = True,
    ) -> None:
        self.host, self.insecure, self.timeout, self.tls_verify = host, insecure, timeout, tls_verify
        self.scheme = "http" if insecure else "https"
        self._credentials = (username, password) if username else None
        # requests.Session is not safe to share across threads; OtaFlux calls from a thread pool.
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"RegistryStore({self.scheme}://{self.host})"

    def _registry(self) -> oras.provider.Registry:
        registry = getattr(self._local, "registry", None)
        if registry is None:
            registry = oras.provider.Registry(
                hostname=self.host, insecure=self.insecure, tls_verify=self.tls_verify, auth_backend="token"
            )
            if self._credentials:
                registry.auth.set_basic_auth(*self._credentials)
            self._local.registry = registry
        return registry

    def _container(self, repository: str) -> oras.container.Container:
        return oras.container.Container(check_repository(repository), registry=self.host)

    def _url(self, path: str) -> str:
        return f"{self.scheme}://{path}"

    def _request(
        self, method: str, url: str, *, headers: dict | None = None, data=None, stream: bool = False
    ) -> requests.Response:
        registry = self._registry()
        headers = dict(headers or {})
        auth = registry.auth
        if getattr(auth, "token", None):
            headers.update(auth.get_auth_header())
        elif getattr(self._local, "basic", False) and self._credentials:
            headers["Authorization"] = f"Basic {auth._basic_auth}"

        def send(h: dict) -> requests.Response:
            try:
                if hasattr(data, "seek"):
                    data.seek(0)
                return registry.session.request(
                    method,
                    url,
                    headers=h,
                    data=data,
                    stream=stream,
                    timeout=self.timeout,
                    verify=self.tls_verify,
                )
            except requests.RequestException as exc:
                raise Unreachable(f"registry {self.host} unreachable: {type(exc).__name__}: {exc}") from exc

        response = send(headers)
        if response.status_code in (401, 403) and self._credentials:
            challenge = response.headers.get("Www-Authenticate", "")
            if challenge.lower().startswith("basic"):
                self._local.basic = True
                headers["Authorization"] = f"Basic {auth._basic_auth}"
            else:
                try:
                    headers, changed = auth.authenticate_request(response, headers)
                except Exception as exc:
                    raise OciError(f"registry {self.host}: authentication failed: {exc}") from exc
                if not changed:
                    raise OciError(f"registry {self.host}: cannot answer its authentication challenge")
            response = send(headers)
        if response.status_code in (401, 403):
            raise OciError(f"registry {self.host}: access denied ({response.status_code}) for {method} {url}")
        if response.status_code >= 500:
            raise Unreachable(
                f"registry {self.host}: {response.status_code} {response.reason} for {method} {url}"
            )
        return response

    def ping(self) -> None:
        # /v2/ answers 200, or 401 with a challenge: either way the registry is there.
        try:
            answer = self._registry().session.get(
                self._url(f"{self.host}/v2/"), timeout=self.timeout, verify=self.tls_verify
            )
        except requests.RequestException as exc:
            raise Unreachable(f"registry {self.host} unreachable: {type(exc).__name__}: {exc}") from exc
        if answer.status_code >= 500:
            raise Unreachable(f"registry {self.host}: {answer.status_code} {answer.reason}")

    def list_tags(self, repository: str) -> list[str]:
        url: str | None = self._url(self._container(repository).tags_url())
        tags: list[str] = []
        while url:
            response = self._request("GET", url)
            if response.status_code == 404:
                return []
            if response.status_code != 200:
                raise OciError(f"listing tags of {repository}: {response.status_code} {response.text[:200]}")
            tags.extend(response.json().get("tags") or [])
            link = response.headers.get("Link", "")
            match = re.match(r"<([^>]+)>", link)
            url = urljoin(url, match.group(1)) if match else None
        return tags

    def manifest_digest(self, repository: str, reference: str) -> str | None:
        url = self._url(self._container(repository).manifest_url(check_reference(reference)))
        response = self._request("HEAD", url, headers={"Accept": ACCEPT})
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise OciError(f"HEAD manifest {repository}:{reference}: {response.status_code}")
        digest = response.headers.get("Docker-Content-Digest")
        if digest and _DIGEST.match(digest):
            return digest
        return self.fetch_manifest(repository, reference).digest

    def fetch_manifest(self, repository: str, reference: str) -> Manifest:
        url = self._url(self._container(repository).manifest_url(check_reference(reference)))
        response = self._request("GET", url, headers={"Accept": ACCEPT})
        if response.status_code == 404:
            raise NotFound(f"manifest {repository}:{reference} not found")
        if response.status_code != 200:
            raise OciError(
                f"GET manifest {repository}:{reference}: {response.status_code} {response.text[:200]}"
            )
        raw = response.content
        digest = sha256_digest(raw)
        if _DIGEST.match(reference) and digest != reference:
            raise OciError(f"manifest {repository}@{reference} does not hash to its digest (got {digest})")
        media_type = response.headers.get("Content-Type", OCI_MANIFEST).split(";")[0]
        return Manifest(raw, digest, media_type)

    def fetch_blob(self, repository: str, digest: str, dest: Path) -> Path:
        url = self._url(self._container(repository).get_blob_url(check_digest(digest)))
        response = self._request("GET", url, stream=True)
        with response:
            if response.status_code == 404:
                raise NotFound(f"blob {digest} not found in {repository}")
            if response.status_code != 200:
                raise OciError(f"GET blob {repository}@{digest}: {response.status_code}")
            try:
                return _write_verified(response.iter_content(CHUNK), digest, Path(dest))
            except requests.RequestException as exc:
                raise Unreachable(f"registry {self.host}: download of {digest} broke off: {exc}") from exc

    def push_blob(self, repository: str, source: Path | bytes) -> tuple[str, int]:
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        digest, size = sha256_digest(data), len(data)
        container = self._container(repository)
        if self._request("HEAD", self._url(container.get_blob_url(digest))).status_code == 200:
            return digest, size
        started = self._request("POST", self._url(container.upload_blob_url()))
        location = started.headers.get("Location")
        if started.status_code != 202 or not location:
            raise OciError(f"starting upload to {repository}: {started.status_code} {started.text[:200]}")
        if not location.startswith("http"):
            location = f"{self.scheme}://{self.host}{location}"
        separator = "&" if "?" in location else "?"
        done = self._request(
            "PUT",
            f"{location}{separator}digest={digest}",
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            data=data,
        )
        if done.status_code not in (201, 204):
            raise OciError(f"uploading {digest} to {repository}: {done.status_code} {done.text[:200]}")
        return digest, size

    def push_manifest(
        self, repository: str, reference: str, raw: bytes, media_type: str = OCI_MANIFEST
    ) -> str:
        url = self._url(self._container(repository).manifest_url(check_reference(reference)))
        response = self._request("PUT", url, headers={"Content-Type": media_type}, data=raw)
        if response.status_code not in (200, 201):
            raise OciError(
                f"pushing manifest {repository}:{reference}: {response.status_code} {response.text[:300]}"
            )
        return sha256_digest(raw)


def _write_verified(chunks: Iterator[bytes], digest: str, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    sha = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".partial-")
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                if chunk:
                    sha.update(chunk)
                    out.write(chunk)
        if "sha256:" + sha.hexdigest() != digest:
            raise OciError(f"blob content does not match its digest {digest}")
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


# --- OCI image layout on disk --------------------------------------------------------------------------


class LayoutStore(OciStore):
    """One OCI image layout per repository under `root` (`root/<repository>/index.json`, `blobs/sha256/`).
    Writers take an flock on the repository, and index.json is replaced atomically, so a reader never
    sees a half-written index."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"LayoutStore({self.root})"

    def _dir(self, repository: str) -> Path:
        return self.root / check_repository(repository)

    def _blob(self, repository: str, digest: str) -> Path:
        return self._dir(repository) / "blobs" / "sha256" / check_digest(digest).split(":", 1)[1]

    def _index(self, repository: str) -> dict:
        path = self._dir(repository) / "index.json"
        if not path.exists():
            return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
        return json.loads(path.read_text())

    @contextmanager
    def _locked(self, repository: str) -> Iterator[Path]:
        directory = self._dir(repository)
        (directory / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        layout = directory / "oci-layout"
        if not layout.exists():
            layout.write_text('{"imageLayoutVersion":"1.0.0"}')
        with open(directory / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield directory
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def ping(self) -> None:
        if not self.root.is_dir():
            raise Unreachable(f"OCI layout directory {self.root} does not exist")

    def list_tags(self, repository: str) -> list[str]:
        return [
            m["annotations"][REF_NAME]
            for m in self._index(repository)["manifests"]
            if REF_NAME in (m.get("annotations") or {})
        ]

    def _lookup(self, repository: str, reference: str) -> dict | None:
        check_reference(reference)
        for entry in self._index(repository)["manifests"]:
            if (
                entry.get("digest") == reference
                or (entry.get("annotations") or {}).get(REF_NAME) == reference
            ):
                return entry
        if _DIGEST.match(reference) and self._blob(repository, reference).exists():
            return {"digest": reference, "mediaType": OCI_MANIFEST}
        return None

    def manifest_digest(self, repository: str, reference: str) -> str | None:
        entry = self._lookup(repository, reference)
        return entry["digest"] if entry else None

    def fetch_manifest(self, repository: str, reference: str) -> Manifest:
        entry = self._lookup(repository, reference)
        if entry is None:
            raise NotFound(f"manifest {repository}:{reference} not found in {self.root}")
        raw = self._blob(repository, entry["digest"]).read_bytes()
        if sha256_digest(raw) != entry["digest"]:
            raise OciError(f"manifest {repository}:{reference} is corrupt on disk")
        return Manifest(raw, entry["digest"], entry.get("mediaType", OCI_MANIFEST))

    def fetch_blob(self, repository: str, digest: str, dest: Path) -> Path:
        path = self._blob(repository, digest)
        if not path.exists():
            raise NotFound(f"blob {digest} not found in {repository}")
        with open(path, "rb") as stream:
            return _write_verified(iter(lambda: stream.read(CHUNK), b""), digest, Path(dest))

    def push_blob(self, repository: str, source: Path | bytes) -> tuple[str, int]:
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        digest = sha256_digest(data)
        with self._locked(repository):
            path = self._blob(repository, digest)
            if not path.exists():
                _write_verified(iter((data,)), digest, path)
        return digest, len(data)

    def push_manifest(
        self, repository: str, reference: str, raw: bytes, media_type: str = OCI_MANIFEST
    ) -> str:
        check_reference(reference)
        digest, size = self.push_blob(repository, raw)
        with self._locked(repository) as directory:
            index = self._index(repository)
            kept = [m for m in index["manifests"] if (m.get("annotations") or {}).get(REF_NAME) != reference]
            entry = {"mediaType": media_type, "digest": digest, "size": size}
            if not _DIGEST.match(reference):
                entry["annotations"] = {REF_NAME: reference}
            index["manifests"] = [*kept, entry]
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=".index-")
            with os.fdopen(fd, "w") as out:
                json.dump(index, out, indent=1)
            os.replace(tmp, directory / "index.json")
        return digest


# --- choosing a store ----------------------------------------------------------------------------------


def connect(
    url: str,
    *,
    username: str | None = None,
    password: str | None = None,
    insecure: bool | None = None,
    timeout: float = 30.0,
) -> OciStore:
    """A store for `url`: `oci-layout:///dir` (or `oci-layout:dir`), `http://host:port` (plain HTTP),
    `https://host`, or a bare `host[:port]` (HTTPS unless `insecure`)."""
    if url.startswith(f"{LAYOUT_SCHEME}:"):
        path = url[len(LAYOUT_SCHEME) + 1 :]
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise ValueError(
                f"{url!r}: an OCI layout URL needs a directory, e.g. oci-layout:///var/lib/firmware"
            )
        return LayoutStore(Path(path))
    if "://" in url:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{url!r}: registry URL must be http://, https://, host[:port] or oci-layout://")
        if parts.path not in ("", "/"):
            raise ValueError(f"{url!r}: registry URL takes no path (put it in the repository prefix)")
        host, plain = parts.netloc, parts.scheme == "http"
    else:
        host, plain = url.rstrip("/"), bool(insecure)
        if not host or "/" in host:
            raise ValueError(f"{url!r}: registry host must be host[:port]")
    if insecure and not plain:
        plain = True  # REGISTRY_INSECURE=true downgrades an https:// URL, as in the original OtaFlux
    return RegistryStore(host, insecure=plain, username=username, password=password, timeout=timeout)


__all__ = [
    "Descriptor",
    "LayoutStore",
    "Manifest",
    "NotFound",
    "OciError",
    "OciStore",
    "Pushed",
    "RegistryStore",
    "Resolved",
    "ResolvedFile",
    "Unreachable",
    "check_digest",
    "check_reference",
    "check_repository",
    "connect",
    "file_checksums",
    "write_bundle_tar",
]
