"""kopf handlers: thin glue. Watch events update the caches and queue keys; the work queue runs the
controller (pure reconcilers + apply) with backoff; timers requeue everything for drift.

No change-detection handlers (on.create/update) on purpose: they make kopf write its bookkeeping
annotations on every object, which costs API writes for nothing in a level-triggered controller. No
finalizers: nothing outside Kubernetes needs cleaning up (children go by owner references, the rollout
plan key of a deleted fleet is removed on the DELETED event and again by any later resync)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import kopf

from .. import GROUP, VERSION
from ..observe import FleetView, MqttObserver
from ..reconcilers.common import DEVICE_LABEL, MANAGED_BY
from ..reconcilers.plan import PLAN_CONFIGMAP
from . import metrics
from .cache import resource_version
from .controller import Controller, Key, child_owner
from .devicetwin import CsrInbox, TwinPublisher, decommission
from .kube import KubeClient
from .readings import Readings, cached_window, open_store
from .settings import OperatorSettings
from .workqueue import WorkQueue

log = logging.getLogger(__name__)
MANAGED = {MANAGED_BY: "weatherfleet"}
API = f"{GROUP}/{VERSION}"
# What the handlers below watch: (apiVersion, kind, label selector)
WATCHED = (
    (API, "SensorFleet", None),
    (API, "WeatherSensor", None),
    (API, "FirmwareRelease", None),
    ("cert-manager.io/v1", "Certificate", f"{MANAGED_BY}=weatherfleet"),
    ("v1", "Secret", f"{MANAGED_BY}=weatherfleet"),
    ("v1", "ConfigMap", f"{MANAGED_BY}=weatherfleet"),
)


class Runtime:
    """Everything that lives from kopf's startup to its cleanup (a restart in tests starts afresh)."""

    def __init__(self, settings: OperatorSettings, peering: str = "") -> None:
        self.settings = settings
        self.peering = peering  # kopf's peering name; empty when standalone (this replica always leads)
        self.loop = asyncio.get_running_loop()
        self.queue = WorkQueue(settings.backoff_seconds, settings.backoff_max_seconds)
        self.executor = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="reconcile")
        self.view = FleetView(on_change=self._device_changed)
        mqtt = settings.mqtt()
        self.observer = (
            MqttObserver(
                mqtt,
                self.view,
                settings.prefixes,
                settle_seconds=settings.mqtt_settle_seconds,
                password=settings.mqtt_password,
            )
            if mqtt
            else None
        )
        self.kube = KubeClient()
        self.controller = Controller(
            settings,
            self.kube,
            self.view,
            self.enqueue_threadsafe,
            self.observer.ready if self.observer else lambda: True,
        )
        self.controller.readings = Readings(open_store(settings), cached_window(self.controller.cache))
        if self.observer is not None:
            # the device twin goes out on the operator's own MQTT connection
            self.controller.twin = TwinPublisher(self.observer.publish)
            self.observer.on_connected.append(self._mqtt_connected)
            # certificates that renew themselves: CSRs from devices, handled by their sensor's reconcile
            self.controller.csrs = CsrInbox()
            self.observer.on_csr = self._csr_received
        self.task: asyncio.Task | None = None
        self.readings_task: asyncio.Task | None = None
        self.timers: list[asyncio.Task] = []
        # Set while this replica leads (always when standalone). Reconciles wait for it, so a paused
        # replica never writes, even for work queued before kopf paused it.
        self.active = asyncio.Event()

    def enqueue(self, key: Key) -> None:
        self.queue.add(key)
        metrics.QUEUE_DEPTH.set(self.queue.depth)

    def enqueue_later(self, key: Key, delay: float) -> None:
        self.queue.add_after(key, delay)

    def enqueue_fleet_later(self, namespace: str, name: str) -> None:
        """Debounced: at least fleet_debounce_seconds, and three times what this fleet's last reconcile
        took, so a large fleet spends at most a third of the time re-rendering itself during a burst."""
        cost = self.controller.fleet_cost.get((namespace, name), 0.0)
        self.queue.add_after(
            ("SensorFleet", namespace, name), max(self.settings.fleet_debounce_seconds, 3 * cost)
        )

    def enqueue_threadsafe(self, key: Key) -> None:
        self.loop.call_soon_threadsafe(self.enqueue, key)

    def _mqtt_connected(self) -> None:
        """From paho's thread: (re)connected; every sensor's desired configuration goes out again."""
        if self.controller.twin is not None:
            self.controller.twin.forget_all()
        self.loop.call_soon_threadsafe(self._requeue_sensors)

    def _csr_received(self, device_id: str, payload: bytes) -> None:
        """From paho's thread: a device asked for a renewed certificate."""
        key = self.controller.devices.get(device_id)
        if key is not None and self.controller.csrs.put(device_id, payload):
            self.enqueue_threadsafe(key)

    def _requeue_sensors(self) -> None:
        self.enqueue_each("WeatherSensor")

    def enqueue_each(self, kind: str, namespace: str | None = None, delay: float | None = None) -> None:
        """Queue every cached object of a kind (in one namespace, or all), now or debounced by `delay`."""
        for obj in self.controller.cache.list(kind, namespace):
            key = (kind, obj["metadata"].get("namespace") or "", obj["metadata"]["name"])
            if delay is None:
                self.enqueue(key)
            else:
                self.enqueue_later(key, delay)

    def _device_changed(self, device_id: str) -> None:
        """From paho's thread: a device's status or OTA state changed."""
        metrics.DEVICES_OBSERVED.set(len(self.view))
        key = self.controller.devices.get(device_id)
        if key is None:
            return
        self.enqueue_threadsafe(key)
        body = self.controller.cache.get(*key)
        if body is not None:
            fleet = (body.get("status") or {}).get("fleet")
            if fleet:
                self.enqueue_threadsafe(("SensorFleet", key[1], fleet))

    async def handle(self, key: Any) -> float | None:
        await self.active.wait()
        return await self.loop.run_in_executor(self.executor, self.controller.reconcile, key)

    def prime(self) -> None:
        """Fill the caches with one listing per watched kind before anything is reconciled: a fleet
        reconciled before all its sensors are known would shrink its ACL and prune children, and a sensor
        reconciled before its fleet is known would flap to NotInFleet (the watch streams deliver the same
        objects, and the cache keeps the newest of each)."""
        for api_version, kind, selector in WATCHED:
            for obj in self.kube.list(api_version, kind, selector):
                self.controller.cache.put(obj)

    async def activate(self) -> None:
        """Lead: prime the caches, then reconcile (everything known is queued once)."""
        await self.loop.run_in_executor(self.executor, self.prime)
        self.active.set()
        self.resync_all()

    def resync_all(self) -> None:
        """Queue every known object (after taking over the lead: nothing was reconciled meanwhile)."""
        for kind in ("SensorFleet", "WeatherSensor", "FirmwareRelease"):
            self.enqueue_each(kind)

    def start(self) -> None:
        if self.observer:
            self.observer.start()
        self.task = asyncio.create_task(self.queue.run(self.settings.workers, self.handle))
        if self.controller.readings.store is not None:
            self.readings_task = asyncio.create_task(self._poll_readings())
        self.timers += [
            asyncio.create_task(self._every(self.settings.resync_seconds, self.resync_all)),
            asyncio.create_task(self._every(self.settings.rollout_seconds, self.rollouts_tick)),
        ]

    async def _every(self, seconds: float, tick: Callable[[], None]) -> None:
        """Call `tick` every `seconds` while this replica leads (the first time after `seconds`)."""
        while True:
            await asyncio.sleep(seconds)
            await self.active.wait()
            tick()

    def rollouts_tick(self) -> None:
        """Re-evaluate rollouts in progress: bake times pass without any event."""
        for fleet in self.controller.cache.list("SensorFleet"):
            phase = ((fleet.get("status") or {}).get("rollout") or {}).get("phase")
            if phase in ("Progressing", "Paused"):
                self.enqueue(
                    ("SensorFleet", fleet["metadata"].get("namespace") or "", fleet["metadata"]["name"])
                )

    async def _poll_readings(self) -> None:
        """One store query per interval for the whole fleet; sensors whose reading changed are requeued."""
        while True:
            await self.active.wait()
            changed = await self.loop.run_in_executor(self.executor, self.controller.readings.poll)
            for device_id in changed:
                key = self.controller.devices.get(device_id)
                if key is not None:
                    self.enqueue(key)
            await asyncio.sleep(self.settings.readings_seconds)

    async def stop(self, timeout: float = 10.0) -> None:
        """Graceful: let running reconciles finish (writes are never cut in half), then stop MQTT."""
        for task in [*self.timers, *([self.readings_task] if self.readings_task else [])]:
            task.cancel()
        await asyncio.gather(
            *self.timers, *([self.readings_task] if self.readings_task else []), return_exceptions=True
        )
        await self.queue.drained(timeout)
        if self.task:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        if self.observer:
            self.observer.stop()
        self.executor.shutdown(wait=True, cancel_futures=True)


