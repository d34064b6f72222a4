"""Grafana alerting for a SensorFleet, the part that needs the cluster: what the fleet's alert files held so
far (its alert ConfigMaps as they are), the Telegram bot token (from the Secret the fleet names), and the
retired file a deleted fleet leaves behind so that Grafana deletes its rules and contact point.

Grafana deletes a provisioned rule only when a file lists it under `deleteRules` (see
`weatherfleet.reconcilers.grafana`); the files themselves are the record of what was provisioned."""

from __future__ import annotations

import base64
import binascii
import logging
from typing import TYPE_CHECKING, Any

from ..models import SensorFleet
from ..reconcilers import grafana
from ..reconcilers.common import labels

if TYPE_CHECKING:
    from .controller import Controller

log = logging.getLogger(__name__)
Object = dict[str, Any]


def provisioned(ctl: Controller, namespace: str, fleet: str) -> grafana.ProvisionedAlerts:
    """What the fleet's alert ConfigMaps (its retired one included) hold now; remembered, so that a deleted
    fleet's rules are known even when garbage collection removed its ConfigMaps before we looked."""
    found = grafana.ProvisionedAlerts.from_configmaps(
        grafana.fleet_alert_configmaps(ctl.cache.list("ConfigMap", namespace), namespace, fleet)
    )
    if found.rules or found.deleted_rules or found.receivers or found.deleted_contact_points:
        ctl.alerting[(namespace, fleet)] = found
    return ctl.alerting.get((namespace, fleet), found)


def bot_token(ctl: Controller, fleet: SensorFleet) -> str | None:
    """The Telegram bot token from alerting.telegram.botTokenSecretRef, or None (not configured, Secret or
    key missing). The Secret is the user's, not ours, so it is read from the API, not the watch cache."""
    telegram = fleet.spec.alerting.telegram
    if telegram is None:
        return None
    ref = telegram.bot_token_secret_ref
    namespace = fleet.metadata.namespace
    secret = ctl.cache.get("Secret", namespace, ref.name) or ctl.kube.get("v1", "Secret", namespace, ref.name)
    value = ((secret or {}).get("data") or {}).get(ref.key)
    if not value:
        return None
    try:
        token = base64.b64decode(value).decode().strip()
    except (binascii.Error, UnicodeDecodeError):
        log.warning("Telegram token Secret is not valid base64 text", extra={"secret": ref.name})
        return None
    return token or None


def drop_retired(ctl: Controller, namespace: str, fleet: str) -> None:
    """A fleet that exists (again) carries the deletions of its retired file in its own first file."""
    cm = ctl.cache.get("ConfigMap", namespace, grafana.retired_name(fleet))
    if cm is None or cm["metadata"].get("ownerReferences"):
        return
    if ctl.kube.delete("v1", "ConfigMap", namespace, cm["metadata"]["name"], cm["metadata"]["uid"]):
        ctl.cache.remove("ConfigMap", namespace, cm["metadata"]["name"])


def retire(ctl: Controller, namespace: str, fleet: str) -> None:
    """The fleet is gone: leave `<fleet>-alerts-retired` (no owner, so garbage collection keeps it) listing
    every rule and the contact point its files provisioned, for Grafana to delete."""
    previous = provisioned(ctl, namespace, fleet)
    for child in grafana.retired_children(namespace, fleet, previous, labels(fleet)):
        ctl.apply(child)
        log.info("fleet deleted: its Grafana alerts are retired", extra={"fleet": f"{namespace}/{fleet}"})
    ctl.alerting.pop((namespace, fleet), None)
