"""The controller: glue between what the operator observes (watch caches, the MQTT fleet view, the
registry) and the pure reconcilers, and between their results and the API (apply, status, events).

Level-triggered: every reconcile computes the whole desired state from the current observations and
writes only what differs, so a resync that changes nothing writes nothing, and a restarted operator
picks up from the status it wrote before (the rollout math is idempotent on it)."""

from __future__ import annotations

import base64
import logging
import secrets
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from .. import API_VERSION, identities
from ..durations import parse_duration
from ..models import FirmwareRelease, SensorFleet, WeatherSensor, set_condition
from ..models.common import Condition
from ..models.sensor import LastReading
from ..observe import FleetView
from ..reconcilers.common import MANAGED_BY, Event, labels, metadata
from ..reconcilers.fleet import FleetObservation, fleet_for_sensor, reconcile_fleet, select_members
from ..reconcilers.plan import PLAN_CONFIGMAP, plan_json, plan_key
from ..reconcilers.sensor import (
    SensorObservation,
    credentials_secret_name,
    is_online,
    no_data_after,
    reconcile_sensor,
)
from ..rollout import FleetPlan
from . import metrics
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
PRUNABLE = (("Certificate", "cert-manager.io/v1"), ("Secret", "v1"), ("ConfigMap", "v1"))
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


def _password_of(secret: Object | None) -> str | None:
    if not secret:
        return None
    value = (secret.get("data") or {}).get("password")
    return base64.b64decode(value).decode() if value else None


