"""The HTTP face of the API server: the Kubernetes REST paths, discovery, chunked watch streams, and a
thread runner so that synchronous clients (the `kubernetes` package, kopf in KopfRunner's thread) can
talk to it from anywhere in the test process."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from aiohttp import web

from . import persist, printing
from .errors import ApiError
from .resources import ResourceType
from .store import Store, Write

T = TypeVar("T")
WRITE_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        text=json.dumps(data), status=status, content_type="application/json", headers=headers
    )


@dataclass(frozen=True)
class ServingCertificate:
    """HTTPS for the server: its certificate and key, and the CA clients verify it with. kubectl sends a
    bearer token only over TLS, so a server meant for kubectl needs one."""

    cert: Path
    key: Path
    ca: Path


class ApiServer:
    def __init__(
        self,
        store: Store | None = None,
        token: str | None = None,
        bookmark_seconds: float = 5.0,
        tls: ServingCertificate | None = None,
        state_path: Path | None = None,
        save_seconds: float = 5.0,
    ):
        """`state_path`: keep the objects in this file (loaded now when it exists, saved every
        `save_seconds` when something changed, and at stop), as etcd keeps them for kube-apiserver."""
        self.state_path = Path(state_path) if state_path else None
        self.save_seconds = save_seconds
        if store is None and self.state_path is not None:
            store = persist.load(self.state_path)
        self.store = store or Store()
        self._saved_rv = self.store.rv
        self.token = token or secrets.token_urlsafe(16)
        self.tls = tls
        self.bookmark_seconds = bookmark_seconds
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None

    # -- lifecycle --
    def start(self, port: int = 0) -> ApiServer:
        ready = threading.Event()
        errors: list[BaseException] = []

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._serve(port))
            except BaseException as exc:  # surfaced to start()
                errors.append(exc)
            finally:
                ready.set()
                loop.run_until_complete(self._cleanup())
                loop.close()

        self._ready = ready
        self._thread = threading.Thread(target=main, name="kube-apiserver", daemon=True)
        self._thread.start()
        if not ready.wait(30):
            raise RuntimeError("the embedded API server did not start")
        if errors:
            raise errors[0]
        return self

    async def _serve(self, port: int) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1)
        await self._runner.setup()
        context = None
        if self.tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(self.tls.cert), str(self.tls.key))
        site = web.TCPSite(self._runner, "127.0.0.1", port, ssl_context=context)
        await site.start()
        sock = site._server.sockets[0]  # type: ignore[union-attr]
        scheme = "https" if context is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{sock.getsockname()[1]}"
        self._stopping = asyncio.Event()
        self._ready.set()
        saver = asyncio.create_task(self._save_periodically()) if self.state_path else None
        await self._stopping.wait()
        if saver is not None:
            saver.cancel()
        self.save()

    async def _save_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.save_seconds)
            self.save()

    def save(self) -> None:
        """Write the state file if anything changed since the last save (call on the server's loop)."""
        if self.state_path is not None and self.store.rv != self._saved_rv:
            persist.save(self.store, self.state_path)
            self._saved_rv = self.store.rv

    async def _cleanup(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    def stop(self) -> None:
        """Stop serving (saving the state file first when there is one); safe to call twice."""
        if self._thread is None or not self._thread.is_alive():
            return
        if self._loop and self._stopping:
            # End every open watch stream first, so no handler is left waiting when the loop closes.
            self._loop.call_soon_threadsafe(self._end_watches)
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread:
            self._thread.join(15)

    def _end_watches(self) -> None:
        for watcher in list(self.store.watchers):
            watcher.queue.put_nowait(None)

    def call(self, fn: Callable[[Store], T]) -> T:
        """Run `fn(store)` on the server's loop (the store is single-threaded) and return its result."""
        assert self._loop is not None

        async def run() -> T:
            return fn(self.store)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(30)

    def write_kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        """A kubeconfig for this server (0600: it holds the token), usable by kubectl and every client."""
        cluster: dict[str, Any] = {"server": self.url}
        if self.tls is not None:
            cluster["certificate-authority-data"] = base64.b64encode(Path(self.tls.ca).read_bytes()).decode()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600, exist_ok=True)
        path.chmod(0o600)
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "weatherfleet", "cluster": cluster}],
                    "users": [{"name": "weatherfleet", "user": {"token": self.token}}],
                    "contexts": [
                        {
                            "name": "weatherfleet",
                            "context": {
                                "cluster": "weatherfleet",
                                "user": "weatherfleet",
                                "namespace": namespace,
                            },
                        }
                    ],
                    "current-context": "weatherfleet",
                }
            )
        )
        return path

    # -- HTTP --
    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _json(ApiError(401, "Unauthorized", "Unauthorized").status(), 401)
        self.store.requests[request.method] += 1
        try:
            return await self._route(request)
        except ApiError as exc:
            return _json(exc.status(), exc.code)

    async def _route(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        store = self.store
        if parts == ["version"]:
            return _json({"major": "1", "minor": "31", "gitVersion": "v1.31.0-weatherfleet"})
        if parts in (["healthz"], ["readyz"], ["livez"]):
            return web.Response(text="ok")
        if parts == ["api"]:
            return _json({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
        if parts == ["apis"]:
            return _json(self._groups())
        if parts[:1] == ["api"] and len(parts) == 2:
            return _json(self._resource_list("", parts[1]))
        if parts[:1] == ["apis"] and len(parts) == 3:
            return _json(self._resource_list(parts[1], parts[2]))
        if parts[:1] == ["apis"] and len(parts) == 2:
            group = next((g for g in self._groups()["groups"] if g["name"] == parts[1]), None)
            if group is None:
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return _json({"kind": "APIGroup", "apiVersion": "v1", **group})
        if parts[:1] == ["api"]:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[:1] == ["apis"]:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        watch = request.query.get("watch") in ("true", "1")
        if rest[:1] == ["watch"]:
            watch, rest = True, rest[1:]
        namespace = None
        if rest[:1] == ["namespaces"] and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        if not rest:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        rt = store.type_for(group, version, rest[0])
        if rt.namespaced is False and namespace is not None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub is not None and (sub != "status" or not rt.status):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        q = request.query
        if request.method == "GET" and name is None:
            if watch:
                return await self._watch(request, rt, namespace)
            items, rv = store.list(rt, namespace, q.get("labelSelector"), q.get("fieldSelector"))
            if rt.custom and printing.wants_table(request.headers.get("Accept", "")):
                return _json(printing.table(items, rt.columns, str(rv), q.get("includeObject", "Metadata")))
            return _json(
                {
                    "kind": f"{rt.kind}List",
                    "apiVersion": rt.api_version,
                    "metadata": {"resourceVersion": str(rv)},
                    "items": items,
                }
            )
        if request.method == "GET":
            assert name is not None
            obj = store.get(rt, namespace, name)
            if rt.custom and sub is None and printing.wants_table(request.headers.get("Accept", "")):
                rv = obj["metadata"].get("resourceVersion", "")
                return _json(printing.table([obj], rt.columns, rv, q.get("includeObject", "Metadata")))
            return _json(obj)
        verb = WRITE_VERBS.get(request.method)
        if verb is None:
            raise ApiError(405, "MethodNotAllowed", f"{request.method} is not supported")
        actor = request.headers.get("User-Agent", "unknown").split("/")[0].split(" ")[0]
        raw = await request.read()
        body: Any = None
        if raw:
            try:
                body = yaml.safe_load(raw) if "yaml" in (request.content_type or "") else json.loads(raw)
            except (ValueError, yaml.YAMLError) as exc:
                raise ApiError(
                    400, "BadRequest", f"the body of the request could not be decoded: {exc}"
                ) from exc
        changed = True
        status = 200
        if verb == "create":
            if name is not None:
                raise ApiError(405, "MethodNotAllowed", "POST to a named resource")
            obj = store.create(rt, namespace, body or {})
            status = 201
        elif name is None:
            raise ApiError(405, "MethodNotAllowed", f"{request.method} on a collection is not supported")
        elif verb == "update":
            obj, changed = store.update(
                rt, namespace, name, body or {}, sub, (body or {}).get("metadata", {}).get("resourceVersion")
            )
        elif verb == "patch":
            obj, changed = store.patch(
                rt,
                namespace,
                name,
                request.content_type,
                body,
                sub,
                q.get("fieldManager"),
                (q.get("force") or "").lower() in ("true", "1"),
            )
        else:
            obj = store.delete(rt, namespace, name, (body or {}).get("preconditions"))
        agent = request.headers.get("User-Agent", "")
        store.writes.append(Write(actor, verb, rt.plural, namespace, name, sub, changed, agent))
        headers = {}
        return _json(obj, status, headers)

    def _groups(self) -> dict[str, Any]:
        groups: dict[str, list[str]] = {}
        for group, version, _ in self.store.types:
            if group and version not in groups.setdefault(group, []):
                groups[group].append(version)
        return {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [
                {
                    "name": g,
                    "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
                    "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]},
                }
                for g, vs in sorted(groups.items())
            ],
        }

    def _resource_list(self, group: str, version: str) -> dict[str, Any]:
        types = [rt for (g, v, _), rt in self.store.types.items() if g == group and v == version]
        if not types:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": [entry for rt in types for entry in rt.discovery()],
        }

    async def _watch(
        self, request: web.Request, rt: ResourceType, namespace: str | None
    ) -> web.StreamResponse:
        q = request.query
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            watcher = self.store.watch(
                rt, namespace, q.get("resourceVersion"), q.get("labelSelector"), q.get("fieldSelector")
            )
        except ApiError as exc:
            await response.write(json.dumps({"type": "ERROR", "object": exc.status()}).encode() + b"\n")
            return response
        bookmarks = q.get("allowWatchBookmarks") in ("true", "1")
        timeout = float(q.get("timeoutSeconds") or 1800)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(watcher.queue.get(), min(remaining, self.bookmark_seconds))
                    if item is None:
                        break
                    etype, obj = item
                except TimeoutError:
                    if bookmarks:
                        mark = {
                            "type": "BOOKMARK",
                            "object": {
                                "kind": rt.kind,
                                "apiVersion": rt.api_version,
                                "metadata": {"resourceVersion": str(self.store.rv)},
                            },
                        }
                        await response.write(json.dumps(mark).encode() + b"\n")
                    continue
                await response.write(json.dumps({"type": etype, "object": obj}).encode() + b"\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.store.unwatch(watcher)
        return response
