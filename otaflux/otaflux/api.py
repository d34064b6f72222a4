"""The HTTP API devices and registries talk to (aiohttp; firmware sent with sendfile from the cache).

Legacy, wire-compatible with the original OtaFlux: /version, /firmware, /health, /webhooks/harbor.
Extensions: /v1/manifest, /v1/blobs/<digest> (Range, ETag, HEAD), /webhooks/registry."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from pydantic import BaseModel, ValidationError

from weatherfleet import oci

from .cache import Firmware
from .firmware import ArtifactUnusable, FirmwareService, InvalidDevice, RegistryDown, check_device
from .metrics import Metrics
from .signatures import SignatureRejected

log = logging.getLogger("otaflux.api")

TEXT = "text/plain; charset=utf-8"
OCTETS = "application/octet-stream"
MAX_WEBHOOK_BYTES = 1 << 20

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# --- webhook payloads ----------------------------------------------------------------------------------


class HarborResource(BaseModel):
    digest: str = ""
    tag: str = ""


class HarborRepository(BaseModel):
    name: str
    repo_full_name: str = ""


class HarborEventData(BaseModel):
    resources: list[HarborResource] = []
    repository: HarborRepository


class HarborEvent(BaseModel):
    type: str
    event_data: HarborEventData | None = None


class RegistryTarget(BaseModel):
    mediaType: str = ""
    digest: str = ""
    repository: str = ""
    tag: str = ""


class RegistryEvent(BaseModel):
    action: str
    target: RegistryTarget


class RegistryEnvelope(BaseModel):
    events: list[RegistryEvent]


# --- the application -----------------------------------------------------------------------------------


class Api:
    def __init__(
        self,
        service: FirmwareService,
        metrics: Metrics,
        webhook_secret: str | None,
        notify: Callable[[Firmware], None] | None,
    ) -> None:
        self.service, self.metrics, self.secret, self.notify = service, metrics, webhook_secret, notify
        self._tasks: set[asyncio.Task] = set()
        # Pre-bound metric children: labels() costs a lookup per request otherwise.
        self._counters: dict[tuple[str, int], object] = {}
        self._latency = {}
        self._served = {r: metrics.bytes_served.labels(r) for r in ("firmware", "blob")}

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_WEBHOOK_BYTES, handler_args={"max_field_size": 8190})
        routes = [
            ("GET", "/version", self.version, "version"),
            ("GET", "/firmware", self.firmware, "firmware"),
            ("GET", "/health", self.health, "health"),
            ("GET", "/v1/manifest", self.manifest, "manifest"),
            ("GET", "/v1/blobs/{digest}", self.blob, "blob"),
            ("POST", "/webhooks/harbor", self.harbor, "webhook_harbor"),
            ("POST", "/webhooks/registry", self.registry, "webhook_registry"),
        ]
        for method, path, handler, name in routes:
            if method == "GET":  # GET routes answer HEAD too (size and ETag without the body)
                app.router.add_get(path, self._measured(name, handler))
            else:
                app.router.add_route(method, path, self._measured(name, handler))
        app.on_shutdown.append(self._drain)
        return app

    async def _drain(self, _app: web.Application) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=10)

    def _measured(self, route: str, handler: Handler) -> Handler:
        latency = self.metrics.latency.labels(route)

        async def measured(request: web.Request) -> web.StreamResponse:
            started = time.perf_counter()
            try:
                response = await handler(request)
                status = response.status
            except web.HTTPException as exc:
                status = exc.status
                raise
            finally:
                latency.observe(time.perf_counter() - started)
                counter = self._counters.get((route, status))
                if counter is None:
                    counter = self._counters[(route, status)] = self.metrics.requests.labels(
                        route, str(status)
                    )
                counter.inc()
            return response

        return measured

    # -- helpers --

    @staticmethod
    def _text(status: int, body: str) -> web.Response:
        return web.Response(status=status, text=body, content_type="text/plain", charset="utf-8")

    async def _lookup(self, request: web.Request) -> tuple[Firmware | None, web.Response | None]:
        """The device's firmware, or the error response to send instead."""
        device = request.query.get("device")
        try:
            check_device(device)
        except InvalidDevice as exc:
            return None, self._text(400, str(exc))
        try:
            firmware = await self.service.firmware_for(device)
        except SignatureRejected as exc:
            return None, self._text(502, f"Firmware for device '{device}' refused: {exc}")
        except ArtifactUnusable as exc:
            return None, self._text(502, f"Firmware for device '{device}' unusable: {exc}")
        except RegistryDown as exc:
            return None, self._text(503, str(exc))
        if firmware is None:
            return None, self._text(404, f"No firmware for device '{device}'")
        return firmware, None

    def _file(self, request: web.Request, path, route: str, etag: str | None = None) -> web.StreamResponse:
        if etag is not None and etag in (request.headers.get("If-None-Match") or ""):
            return web.Response(status=304, headers={"ETag": etag})
        response = DigestFileResponse(path, etag=etag, headers={"Content-Type": OCTETS})
        response.on_sent = self._served[route].inc
        return response

    # -- device endpoints --

    async def version(self, request: web.Request) -> web.StreamResponse:
        firmware, error = await self._lookup(request)
        if error is not None:
            return error
        return web.Response(body=firmware.version_body(), content_type="text/plain", charset="utf-8")

    async def firmware(self, request: web.Request) -> web.StreamResponse:
        firmware, error = await self._lookup(request)
        if error is not None:
            return error
        return self._file(request, firmware.payload, "firmware", f'"{firmware.sha256}"')

    async def manifest(self, request: web.Request) -> web.StreamResponse:
        firmware, error = await self._lookup(request)
        if error is not None:
            return error
        return web.Response(body=firmware.manifest_body(), content_type="application/json")

    async def blob(self, request: web.Request) -> web.StreamResponse:
        digest = request.match_info["digest"]
        try:
            oci.check_digest(digest)
        except ValueError:
            return self._text(400, "Invalid digest: expected sha256:<64 hex digits>")
        firmware, error = await self._lookup(request)
        if error is not None:
            return error
        path = firmware.blobs.get(digest)
        if path is None:
            return self._text(404, f"{digest} is not part of the firmware served to this device")
        return self._file(request, path, "blob", f'"{digest}"')

    async def health(self, _request: web.Request) -> web.StreamResponse:
        reason = self.service.degraded_reason
        if reason:
            return self._text(200, f"degraded: {reason}")
        return self._text(200, "ok")

    # -- webhooks --

    def _authorized(self, request: web.Request) -> bool:
        if not self.secret:
            return True
        given = request.headers.get("Authorization", "")
        if given.lower().startswith("bearer "):
            given = given[7:]
        return hmac.compare_digest(given.encode(), self.secret.encode())

    async def _payload(self, request: web.Request, model: type[BaseModel]) -> BaseModel | web.Response:
        if not self._authorized(request):
            return self._text(401, "Missing or wrong webhook secret")
        try:
            return model.model_validate_json(await request.read())
        except ValidationError as exc:
            return self._text(400, f"Malformed payload: {' '.join(str(exc).split())[:300]}")

    def _device_of(self, repository: str) -> str | None:
        prefix = self.service.prefix
        if not repository.startswith(prefix):
            return None
        try:
            return check_device(repository[len(prefix) :])
        except InvalidDevice:
            return None

    async def harbor(self, request: web.Request) -> web.StreamResponse:
        payload = await self._payload(request, HarborEvent)
        if isinstance(payload, web.Response):
            return payload
        if payload.type != "PUSH_ARTIFACT":
            return self._text(200, f"ignored {payload.type[:40]}")
        if payload.event_data is None:
            return self._text(400, "Malformed payload: PUSH_ARTIFACT without event_data")
        repo = payload.event_data.repository
        device = self._device_of(repo.repo_full_name) or self._device_of(self.service.prefix + repo.name)
        if device is None:
            return self._text(200, "ignored: repository outside the prefix")
        self._schedule(device, announce=True)
        return self._text(200, f"refreshing {device}")

    async def registry(self, request: web.Request) -> web.StreamResponse:
        payload = await self._payload(request, RegistryEnvelope)
        if isinstance(payload, web.Response):
            return payload
        devices: dict[str, bool] = {}
        expected: dict[str, tuple[str, str]] = {}
        for event in payload.events:
            target = event.target
            # Manifest pushes with a tag; blob pushes and the pulls OtaFlux itself causes are noise.
            if event.action != "push" or not target.tag:
                continue
            device = self._device_of(target.repository)
            if device is not None:
                announce = not target.tag.endswith(".sig")
                devices[device] = devices.get(device, False) or announce
                if announce:
                    expected[device] = (target.tag, target.digest)
        for device, announce in devices.items():
            self._schedule(device, announce, expected.get(device))
        return self._text(200, f"refreshing {len(devices)} device(s)")

    def _schedule(self, device: str, announce: bool, expected: tuple[str, str] | None = None) -> None:
        # Answer the webhook at once (registries time out quickly); refresh and notify in the background.
        task = asyncio.create_task(self._refresh_and_notify(device, announce, expected))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _refresh_and_notify(
        self, device: str, announce: bool, expected: tuple[str, str] | None
    ) -> None:
        previous = self.service._answers.get(device)
        old_key = previous.firmware.key if previous and previous.firmware else None
        # The distribution registry sends the manifest event before it links the tag, so the tag may
        # not resolve (or resolve to the previous digest) for a moment: look again a few times.
        for attempt in range(8):
            try:
                answer = await self.service.refresh_after_change(device)
            except Exception:
                log.exception("refresh of %s after a webhook failed", device)
                return
            firmware = answer.firmware
            if expected is None and answer.error is None:
                break
            if expected is not None and answer.error is None and firmware is not None:
                tag, digest = expected
                if firmware.version != tag or firmware.manifest.digest == digest:
                    break
            await asyncio.sleep(0.1 * (attempt + 1))
        if answer.error is not None:
            log.warning("not announcing %s: %s", device, answer.error)
            return
        # A changed digest was announced by the service's on_change already.
        if firmware is not None and announce and self.notify and (old_key is None or old_key == firmware.key):
            self.notify(firmware)


class DigestFileResponse(web.FileResponse):
    """FileResponse whose ETag is the content digest (stable across replicas and cache refills) rather
    than aiohttp's mtime-size tag; `on_sent` counts the bytes handed to sendfile."""

    def __init__(self, path, etag: str | None = None, **kwargs) -> None:
        super().__init__(path, **kwargs)
        self._fixed_etag = etag
        self.on_sent: Callable[[int], None] | None = None

    @property
    def etag(self):  # type: ignore[override]
        return super().etag

    @etag.setter
    def etag(self, value) -> None:
        web.StreamResponse.etag.fset(self, self._fixed_etag.strip('"') if self._fixed_etag else value)

    async def _sendfile(self, request, fobj, offset, count):
        writer = await super()._sendfile(request, fobj, offset, count)
        if self.on_sent is not None:
            self.on_sent(count)
        return writer
