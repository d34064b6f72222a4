"""Process wiring: one worker serves HTTP on the port (SO_REUSEPORT, so N workers share it and the
kernel spreads connections), and the metrics port. With several workers each keeps its own cache
directory and the supervisor serves the aggregated metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
from pathlib import Path

from aiohttp import web

from weatherfleet import oci

from .config import LOG_LEVELS, Settings
from .http import start_server

log = logging.getLogger("otaflux")
HEALTH_PROBE_INTERVAL = 5.0


def setup_logging(level: str) -> None:
    logging.basicConfig(level=LOG_LEVELS[level], format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


async def serve(
    settings: Settings, cache_root: Path, worker: int = 0, metrics_in_process: bool = True
) -> None:
    from .access import AccessLog
    from .api import Api
    from .cache import FirmwareCache
    from .firmware import FirmwareService
    from .metrics import Metrics
    from .notifier import Announcer, Notifier
    from .plan import PlanSource
    from .signatures import SignaturePolicy

    metrics = Metrics()
    store = oci.connect(
        settings.registry_url,
        username=settings.registry_username,
        password=settings.registry_password,
        insecure=settings.registry_insecure,
        timeout=settings.registry_timeout,
    )
    notifier = None
    if settings.mqtt_url:
        notifier = Notifier(
            settings, on_result=lambda ok: metrics.notifications.labels("ok" if ok else "error").inc()
        )
        notifier.start()

    told: dict[str, tuple[str, str]] = {}  # device -> (version, digest) last published by this worker

    def notify(firmware) -> None:
        # A changed answer is announced once, whether the webhook, a refresh or a plan change found it.
        said = (firmware.version, firmware.manifest.digest)
        if notifier is not None and told.get(firmware.device) != said:
            told[firmware.device] = said
            notifier.publish(firmware.device, firmware.version, firmware.size)

    service = FirmwareService(
        store=store,
        prefix=settings.repository_prefix,
        cache=FirmwareCache(cache_root / f"worker-{worker}", settings.cache_size, settings.cache_bytes),
        plan=PlanSource(settings.rollout_plan),
        policy=SignaturePolicy(settings.signature_public_keys),
        metrics=metrics,
        refresh_interval=settings.refresh_interval,
        on_change=notify,
    )
    access = AccessLog.from_setting(settings.access_log)
    api = Api(service, metrics, settings.webhook_secret, notify, access)
    host, port = settings.listen
    server = await start_server(api, host, port, api.done)
    metrics_runner = None
    if metrics_in_process:
        metrics_runner = await start_metrics(settings, metrics.registry, before=service.stats.flush)
    log.info(
        "worker %d serving on %s:%d (registry %s, prefix %r, plan %s, %d signature key(s))",
        worker,
        host,
        port,
        store,
        settings.repository_prefix,
        settings.rollout_plan or "none",
        len(settings.signature_public_keys),
    )
    if not settings.webhook_secret:
        log.warning("no WEBHOOK_SECRET: webhooks are accepted from anyone who can reach this port")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watchers = [
        asyncio.create_task(_watch_plan(service.plan, metrics, stop)),
        *(
            # one worker announces plan changes: the others would only send the same notifications again
            [asyncio.create_task(Announcer(service, notify).run(stop))]
            if notifier is not None and worker == 0
            else []
        ),
        asyncio.create_task(_probe_registry(service, stop)),
        asyncio.create_task(_every(1.0, service.stats.flush, stop)),
        *([asyncio.create_task(_every(1.0, access.flush, stop))] if access is not None else []),
    ]
    await stop.wait()
    log.info("worker %d stopping", worker)
    await asyncio.gather(*watchers)
    server.close()
    await api.drain()
    if access is not None:
        access.close()
    if metrics_runner is not None:
        await metrics_runner.cleanup()
    if notifier is not None:
        notifier.stop()


async def _watch_plan(plan, metrics, stop: asyncio.Event) -> None:
    """Read plan changes even while no device asks, so a bad edit is logged (and counted) at once."""
    if plan.path is None:
        return
    while not stop.is_set():
        plan.current()
        metrics.plan_generation.set(plan.generation)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), plan.poll_interval)


async def _probe_registry(service, stop: asyncio.Event) -> None:
    """/health reports what this finds: degraded while the registry does not answer."""
    while not stop.is_set():
        await service.probe()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), HEALTH_PROBE_INTERVAL)


async def _every(seconds: float, action, stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
        action()


async def start_metrics(settings: Settings, registry, before=None) -> web.AppRunner:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    async def metrics_handler(_request: web.Request) -> web.Response:
        if before is not None:
            before()
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", metrics_handler)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    host, port = settings.metrics_listen
    await web.TCPSite(runner, host, port, reuse_port=True).start()
    return runner


def _worker_main(settings: Settings, cache_root: Path, worker: int) -> None:
    setup_logging(settings.log_level)
    _run_loop(serve(settings, cache_root, worker, metrics_in_process=False), settings.event_loop)


def _run_loop(main, event_loop: str) -> None:
    """uvloop when installed (about a third more requests per second on /version), else asyncio's own;
    `event_loop` "asyncio" (OTAFLUX_LOOP) forces the latter."""
    if event_loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            uvloop = None
        if uvloop is not None:
            uvloop.run(main)
            return
    asyncio.run(main)


def run(settings: Settings) -> int:
    setup_logging(settings.log_level)
    with tempfile.TemporaryDirectory(prefix="otaflux-cache-") as tmp:
        cache_root = settings.cache_dir or Path(tmp)
        if settings.workers == 1:
            _run_loop(serve(settings, cache_root), settings.event_loop)
            return 0
        return _supervise(settings, cache_root)


def _supervise(settings: Settings, cache_root: Path) -> int:
    """N workers share the HTTP port; this process serves the metrics they write (multiprocess mode)."""
    metrics_dir = tempfile.mkdtemp(prefix="otaflux-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # before prometheus_client is imported
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    context = multiprocessing.get_context("fork")
    workers = [
        context.Process(target=_worker_main, args=(settings, cache_root, i), daemon=True)
        for i in range(settings.workers)
    ]
    for process in workers:
        process.start()

    async def main() -> None:
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        runner = await start_metrics(settings, registry)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        while not stop.is_set() and all(p.is_alive() for p in workers):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
        await runner.cleanup()

    try:
        asyncio.run(main())
    finally:
        for process in workers:
            if process.is_alive():
                process.terminate()
        for process in workers:
            process.join(10)
        shutil.rmtree(metrics_dir, ignore_errors=True)
    failed = [p.exitcode for p in workers if p.exitcode not in (0, -signal.SIGTERM)]
    return 1 if failed else 0
