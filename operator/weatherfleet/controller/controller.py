"""The controller: glue between what the operator observes (watch caches, the MQTT fleet view, the
registry) and the pure reconcilers, and between their results and the API (apply, status, events).

Level-triggered: every reconcile computes the whole desired state from the current observations and
writes only what differs, so a resync that changes nothing writes nothing, and a restarted operator
picks up from the status it wrote before (the rollout math is idempotent on it).

This module holds the dispatch and the glue every kind shares (parse, status merge patches, applying and
pruning children, events); `sensors` and `fleets` hold what is particular to WeatherSensor and SensorFleet."""

from __future__ import annotations

import base64
import logging
import secrets
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from .. import API_VERSION
from ..models import FirmwareRelease, SensorFleet, WeatherSensor, set_condition
from ..models.common import Condition
from ..observe import FleetView
from ..reconcilers.common import MANAGED_BY, Event
from ..reconcilers.grafana import ProvisionedAlerts
from ..reconcilers.plan import PLAN_CONFIGMAP, plan_from_configmap, plan_key
from ..reconcilers.sensor import credentials_secret_name
from ..rollout import FleetPlan
from . import fleets, metrics, sensors
from .cache import ObjectCache
from .kube import KubeClient
from .readings import Readings
from .releases import ReleaseResolver
from .settings import OperatorSettings
from .statuspatch import merge_diff, prune_none

log = logging.getLogger(__name__)
Object = dict[str, Any]
Key = tuple[str, str, str]  # (kind, namespace, name)
Enqueue = Callable[[Key], None]
PRUNABLE = {"Certificate": "cert-manager.io/v1", "Secret": "v1", "ConfigMap": "v1"}  # kind -> apiVersion
MODELS = {"WeatherSensor": WeatherSensor, "SensorFleet": SensorFleet, "FirmwareRelease": FirmwareRelease}


class InvalidResource(Exception):
    """The API accepted the object but the model rejects it; retried with backoff (it may be fixed)."""


def field_errors(exc: ValidationError) -> str:
    """`spec.sensors[0].i2c: bme280 is an I2C sensor ...` for each error, by the YAML field names."""
    parts = []
    for error in exc.errors()[:5]:
        loc = ""
        for item in error["loc"]:
            loc += f"[{item}]" if isinstance(item, int) else (f".{item}" if loc else str(item))
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {message}" if loc else message)
    return "; ".join(parts)


