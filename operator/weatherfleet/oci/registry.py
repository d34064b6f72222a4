"""A distribution-spec registry over HTTP(S), via oras-py's session, container URLs and auth backends (basic
auth, or bearer tokens obtained with the basic credentials, as Harbor and GHCR want). Requests are issued
here rather than through `oras.provider.Registry.do_request`, whose retry decorator sleeps for minutes and
sets no timeout: OtaFlux must notice an unreachable registry in seconds and keep serving from its cache."""

from __future__ import annotations

import base64
import re
import threading
from pathlib import Path
from urllib.parse import urljoin

import oras.auth
import oras.container
import oras.provider
import requests

from . import contract
from .errors import NotFound, OciError, Unreachable
from .manifest import Manifest
from .payload import CHUNK
from .references import check_digest, check_reference, check_repository, is_digest, sha256_digest
from .store import OciStore, write_verified

ACCEPT = ", ".join((contract.OCI_MANIFEST, contract.DOCKER_MANIFEST, contract.OCI_INDEX))


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
        # the Authorization value for registries that challenge with Basic (oras keeps its own private)
        self._basic = (
            "Basic " + base64.b64encode(f"{username}:{password or ''}".encode()).decode() if username else ""
        )
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
            headers["Authorization"] = self._basic

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
                headers["Authorization"] = self._basic
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
        if digest and is_digest(digest):
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
        if is_digest(reference) and digest != reference:
            raise OciError(f"manifest {repository}@{reference} does not hash to its digest (got {digest})")
        media_type = response.headers.get("Content-Type", contract.OCI_MANIFEST).split(";")[0]
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
                return write_verified(response.iter_content(CHUNK), digest, Path(dest))
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
        self, repository: str, reference: str, raw: bytes, media_type: str = contract.OCI_MANIFEST
    ) -> str:
        url = self._url(self._container(repository).manifest_url(check_reference(reference)))
        response = self._request("PUT", url, headers={"Content-Type": media_type}, data=raw)
        if response.status_code not in (200, 201):
            raise OciError(
                f"pushing manifest {repository}:{reference}: {response.status_code} {response.text[:300]}"
            )
        return sha256_digest(raw)
