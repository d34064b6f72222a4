"""Registry I/O for firmware artifacts: push, list, fetch, resolve; used by `weatherfleet firmware push`,
OtaFlux and the operator's FirmwareRelease resolution. One module per concern:

- `contract`: media types, annotations, the bundle config document, where signatures live;
- `references`: validation of every name that reaches a URL or a path;
- `manifest`: reading manifests and building the exact bytes a push stores;
- `payload`: the checks a device performs (size, CRC32, sha256) and downloading a release;
- `signatures`: signing, verifying, storing and fetching release signatures;
- `store`: the interface, with `registry` (a distribution registry) and `layout` (an OCI layout on disk)
  behind it, chosen by the URL given to `connect`.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from .errors import NotFound, OciError, Unreachable
from .layout import LayoutStore
from .manifest import Descriptor, Manifest, bundle_manifest_bytes, image_manifest_bytes
from .payload import Resolved, ResolvedFile, file_checksums, resolve_manifest, write_bundle_tar
from .references import canonical_json, check_digest, check_reference, check_repository, sha256_digest
from .registry import RegistryStore
from .store import OciStore, Pushed

LAYOUT_SCHEME = "oci-layout"  # oci-layout:///path/to/dir: an OCI image layout on disk


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
    "bundle_manifest_bytes",
    "canonical_json",
    "check_digest",
    "check_reference",
    "check_repository",
    "connect",
    "file_checksums",
    "image_manifest_bytes",
    "resolve_manifest",
    "sha256_digest",
    "write_bundle_tar",
]
