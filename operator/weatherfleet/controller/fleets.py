"""SensorFleet: gather the fleet's members, releases, device sightings and broker passwords, run the pure
`reconcile_fleet`, and write its children, status and its key of the rollout plan ConfigMap; roll the
broker when its configuration changed."""

from __future__ import annotations

import logging
import secrets
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from .. import identities
from ..durations import parse_duration
from ..models import FirmwareRelease, SensorFleet
from ..oci import signatures
from ..reconcilers.common import labels, metadata
from ..reconcilers.fleet import FleetObservation, members_of, reconcile_fleet
from ..reconcilers.plan import PLAN_CONFIGMAP, plan_entries, plan_key
from ..reconcilers.sensor import credentials_secret_name
from ..reconcilers.timescale import compressed
from ..rollout import FleetPlan
from . import alerting, metrics
from .devicetwin import ensure_crl

if TYPE_CHECKING:
    from .controller import Controller

log = logging.getLogger(__name__)
Object = dict[str, Any]


def reconcile(ctl: Controller, namespace: str, name: str) -> float | None:
    """One SensorFleet; seconds until it should be looked at again (a bake time ending), or None."""
    body = ctl.cache.get("SensorFleet", namespace, name)
    if body is None or body["metadata"].get("deletionTimestamp"):
        remove_plan(ctl, namespace, name)
        alerting.retire(ctl, namespace, name)
        return None
    # WEATHERFLEET_ROLLOUT_TIME_SCALE: bake times and timeouts compressed (demos, end-to-end tests)
    fleet: SensorFleet = compressed(ctl.parse(body), ctl.settings.rollout_time_scale)
    sensors = ctl.cached_sensors(namespace)
    fleets = ctl.cached_fleets(namespace)
    members = members_of(fleet, sensors, fleets)
    ids = [s.spec.device_id for s in members]
    releases = {}
    for rbody in ctl.cache.list("FirmwareRelease", namespace):
        try:
            release = FirmwareRelease.model_validate(rbody)
            releases[release.metadata.name] = release
        except ValidationError:
            continue
    sightings = {d: ctl.view.get(d) for d in ids}
    # NanoMQ checks every login; Mosquitto's services listener the services' (devices: their certificate)
    passwords: dict[str, str] = {}
    if fleet.spec.broker.kind == "nanomq":
        for device_id in ids:
            pw = ctl.stored_password(namespace, credentials_secret_name(device_id), ask_api=False)
            if pw:
                passwords[device_id] = pw
    with ctl.service_lock:
        service_logins(ctl, namespace, passwords)
    observation = FleetObservation(
        now=ctl.now(),
        sensors=sensors,
        fleets=fleets,
        rollout_key=rollout_key(ctl),
        releases=releases,
        devices={d: s.observation for d, s in sightings.items() if s},
        passwords=passwords,
        last_seen={d: s.last_seen for d, s in sightings.items() if s and s.status is not None},
        provisioned_alerts=alerting.provisioned(ctl, namespace, name),
        telegram_token=alerting.bot_token(ctl, fleet),
    )
    result = reconcile_fleet(fleet, observation)
    for child in result.children:
        ctl.apply(child)
    ensure_crl(ctl)  # with the broker's ACL, its CRL (when the operator keeps one): both are mounted
    ctl.prune(body, result.children)
    alerting.drop_retired(ctl, namespace, name)
    if result.broker_patch is not None:
        restart_broker_on_change(ctl, result.broker_patch, result.config_hash)
    if fleet.spec.rollout.release and not ctl.view_ready():
        # The MQTT view is still receiving retained status: decide no rollout yet. The broker's ACL and
        # logins are applied first all the same: with NanoMQ the operator cannot even log in before its
        # own password is in the file this reconcile writes.
        return 0.5
    # The status first, the plan after: the status is the rollout's source of truth and the plan is
    # derived from it, so a crash in between leaves a plan that the next reconcile rewrites, never a
    # plan ahead of the status (which would make a restarted operator open a wave again).
    status = result.status.model_dump(by_alias=True, mode="json", exclude_none=True)
    ctl.write_status(body, status)
    ctl.emit(body, result.events)
    old_plan = ctl.plan_for(namespace, name)
    write_plan(ctl, namespace, name, result.plan_key, result.plan)
    rollout = result.status.rollout
    metrics.ROLLOUT_PERCENT.labels(fleet=f"{namespace}/{name}").set(rollout.percent)
    metrics.ROLLOUT_FAILED.labels(fleet=f"{namespace}/{name}").set(rollout.failed)
    for sensor in members:
        # Only sensors whose desired version moved need their status (Desired column) updated.
        device_id = sensor.spec.device_id
        before = old_plan.version_for(device_id) if old_plan and old_plan.is_member(device_id) else None
        if result.plan.version_for(device_id) != before:
            ctl.enqueue(("WeatherSensor", namespace, sensor.metadata.name))
    if rollout.phase in ("Progressing", "Paused") and rollout.wave_started_at is not None:
        wave = fleet.spec.rollout.waves[min(rollout.wave, len(fleet.spec.rollout.waves) - 1)]
        bake = parse_duration(wave.bake_time) + rollout.paused_seconds  # paused time does not count
        due = rollout.wave_started_at + timedelta(seconds=bake)
        left = (due - ctl.now()).total_seconds()
        rollout_seconds = ctl.settings.rollout_seconds
        return max(0.2, min(left + 0.05, rollout_seconds)) if left > 0 else rollout_seconds
    return None