class Controller:
    def __init__(
        self,
        settings: OperatorSettings,
        kube: KubeClient,
        view: FleetView,
        enqueue: Enqueue,
        view_ready: Callable[[], bool] = lambda: True,
    ) -> None:
        self.settings, self.kube, self.view, self.enqueue = settings, kube, view, enqueue
        self.view_ready = view_ready
        self.cache = ObjectCache()
        self.alerting: dict[tuple[str, str], ProvisionedAlerts] = {}  # last known alert files per fleet
        self.releases = ReleaseResolver(settings, kube)
        self.readings = Readings(None)
        self.twin = None  # a devicetwin.TwinPublisher when the operator has an MQTT connection
        self.devices: dict[str, Key] = {}  # deviceId -> its WeatherSensor key, for MQTT-driven requeues
        self.fleet_cost: dict[tuple[str, str], float] = {}  # seconds the last reconcile of a fleet took
        self.service_lock = threading.Lock()  # one fleet at a time mints a missing service password
        self._plans: dict[tuple[str, str], tuple[str, FleetPlan]] = {}  # (namespace, fleet) -> (text, plan)

    def now(self) -> datetime:
        return datetime.now(UTC)

    # -- dispatch ---------------------------------------------------------------------------------------
    def reconcile(self, key: Key) -> float | None:
        kind, namespace, name = key
        started = time.perf_counter()
        try:
            again = {
                "WeatherSensor": lambda ns, n: sensors.reconcile(self, ns, n),
                "SensorFleet": lambda ns, n: fleets.reconcile(self, ns, n),
                "FirmwareRelease": self.reconcile_release,
            }[kind](namespace, name)
        except InvalidResource as exc:
            metrics.RECONCILES.labels(kind=kind, outcome="invalid").inc()
            log.warning(
                "invalid resource, will retry with backoff", extra={"key": "/".join(key), "error": str(exc)}
            )
            raise
        except Exception:
            metrics.RECONCILES.labels(kind=kind, outcome="error").inc()
            log.exception("reconcile failed, will retry with backoff", extra={"key": "/".join(key)})
            raise
        took = time.perf_counter() - started
        metrics.RECONCILES.labels(kind=kind, outcome="ok").inc()
        metrics.RECONCILE_SECONDS.labels(kind=kind).observe(took)
        if kind == "SensorFleet":
            self.fleet_cost[(namespace, name)] = took
        return again

    # -- shared glue ------------------------------------------------------------------------------------
    def parse(self, body: Object) -> Any:
        """The model of a cached object, or InvalidResource after saying why in its status."""
        model = MODELS[body["kind"]]
        try:
            return model.model_validate(body)
        except ValidationError as exc:
            reason = field_errors(exc)
            self._write_invalid(body, reason)
            raise InvalidResource(f"{body['kind']} {body['metadata']['name']}: {reason}") from exc

    def _write_invalid(self, body: Object, reason: str) -> None:
        status = dict(body.get("status") or {})
        try:
            conds = [Condition.model_validate(c) for c in status.get("conditions") or []]
        except ValidationError:
            conds = []
        generation = body["metadata"].get("generation")
        conds = set_condition(conds, "Ready", "False", "InvalidSpec", reason, self.now(), generation)
        new = {
            **status,
            "conditions": [c.model_dump(by_alias=True, mode="json", exclude_none=True) for c in conds],
        }
        new["observedGeneration"] = generation
        became_invalid = self.write_status(body, new)
        if became_invalid:
            self.kube.event(body, "Warning", "InvalidSpec", reason)

    def write_status(self, body: Object, status: Object) -> bool:
        """Merge-patch the status if it differs from the live one. Returns whether a Ready-ish condition
        changed (the caller may want an event)."""
        old = prune_none(body.get("status") or {})
        new = prune_none(status)
        patch = merge_diff(old, new)
        if patch is None:
            return False
        meta = body["metadata"]
        result = self.kube.patch_status(
            body["apiVersion"], body["kind"], meta["namespace"], meta["name"], patch
        )
        self.cache.put(result)
        old_ready = {c.get("type"): c.get("reason") for c in old.get("conditions") or []}
        new_ready = {c.get("type"): c.get("reason") for c in new.get("conditions") or []}
        return old_ready.get("Ready") != new_ready.get("Ready")

    def apply(self, child: Object) -> Object:
        meta = child["metadata"]
        live = self.cache.get(child["kind"], meta.get("namespace"), meta["name"])
        result, wrote = self.kube.apply(child, live)
        if wrote:
            self.cache.put(result)
        return result

    def prune(self, owner: Object, desired: list[Object]) -> None:
        """Delete children this resource owns that it no longer wants (a renamed ACL ConfigMap, an alert
        ConfigMap split no longer needed, NanoMQ credentials after a switch to Mosquitto). Only objects
        labelled as ours and controlled by exactly this owner (uid) are candidates."""
        uid = owner["metadata"].get("uid")
        namespace = owner["metadata"].get("namespace")
        wanted = {(c["kind"], c["metadata"]["name"]) for c in desired}
        for obj in self.cache.owned_by(uid) if uid else []:
            kind, meta = obj["kind"], obj["metadata"]
            api_version = PRUNABLE.get(kind)
            if api_version is None or meta.get("namespace") != namespace or (kind, meta["name"]) in wanted:
                continue
            if (meta.get("labels") or {}).get(MANAGED_BY) != "weatherfleet":
                continue
            if self.kube.delete(api_version, kind, namespace, meta["name"], meta["uid"]):
                self.cache.remove(kind, namespace, meta["name"])
                log.info("removed a child no longer wanted", extra={"kind": kind, "child": meta["name"]})

    def emit(self, body: Object, events: list[Event]) -> None:
        for event in events:
            self.kube.event(body, event.type, event.reason, event.message)

    def cached_fleets(self, namespace: str) -> list[SensorFleet]:
        """The valid SensorFleets of a namespace (an invalid one is reported on itself)."""
        return self._valid(SensorFleet, namespace)

    def cached_sensors(self, namespace: str) -> list[WeatherSensor]:
        """The valid WeatherSensors of a namespace (an invalid one is reported on itself)."""
        return self._valid(WeatherSensor, namespace)

    def _valid(self, model: Any, namespace: str) -> list[Any]:
        found = []
        for body in self.cache.list(model.__name__, namespace):
            try:
                found.append(model.model_validate(body))
            except ValidationError:
                continue
        return found

    def stored_password(self, namespace: str, secret_name: str, ask_api: bool) -> str | None:
        """The password in a basic-auth Secret: from the cache, and when `ask_api` also from the API if the
        cache has none (before a password is generated, so one is never replaced by accident)."""
        secret = self.cache.get("Secret", namespace, secret_name)
        if secret is None and ask_api:
            secret = self.kube.get("v1", "Secret", namespace, secret_name)
        value = ((secret or {}).get("data") or {}).get("password")
        return base64.b64decode(value).decode() if value else None

    def password(self, namespace: str, username: str) -> str:
        """The broker password of a device: read from its Secret, or generated once."""
        existing = self.stored_password(namespace, credentials_secret_name(username), ask_api=True)
        return existing or secrets.token_urlsafe(24)

    def plan_for(self, namespace: str, fleet: str) -> FleetPlan | None:
        """The fleet's rollout plan as last written, parsed once per change (every sensor reconcile reads
        it: parsing it each time would make a fleet's reconciles cost N x N)."""
        cm = self.cache.get("ConfigMap", self.settings.namespace, PLAN_CONFIGMAP)
        text = ((cm or {}).get("data") or {}).get(plan_key(namespace, fleet))
        if not text:
            return None
        cached = self._plans.get((namespace, fleet))
        if cached is None or cached[0] != text:  # the text holds the member blob's sha256
            cached = (text, plan_from_configmap(cm, plan_key(namespace, fleet)))
            self._plans[(namespace, fleet)] = cached
        return cached[1]

    # -- FirmwareRelease --------------------------------------------------------------------------------
    def reconcile_release(self, namespace: str, name: str) -> float | None:
        body = self.cache.get("FirmwareRelease", namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        release: FirmwareRelease = self.parse(body)
        public_key_pem = None
        ref = release.spec.signature.public_key_ref
        if ref is not None:
            cm = self.kube.get("v1", "ConfigMap", namespace, ref.name)
            public_key_pem = ((cm or {}).get("data") or {}).get(ref.key)
        # a per-device release is looked up for the namespace's sensors that take it: OTA on its channel
        devices = [
            s.spec.device_id
            for s in self.cached_sensors(namespace)
            if s.spec.features.ota and s.spec.firmware.channel == release.spec.channel
        ]
        status, events, again = self.releases.reconcile(release, public_key_pem, self.now(), devices)
        old = body.get("status") or {}
        new = status.model_dump(by_alias=True, mode="json", exclude_none=True)
        self.write_status(body, new)
        self.emit(body, events)
        if any(old.get(k) != new.get(k) for k in ("signatureVerified", "unavailableDevices", "devices")):
            for fleet in self.cached_fleets(namespace):
                if fleet.spec.rollout.release == name:
                    self.enqueue(("SensorFleet", namespace, fleet.metadata.name))
        return again


def child_owner(obj: Object) -> tuple[str, str] | None:
    """(kind, name) of the weatherfleet resource that owns a child, from its controller reference."""
    if (obj["metadata"].get("labels") or {}).get(MANAGED_BY) != "weatherfleet":
        return None
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller") and ref.get("apiVersion") == API_VERSION:
            return ref["kind"], ref["name"]
    return None