RUNTIME: Runtime | None = None


def runtime() -> Runtime:
    assert RUNTIME is not None, "the operator has not started"
    return RUNTIME


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    global RUNTIME
    settings.posting.enabled = False  # our own Events say what matters; kopf's would cost writes
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    # kopf logs every handled watch event ("Handler 'sensor_event' succeeded") at INFO: with 10,000 sensors
    # that is most of what the operator prints and a good part of its CPU. Failures still show.
    handled = logging.getLogger("kopf.objects")
    if handled.getEffectiveLevel() == logging.INFO:
        handled.setLevel(logging.WARNING)
    # The settings are read here, when the operator starts, never at import.
    peering = "" if settings.peering.standalone else (settings.peering.name or "")
    RUNTIME = Runtime(OperatorSettings.from_env(), peering)
    if not peering:
        RUNTIME.timers.append(asyncio.create_task(RUNTIME.activate()))  # standalone: this replica leads
    metrics.serve(RUNTIME.settings.metrics_port)
    RUNTIME.start()
    log.info("weatherfleet operator started", extra={"namespace": RUNTIME.settings.namespace})


async def _lead(stopped: kopf.DaemonStopped) -> None:
    rt = runtime()
    # Let peering settle first, so two replicas starting together do not both act for a moment.
    if await stopped.wait(rt.settings.leader_settle_seconds):
        return
    await rt.activate()
    log.info("leading: this replica reconciles")
    try:
        await stopped.wait()
    finally:
        rt.active.clear()
        log.info("paused: another replica leads")


