"""The HTTP API devices and registries talk to (served by otaflux.http; files sent with sendfile).

Legacy, wire-compatible with the original OtaFlux: /version, /firmware, /health, /webhooks/harbor.
Extensions: /v1/manifest, /v1/blobs/<digest> (Range, ETag, HEAD), /webhooks/registry."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable

from pydantic import BaseModel, ValidationError

from weatherfleet import oci

from .access import AccessLog
from .cache import Firmware
from .firmware import MISS, ArtifactUnusable, FirmwareService, InvalidDevice, RegistryDown, check_device
from .http_messages import FileResponse, Request, Response, Result, text
from .metrics import Metrics
from .signatures import SignatureRejected

log = logging.getLogger("otaflux.api")

JSON = "application/json"
# Why the rollout plan offers a device nothing (weatherfleet.rollout.plan.Decision.why): it keeps what it runs.
NO_UPDATE = {
    "not-a-member": "no fleet of the rollout plan lists it",
    "no-stable": "outside the open share, and no stable version is known yet",
    "hold": "its fleet's rollout is paused or aborted",
    "halted": "its fleet's rollout halted and no stable version is known",
    "excluded": "excluded from the rollout, and no stable version is known",
}


# --- webhook payloads ----------------------------------------------------------------------------------


class HarborResource(BaseModel):
    digest: str = ""
    tag: str = ""


class HarborRepository(BaseModel):
    name: str
    namespace: str = ""
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


# Webhook refreshes of devices this worker does not know: a burst of 8, then one every 5 s.
UNKNOWN_DEVICE_BURST = 8
UNKNOWN_DEVICE_RATE = 0.2


class TokenBucket:
    def __init__(self, capacity: float, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity, self.rate, self.clock = capacity, rate, clock
        self.tokens, self.stamp = capacity, clock()

    def take(self) -> bool:
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


# --- the application -----------------------------------------------------------------------------------


class Api:
    """Routes requests; `__call__` answers inline when it can (a fresh cached answer), else returns an
    awaitable. `done` is called by the server once the response has gone out, for the metrics."""

    def __init__(
        self,
        service: FirmwareService,
        metrics: Metrics,
        webhook_secret: str | None,
        notify: Callable[[Firmware], None] | None,
        access: AccessLog | None = None,
    ) -> None:
        self.service, self.metrics, self.secret, self.notify = service, metrics, webhook_secret, notify
        self.access = access
        self._tasks: set[asyncio.Task] = set()
        self.routes: dict[str, tuple[str, str, Callable]] = {
            "/version": ("GET", "version", self.version),
            "/firmware": ("GET", "firmware", self.firmware),
            "/health": ("GET", "health", self.health),
            "/v1/manifest": ("GET", "manifest", self.manifest),
            "/webhooks/harbor": ("POST", "webhook_harbor", self.harbor),
            "/webhooks/registry": ("POST", "webhook_registry", self.registry),
        }
        self._unknown_budget = TokenBucket(UNKNOWN_DEVICE_BURST, UNKNOWN_DEVICE_RATE)
        self.stats = service.stats
        self._served = {r: metrics.bytes_served.labels(r).inc for r in ("firmware", "blob")}

    def __call__(self, request: Request) -> Result | Awaitable[Result]:
        request.started = time.perf_counter()  # type: ignore[attr-defined]
        route = self.routes.get(request.path)
        if route is not None:
            method, name, handler = route
        elif request.path.startswith("/v1/blobs/"):
            method, name, handler = "GET", "blob", self.blob
        else:
            request.route = "other"  # type: ignore[attr-defined]
            return text(404, "Not found")
        request.route = name  # type: ignore[attr-defined]
        if request.method != method and not (method == "GET" and request.method == "HEAD"):
            return Response(
                405, b"Method not allowed", headers=[("Allow", "GET, HEAD" if method == "GET" else method)]
            )
        return handler(request)

    def done(self, request: Request, status: int) -> None:
        seconds = time.perf_counter() - request.started  # type: ignore[attr-defined]
        self.stats.record(request.route, status, seconds)  # type: ignore[attr-defined]
        if self.access is not None:
            fw = request.firmware
            self.access.record(
                request.method, request.path, request.device, status,
                fw.version if fw is not None else None, fw.manifest.digest if fw is not None else None,
                request.sent, seconds,
            )  # fmt: skip

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=10)

    # -- device endpoints: answered inline when the device's answer is fresh --

    def _device_endpoint(
        self, request: Request, render: Callable[[Request, Firmware], Result]
    ) -> Result | Awaitable[Result]:
        device = request.query.get("device")
        try:
            request.device = check_device(device)
            found = self.service.cached(device)
        except InvalidDevice as exc:
            return text(400, str(exc))
        except Exception as exc:
            return self._failure(device, exc)
        if found is MISS:
            return self._slow(request, device, render)
        if found is None:
            return self._nothing(device)
        request.firmware = found
        return render(request, found)

    async def _slow(self, request: Request, device: str, render) -> Result:
        try:
            firmware = await self.service.firmware_for(device)
        except Exception as exc:
            return self._failure(device, exc)
        if firmware is None:
            return self._nothing(device)
        request.firmware = firmware
        return render(request, firmware)

    def _nothing(self, device: str) -> Response:
        """404: nothing to install. With a rollout plan, the body says why (the device keeps what it runs)."""
        why = self.service.decisions.get(device)
        if why in NO_UPDATE:
            return text(404, f"No update for device '{device}': {NO_UPDATE[why]}")
        return text(404, f"No firmware for device '{device}'")

    @staticmethod
    def _failure(device: str, exc: Exception) -> Response:
        if isinstance(exc, SignatureRejected):
            return text(502, f"Firmware for device '{device}' refused: {exc}")
        if isinstance(exc, ArtifactUnusable):
            return text(502, f"Firmware for device '{device}' unusable: {exc}")
        if isinstance(exc, RegistryDown):
            return text(503, str(exc))
        raise exc

    def _file(self, request: Request, path, route: str, etag: str) -> Result:
        if etag in (request.headers.get("if-none-match") or ""):
            return Response(304, b"", "", [("ETag", etag)])
        return FileResponse(path, etag=etag, on_sent=self._served[route])

    def version(self, request: Request) -> Result | Awaitable[Result]:
        return self._device_endpoint(request, lambda _r, fw: Response(200, fw.version_body()))

    def firmware(self, request: Request) -> Result | Awaitable[Result]:
        return self._device_endpoint(
            request, lambda r, fw: self._file(r, fw.payload, "firmware", f'"{fw.sha256}"')
        )

    def manifest(self, request: Request) -> Result | Awaitable[Result]:
        return self._device_endpoint(
            request,
            lambda _r, fw: Response(
                200, fw.manifest_body(self.service.authorisation_for(fw.device, fw.version)), JSON
            ),
        )

    def blob(self, request: Request) -> Result | Awaitable[Result]:
        digest = request.path[len("/v1/blobs/") :]
        try:
            oci.check_digest(digest)
        except ValueError:
            return text(400, "Invalid digest: expected sha256:<64 hex digits>")

        def render(r: Request, fw: Firmware) -> Result:
            path = fw.blobs.get(digest)
            if path is None:
                return text(404, f"{digest} is not part of the firmware served to this device")
            return self._file(r, path, "blob", f'"{digest}"')

        return self._device_endpoint(request, render)

    def health(self, _request: Request) -> Result:
        reason = self.service.degraded_reason
        return text(200, f"degraded: {reason}" if reason else "ok")

    # -- webhooks --

    def _authorized(self, request: Request) -> bool:
        if not self.secret:
            return True
        given = request.headers.get("authorization", "")
        if given.lower().startswith("bearer "):
            given = given[7:]
        return hmac.compare_digest(given.encode(), self.secret.encode())

    def _payload(self, request: Request, model: type[BaseModel]) -> BaseModel | Response:
        if not self._authorized(request):
            return text(401, "Missing or wrong webhook secret")
        try:
            return model.model_validate_json(request.body)
        except ValidationError as exc:
            return text(400, f"Malformed payload: {' '.join(str(exc).split())[:300]}")

    def _device_of(self, repository: str) -> str | None:
        """The device whose repository this is; None outside the prefix or for an invalid id."""
        prefix = self.service.prefix
        if not repository.startswith(prefix):
            return None
        try:
            return check_device(repository[len(prefix) :])
        except InvalidDevice:
            return None

    def _known(self, device: str) -> bool:
        """A device this worker has served firmware to, or one the rollout plan lists."""
        answer = self.service.last_answer(device)
        if answer is not None and answer.firmware is not None:
            return True
        plan = self.service.plan.current()
        fleet_of = getattr(plan, "fleet_of", None)
        return fleet_of is not None and fleet_of(device) is not None

    def _worth_a_refresh(self, device: str) -> bool:
        """Work per webhook is bounded (issue 14: one authenticated webhook naming 200 unknown devices
        used to cause 800 registry requests). Known devices are refreshed; a device nobody has asked for
        and no plan lists (the first push for a new device, announced so that it updates when it wakes)
        takes a token from a small per-worker budget, and without one it costs nothing: it hears of its
        firmware when it next asks."""
        return self._known(device) or self._unknown_budget.take()

    def harbor(self, request: Request) -> Result:
        payload = self._payload(request, HarborEvent)
        if isinstance(payload, Response):
            return payload
        if payload.type != "PUSH_ARTIFACT":
            return text(200, f"ignored {payload.type[:40]}")
        if payload.event_data is None:
            return text(400, "Malformed payload: PUSH_ARTIFACT without event_data")
        repo = payload.event_data.repository
        # The full name, or namespace/name: never the bare name under our prefix (an event for another
        # project's repository of the same name must not refresh a device of ours).
        full_name = repo.repo_full_name or (f"{repo.namespace}/{repo.name}" if repo.namespace else "")
        device = self._device_of(full_name)
        if device is None:
            return text(200, "ignored: repository outside the prefix")
        if not self._worth_a_refresh(device):
            return text(200, "ignored: an unknown device, and the budget for those is spent")
        self._schedule(device, announce=True)
        return text(200, f"refreshing {device}")

    def registry(self, request: Request) -> Result:
        payload = self._payload(request, RegistryEnvelope)
        if isinstance(payload, Response):
            return payload
        devices: dict[str, bool] = {}
        expected: dict[str, tuple[str, str]] = {}
        for event in payload.events:
            target = event.target
            # Manifest pushes with a tag; blob pushes and the pulls OtaFlux itself causes are noise.
            if event.action != "push" or not target.tag:
                continue
            device = self._device_of(target.repository)
            if device is not None and (device in devices or self._worth_a_refresh(device)):
                announce = not target.tag.endswith(".sig")
                devices[device] = devices.get(device, False) or announce
                if announce:
                    expected[device] = (target.tag, target.digest)
        for device, announce in devices.items():
            self._schedule(device, announce, expected.get(device))
        return text(200, f"refreshing {len(devices)} device(s)")

    def _schedule(self, device: str, announce: bool, expected: tuple[str, str] | None = None) -> None:
        # Answer the webhook at once (registries time out quickly); refresh and notify in the background.
        task = asyncio.create_task(self._refresh_and_notify(device, announce, expected))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _refresh_and_notify(
        self, device: str, announce: bool, expected: tuple[str, str] | None
    ) -> None:
        previous = self.service.last_answer(device)
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