def rollout_key(ctl: Controller) -> Ed25519PrivateKey | None:
    """WEATHERFLEET_ROLLOUT_KEY, read once (a missing or bad key is logged, and nothing is signed)."""
    if not hasattr(ctl, "_rollout_key"):
        key = None
        path = ctl.settings.rollout_key
        if path is not None and not Path(path).exists():
            log.warning(
                "no rollout key: halted rollouts and fleet rollbacks authorise no downgrade",
                extra={"path": str(path)},
            )
        elif path is not None:
            try:
                loaded = signatures.load_private_key(Path(path).read_bytes())
                if not isinstance(loaded, Ed25519PrivateKey):
                    raise ValueError("the rollout key must be Ed25519 (what boards verify)")
                key = loaded
            except (OSError, ValueError) as exc:
                log.error("rollout key not usable, no downgrade is authorised", extra={"error": str(exc)})
        ctl._rollout_key = key
    return ctl._rollout_key


def service_logins(ctl: Controller, namespace: str, passwords: dict[str, str]) -> None:
    """Fill in the services' passwords, creating the Secret of any service that has none yet (under the
    caller's lock, so two fleets of a namespace never mint two passwords for one service)."""
    for service in identities.SERVICES:
        # Service logins are shared by every fleet of the namespace and usually made by the credentials
        # Job (gitops): read them; create one only when missing, and without an owner, so that deleting
        # a fleet never deletes a service's password.
        secret_name = credentials_secret_name(service)
        pw = ctl.stored_password(namespace, secret_name, ask_api=True)
        if not pw:
            pw = secrets.token_urlsafe(24)
            ctl.apply(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": metadata(secret_name, namespace, labels(None), []),
                    "type": "kubernetes.io/basic-auth",
                    "stringData": {"username": service, "password": pw},
                }
            )
        passwords[service] = pw


def plan_manager(namespace: str, fleet: str) -> str:
    # One field manager per fleet: each owns only its key of the shared ConfigMap, so applying one fleet's
    # plan never removes another's, and deleting a fleet removes exactly its key.
    return f"weatherfleet-plan.{namespace}.{fleet}"


def write_plan(ctl: Controller, namespace: str, fleet: str, key: str, plan: FleetPlan) -> bool:
    """Apply the fleet's two keys of the plan ConfigMap (reconcilers.plan.plan_entries) in one write, so
    the kubelet swaps both files at once; nothing when its JSON is unchanged (it holds the member blob's
    sha256, so an unchanged JSON means unchanged members)."""
    cm = ctl.cache.get("ConfigMap", ctl.settings.namespace, PLAN_CONFIGMAP)
    data, binary = plan_entries(key, plan)
    if ((cm or {}).get("data") or {}).get(key) == data[key]:
        return False
    result = ctl.kube.apply_raw(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": PLAN_CONFIGMAP, "namespace": ctl.settings.namespace, "labels": labels(None)},
            "data": data,
            "binaryData": binary,
        },
        plan_manager(namespace, fleet),
    )
    ctl.cache.put(result)
    return True


def remove_plan(ctl: Controller, namespace: str, fleet: str) -> None:
    cm = ctl.cache.get("ConfigMap", ctl.settings.namespace, PLAN_CONFIGMAP)
    if plan_key(namespace, fleet) not in ((cm or {}).get("data") or {}):
        return
    result = ctl.kube.apply_raw(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": PLAN_CONFIGMAP, "namespace": ctl.settings.namespace},
        },
        plan_manager(namespace, fleet),
    )
    ctl.cache.put(result)


def restart_broker_on_change(ctl: Controller, patch: Object, config_hash: str) -> None:
    """NanoMQ does not reload its ACL: a new config hash in the pod template rolls the broker."""
    meta = patch["metadata"]
    live = ctl.kube.get("apps/v1", "Deployment", meta["namespace"], meta["name"])
    if live is None:
        log.info("broker Deployment not found; config hash not applied", extra={"deployment": meta["name"]})
        return
    template = ((live.get("spec") or {}).get("template") or {}).get("metadata") or {}
    if (template.get("annotations") or {}).get("weatherfleet.io/config-hash") == config_hash:
        return
    ctl.kube.apply_raw(patch, "weatherfleet")
    log.info("broker configuration changed: rolling the broker", extra={"deployment": meta["name"]})