def _certificate_ready(cert: Object | None) -> tuple[bool | None, str]:
    if not cert:
        return None, ""
    for cond in (cert.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            ready = {"True": True, "False": False}.get(cond.get("status"))
            return ready, cond.get("message") or ""
    return None, ""


def _created(body: Object, default: datetime) -> datetime:
    text = (body.get("metadata") or {}).get("creationTimestamp")
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else default
    except ValueError:
        return default


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
        self.releases = ReleaseResolver(settings, kube)
        self.readings = Readings(None)
        self.devices: dict[str, Key] = {}  # deviceId -> its WeatherSensor key, for MQTT-driven requeues
        self.fleet_cost: dict[tuple[str, str], float] = {}
        self._service_lock = threading.Lock()  # seconds the last reconcile of a fleet took

    def now(self) -> datetime:
        return datetime.now(UTC)

    # -- dispatch ---------------------------------------------------------------------------------------
    def reconcile(self, key: Key) -> float | None:
        kind, namespace, name = key
        started = time.perf_counter()
        try:
            again = {
                "WeatherSensor": self.reconcile_sensor,
                "SensorFleet": self.reconcile_fleet,
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
    def _parse(self, body: Object) -> Any:
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
        became_invalid = self._write_status(body, new)
        if became_invalid:
            self.kube.event(body, "Warning", "InvalidSpec", reason)

    def _write_status(self, body: Object, status: Object) -> bool:
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

    def _apply(self, child: Object) -> Object:
        meta = child["metadata"]
        live = self.cache.get(child["kind"], meta.get("namespace"), meta["name"])
        result, wrote = self.kube.apply(child, live)
        if wrote:
            self.cache.put(result)
        return result

    def _prune(self, owner: Object, desired: list[Object]) -> None:
        """Delete children this resource owns that it no longer wants (a renamed ACL ConfigMap, an alert
        ConfigMap split no longer needed, NanoMQ credentials after a switch to Mosquitto). Only objects
        labelled as ours and controlled by exactly this owner (uid) are candidates."""
        uid = owner["metadata"].get("uid")
        namespace = owner["metadata"].get("namespace")
        wanted = {(c["kind"], c["metadata"]["name"]) for c in desired}
        for kind, api_version in PRUNABLE:
            for obj in self.cache.list(kind, namespace):
                meta = obj["metadata"]
                if (kind, meta["name"]) in wanted or (meta.get("labels") or {}).get(
                    MANAGED_BY
                ) != "weatherfleet":
                    continue
                if not any(
                    r.get("controller") and r.get("uid") == uid for r in meta.get("ownerReferences") or []
                ):
                    continue
                if self.kube.delete(api_version, kind, namespace, meta["name"], meta["uid"]):
                    self.cache.remove(kind, namespace, meta["name"])
                    log.info("removed a child no longer wanted", extra={"kind": kind, "child": meta["name"]})

    def _events(self, body: Object, events: list[Event]) -> None:
        for event in events:
            self.kube.event(body, event.type, event.reason, event.message)

    def _fleets(self, namespace: str) -> list[SensorFleet]:
        fleets = []
        for body in self.cache.list("SensorFleet", namespace):
            try:
                fleets.append(SensorFleet.model_validate(body))
            except ValidationError:
                continue  # reported on the fleet itself
        return fleets

    def _sensors(self, namespace: str) -> list[WeatherSensor]:
        sensors = []
        for body in self.cache.list("WeatherSensor", namespace):
            try:
                sensors.append(WeatherSensor.model_validate(body))
            except ValidationError:
                continue  # reported on the sensor itself
        return sensors

    def password(self, namespace: str, username: str) -> str:
        """The broker password of a device or service: read from its Secret, or generated once. Before
        generating, the API is asked (not only the cache), so a password is never replaced by accident."""
        name = credentials_secret_name(username)
        secret = self.cache.get("Secret", namespace, name) or self.kube.get("v1", "Secret", namespace, name)
        existing = _password_of(secret)
        if existing:
            return existing
        return secrets.token_urlsafe(24)

    def plan_for(self, namespace: str, fleet: str) -> FleetPlan | None:
        cm = self.cache.get("ConfigMap", self.settings.namespace, PLAN_CONFIGMAP)
        text = ((cm or {}).get("data") or {}).get(plan_key(namespace, fleet))
        return FleetPlan.model_validate_json(text) if text else None

    # -- WeatherSensor ----------------------------------------------------------------------------------
    def reconcile_sensor(self, namespace: str, name: str) -> float | None:
        body = self.cache.get("WeatherSensor", namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None  # children go with it (owner references)
        sensor: WeatherSensor = self._parse(body)
        device_id = sensor.spec.device_id
        self.devices[device_id] = ("WeatherSensor", namespace, name)
        fleet = fleet_for_sensor(sensor, self._fleets(namespace))
        password = None
        if fleet is not None and fleet.spec.broker.kind == "nanomq":
            password = self.password(namespace, device_id)
        ready, message = _certificate_ready(self.cache.get("Certificate", namespace, device_id))
        now = self.now()
        sighting = self.view.get(device_id)
        reading = self.readings.get(device_id)
        device = sighting.observation if sighting else None
        heard = [
            t for t in (sighting.last_seen if sighting else None, reading.time if reading else None) if t
        ]
        last_seen = self._throttled_last_seen(sensor, fleet, max(heard), device, now) if heard else None
        last_reading = LastReading(time=reading.time, values=reading.values) if reading else None
        plan = self.plan_for(namespace, fleet.metadata.name) if fleet else None
        observation = SensorObservation(
            now=now,
            certificate_ready=ready,
            certificate_message=message,
            device=device,
            last_seen=last_seen,
            desired_version=plan.version_for(device_id) if plan and device_id in plan.devices else None,
            last_reading=last_reading,
        )
        result = reconcile_sensor(sensor, fleet, observation, password)
        for child in result.children:
            self._apply(child)
        if fleet is not None:
            # Never because no fleet matched: that may be a fleet being fixed, and a device's password
            # must not be lost to a typo in a selector.
            self._prune(body, result.children)
        first = not body.get("status")
        if first and fleet is not None and ready is None:
            # A brand-new sensor whose certificate is not issued yet: its first status would be
            # outdated within seconds. Give cert-manager a moment from when the Certificate appeared
            # (one status write instead of two); after that, report Pending as usual.
            cert = self.cache.get("Certificate", namespace, device_id)
            age = (now - _created(cert, now)).total_seconds() if cert else 0.0
            if age < self.settings.status_settle_seconds:
                return self.settings.status_settle_seconds - age
        status = result.status.model_dump(by_alias=True, mode="json", exclude_none=True)
        self._write_status(body, status)
        # On the first status, a Normal event repeats what the conditions already say; warnings always go.
        self._events(body, [e for e in result.events if not first or e.type == "Warning"])
        seen = result.status.last_seen
        if result.status.online and seen is not None:
            # Look again when the silence would turn the sensor offline.
            deadline = seen + timedelta(seconds=no_data_after(sensor, fleet))
            return max(1.0, (deadline - now).total_seconds() + 1.0)
        return None

    def _throttled_last_seen(self, sensor, fleet, seen, device, now) -> datetime | None:
        """lastSeen moves in the status at most every status_refresh_seconds, unless that changes
        whether the sensor is online: a sensor reporting every minute does not cost a write a minute."""
        old = sensor.status.last_seen
        if old is None:
            return seen
        moved = (seen - old).total_seconds() >= self.settings.status_refresh_seconds
        flips = is_online(sensor, fleet, seen, device, now) != is_online(sensor, fleet, old, device, now)
        return seen if moved or flips else None

    # -- SensorFleet ------------------------------------------------------------------------------------
    def reconcile_fleet(self, namespace: str, name: str) -> float | None:
        body = self.cache.get("SensorFleet", namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            self._remove_plan(namespace, name)
            return None
        fleet: SensorFleet = self._parse(body)
        if fleet.spec.rollout.release and not self.view_ready():
            return 0.5  # the MQTT view is still receiving retained status: decide nothing yet
        sensors = self._sensors(namespace)
        members = select_members(fleet, sensors)
        ids = [s.spec.device_id for s in members]
        releases = {}
        for rbody in self.cache.list("FirmwareRelease", namespace):
            try:
                release = FirmwareRelease.model_validate(rbody)
                releases[release.metadata.name] = release
            except ValidationError:
                continue
        sightings = {d: self.view.get(d) for d in ids}
        passwords = None
        if fleet.spec.broker.kind == "nanomq":
            passwords = {}
            for device_id in ids:
                pw = _password_of(self.cache.get("Secret", namespace, credentials_secret_name(device_id)))
                if pw:
                    passwords[device_id] = pw
            with self._service_lock:
                self._service_logins(namespace, passwords)
        observation = FleetObservation(
            now=self.now(),
            sensors=sensors,
            releases=releases,
            devices={d: s.observation for d, s in sightings.items() if s},
            passwords=passwords,
            last_seen={d: s.last_seen for d, s in sightings.items() if s and s.status is not None},
        )
        result = reconcile_fleet(fleet, observation)
        for child in result.children:
            self._apply(child)
        self._prune(body, result.children)
        if result.broker_patch is not None:
            self._restart_broker_on_change(result.broker_patch, result.config_hash)
        # The status first, the plan after: the status is the rollout's source of truth and the plan is
        # derived from it, so a crash in between leaves a plan that the next reconcile rewrites, never a
        # plan ahead of the status (which would make a restarted operator open a wave again).
        status = result.status.model_dump(by_alias=True, mode="json", exclude_none=True)
        self._write_status(body, status)
        self._events(body, result.events)
        old_plan = self.plan_for(namespace, name)
        self._write_plan(namespace, name, result.plan_key, plan_json(result.plan))
        rollout = result.status.rollout
        metrics.ROLLOUT_PERCENT.labels(fleet=f"{namespace}/{name}").set(rollout.percent)
        metrics.ROLLOUT_FAILED.labels(fleet=f"{namespace}/{name}").set(rollout.failed)
        for sensor in members:
            # Only sensors whose desired version moved need their status (Desired column) updated.
            device_id = sensor.spec.device_id
            before = old_plan.version_for(device_id) if old_plan and device_id in old_plan.devices else None
            if result.plan.version_for(device_id) != before:
                self.enqueue(("WeatherSensor", namespace, sensor.metadata.name))
        if rollout.phase in ("Progressing", "Paused") and rollout.wave_started_at is not None:
            wave = fleet.spec.rollout.waves[min(rollout.wave, len(fleet.spec.rollout.waves) - 1)]
            due = rollout.wave_started_at + timedelta(seconds=parse_duration(wave.bake_time))
            left = (due - self.now()).total_seconds()
            return (
                max(0.2, min(left + 0.05, self.settings.rollout_seconds))
                if left > 0
                else self.settings.rollout_seconds
            )
        return None

    def _service_logins(self, namespace: str, passwords: dict[str, str]) -> None:
        """Fill in the services' passwords, creating the Secret of any service that has none yet (under
        the caller's lock, so two fleets of a namespace never mint two passwords for one service)."""
        for service in identities.SERVICES:
            # Service logins are shared by every fleet of the namespace and usually made by the
            # credentials Job (gitops): read them; create one only when missing, and without an owner,
            # so that deleting a fleet never deletes a service's password.
            name_ = credentials_secret_name(service)
            existing = self.cache.get("Secret", namespace, name_) or self.kube.get(
                "v1", "Secret", namespace, name_
            )
            pw = _password_of(existing)
            if not pw:
                pw = secrets.token_urlsafe(24)
                self._apply(
                    {
                        "apiVersion": "v1",
                        "kind": "Secret",
                        "metadata": metadata(name_, namespace, labels(None), []),
                        "type": "kubernetes.io/basic-auth",
                        "stringData": {"username": service, "password": pw},
                    }
                )
            passwords[service] = pw

    def _plan_manager(self, namespace: str, fleet: str) -> str:
        # One field manager per fleet: each owns only its key of the shared ConfigMap, so applying one
        # fleet's plan never removes another's, and deleting a fleet removes exactly its key.
        return f"weatherfleet-plan.{namespace}.{fleet}"

    def _write_plan(self, namespace: str, fleet: str, key: str, text: str) -> bool:
        cm = self.cache.get("ConfigMap", self.settings.namespace, PLAN_CONFIGMAP)
        if ((cm or {}).get("data") or {}).get(key) == text:
            return False
        result = self.kube.apply_raw(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": PLAN_CONFIGMAP,
                    "namespace": self.settings.namespace,
                    "labels": labels(None),
                },
                "data": {key: text},
            },
            self._plan_manager(namespace, fleet),
        )
        self.cache.put(result)
        return True

    def _remove_plan(self, namespace: str, fleet: str) -> None:
        cm = self.cache.get("ConfigMap", self.settings.namespace, PLAN_CONFIGMAP)
        if plan_key(namespace, fleet) not in ((cm or {}).get("data") or {}):
            return
        result = self.kube.apply_raw(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": PLAN_CONFIGMAP, "namespace": self.settings.namespace},
            },
            self._plan_manager(namespace, fleet),
        )
        self.cache.put(result)

    def _restart_broker_on_change(self, patch: Object, config_hash: str) -> None:
        """NanoMQ does not reload its ACL: a new config hash in the pod template rolls the broker."""
        meta = patch["metadata"]
        live = self.kube.get("apps/v1", "Deployment", meta["namespace"], meta["name"])
        if live is None:
            log.info(
                "broker Deployment not found; config hash not applied", extra={"deployment": meta["name"]}
            )
            return
        annotations = (((live.get("spec") or {}).get("template") or {}).get("metadata") or {}).get(
            "annotations"
        ) or {}
        if annotations.get("weatherfleet.io/config-hash") == config_hash:
            return
        self.kube.apply_raw(patch, "weatherfleet")
        log.info("broker configuration changed: rolling the broker", extra={"deployment": meta["name"]})

    # -- FirmwareRelease --------------------------------------------------------------------------------
    def reconcile_release(self, namespace: str, name: str) -> float | None:
        body = self.cache.get("FirmwareRelease", namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None
        release: FirmwareRelease = self._parse(body)
        public_key_pem = None
        ref = release.spec.signature.public_key_ref
        if ref is not None:
            cm = self.kube.get("v1", "ConfigMap", namespace, ref.name)
            public_key_pem = ((cm or {}).get("data") or {}).get(ref.key)
        status, events, again = self.releases.reconcile(release, public_key_pem, self.now())
        before = (body.get("status") or {}).get("signatureVerified")
        self._write_status(body, status.model_dump(by_alias=True, mode="json", exclude_none=True))
        self._events(body, events)
        if status.signature_verified != before:
            for fleet in self._fleets(namespace):
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