def _our_peering(name: str, **_: Any) -> bool:
    return RUNTIME is not None and bool(RUNTIME.peering) and name == RUNTIME.peering


# kopf stops every daemon when peering pauses this replica, and starts them again when it resumes: a
# daemon on the peering object itself is therefore "am I the leader".
@kopf.daemon("kopf.dev", "v1", "kopfpeerings", when=_our_peering, cancellation_timeout=5)
async def leadership(stopped: kopf.DaemonStopped, **_: Any) -> None:
    await _lead(stopped)


@kopf.daemon("kopf.dev", "v1", "clusterkopfpeerings", when=_our_peering, cancellation_timeout=5)
async def cluster_leadership(stopped: kopf.DaemonStopped, **_: Any) -> None:
    await _lead(stopped)


@kopf.on.cleanup()
async def cleanup(**_: Any) -> None:
    global RUNTIME
    if RUNTIME is not None:
        await RUNTIME.stop()
        RUNTIME = None
    log.info("weatherfleet operator stopped")


def _key(body: kopf.Body | dict) -> tuple[str, str]:
    return body["metadata"].get("namespace") or "", body["metadata"]["name"]


class _Observed(NamedTuple):
    """One watch event, with what the cache held before it."""

    before: dict | None  # the cached object the event replaces (None: new to us)
    obj: dict
    deleted: bool
    namespace: str
    name: str


def _observe(event: kopf.RawEvent) -> _Observed:
    """Keep the cache current; the event's object and what the cache held for it before."""
    cache = runtime().controller.cache
    obj = dict(event["object"])
    ns, name = _key(obj)
    before = cache.get(obj["kind"], ns, name)
    deleted = event["type"] == "DELETED"
    if deleted:
        cache.remove(obj["kind"], ns, name)
    else:
        cache.put(obj)
    return _Observed(before, obj, deleted, ns, name)


def _spec_changed(old: dict | None, new: dict) -> bool:
    """Anything but the status changed (or the object is new): what our own status writes never do."""
    if old is None:
        return True
    om, nm = old["metadata"], new["metadata"]
    return any(om.get(k) != nm.get(k) for k in ("generation", "labels", "annotations", "deletionTimestamp"))


@kopf.on.event(GROUP, VERSION, "weathersensors")
async def sensor_event(event: kopf.RawEvent, **_: Any) -> None:
    rt = runtime()
    seen = _observe(event)
    ns, name = seen.namespace, seen.name
    if seen.deleted:
        await rt.loop.run_in_executor(rt.executor, decommission, rt.controller, seen.obj)
    if seen.deleted or _spec_changed(seen.before, seen.obj):
        # Our own status writes come back as events too; they need no reconcile.
        if not seen.deleted:
            rt.enqueue(("WeatherSensor", ns, name))
        # Membership, ACL and dashboards of the fleets in the namespace may change. Debounced: 500
        # sensors created at once cost a handful of fleet reconciles, not 500.
        rt.enqueue_each("SensorFleet", ns, rt.settings.fleet_debounce_seconds)
        # Per-device releases are looked up for the namespace's sensors: the set may have changed.
        rt.enqueue_each("FirmwareRelease", ns, rt.settings.fleet_debounce_seconds)


@kopf.on.event(GROUP, VERSION, "sensorfleets")
async def fleet_event(event: kopf.RawEvent, **_: Any) -> None:
    rt = runtime()
    seen = _observe(event)
    ns = seen.namespace
    if seen.deleted or _spec_changed(seen.before, seen.obj):
        rt.enqueue(("SensorFleet", ns, seen.name))
        # Issuer, broker kind, selector: every sensor of the namespace may get other children.
        rt.enqueue_each("WeatherSensor", ns)


@kopf.on.event(GROUP, VERSION, "firmwarereleases")
async def release_event(event: kopf.RawEvent, **_: Any) -> None:
    rt = runtime()
    seen = _observe(event)
    ns, name = seen.namespace, seen.name
    if not seen.deleted and _spec_changed(seen.before, seen.obj):
        rt.enqueue(("FirmwareRelease", ns, name))
    if seen.deleted or (seen.before or {}).get("status") != seen.obj.get("status"):
        for fleet in rt.controller.cache.list("SensorFleet", ns):
            if ((fleet.get("spec") or {}).get("rollout") or {}).get("release") == name:
                rt.enqueue(("SensorFleet", ns, fleet["metadata"]["name"]))


def _child_event(event: kopf.RawEvent) -> None:
    """A child changed (cert-manager marked a Certificate Ready, someone edited or deleted a child):
    reconcile its owner, which re-applies drifted children and picks up certificate readiness."""
    rt = runtime()
    seen = _observe(event)
    obj, ns = seen.obj, seen.namespace
    echo = not seen.deleted and resource_version(seen.before) >= resource_version(obj)
    device = (obj["metadata"].get("labels") or {}).get(DEVICE_LABEL)
    if device and obj["kind"] == "Secret":
        # A device's broker password feeds its fleet's password file: also when we wrote it ourselves
        # (the sensor's reconcile made it; the fleet's password file must pick it up).
        fleet = (obj["metadata"].get("labels") or {}).get("weatherfleet.io/fleet")
        if fleet:
            rt.enqueue_fleet_later(ns, fleet)
    if echo:
        return  # the watch echoing a write of ours: the owner already knows, nothing to do
    owner = child_owner(obj)
    if owner is not None:
        rt.enqueue((owner[0], ns, owner[1]))


@kopf.on.event("cert-manager.io", "v1", "certificaterequests", labels=MANAGED)
async def certificate_request_event(event: kopf.RawEvent, **_: Any) -> None:
    """A device's renewal request was signed (or changed): its sensor publishes the certificate."""
    _child_event(event)


@kopf.on.event("cert-manager.io", "v1", "certificates", labels=MANAGED)
async def certificate_event(event: kopf.RawEvent, **_: Any) -> None:
    _child_event(event)


@kopf.on.event("", "v1", "secrets", labels=MANAGED)
async def secret_event(event: kopf.RawEvent, **_: Any) -> None:
    _child_event(event)


@kopf.on.event("", "v1", "configmaps", labels=MANAGED)
async def configmap_event(event: kopf.RawEvent, **_: Any) -> None:
    obj = event["object"]
    if obj["metadata"]["name"] == PLAN_CONFIGMAP and event["type"] != "DELETED":
        runtime().controller.cache.put(dict(obj))
        return
    _child_event(event)
