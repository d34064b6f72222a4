"""The objects the Grafana sidecars read for a fleet: the dashboard ConfigMap, the alert ConfigMaps, the
contact point Secret, and what stays of a deleted fleet's alerting."""

from __future__ import annotations

import json

from ...models.fleet import SensorFleet
from ...models.sensor import WeatherSensor
from ..common import Object, metadata
from .alert_rules import ProvisionedAlerts, alert_file_text, alert_files, retired_alert_file, retired_name
from .dashboard import build_dashboard
from .provisioning import ALERT_LABEL, DASHBOARD_LABEL, FOLDER_ANNOTATION, contact_point_file


def grafana_children(
    fleet: SensorFleet,
    members: list[WeatherSensor],
    lbl: dict[str, str],
    owners: list[Object],
    *,
    previous: ProvisionedAlerts | None,
    bot_token: str | None,
    routed: bool,
) -> list[Object]:
    """The dashboard ConfigMap `<fleet>-dashboard` (label grafana_dashboard, annotation grafana_folder), the
    alert ConfigMaps `<fleet>-alerts[-N]` (label grafana_alert) and, with a bot token, the Secret
    `<fleet>-alerts-contact-point` (label grafana_alert) holding the Telegram contact point: the alerts
    sidecar watches ConfigMaps and Secrets with that label and writes each key as a file into Grafana's
    alerting provisioning folder. `routed` says whether rules route to it (the fleet decides: a render
    without the token's Secret may still route to the contact point the cluster has)."""
    ns, name = fleet.metadata.namespace, fleet.metadata.name
    routed = routed and fleet.spec.alerting.telegram is not None
    board = build_dashboard(fleet, members)
    children: list[Object] = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": metadata(
                f"{name}-dashboard",
                ns,
                {**lbl, DASHBOARD_LABEL: "1"},
                owners,
                {FOLDER_ANNOTATION: fleet.spec.grafana.folder},
            ),
            "data": {f"{ns}-{name}.json": json.dumps(board, indent=2, sort_keys=True) + "\n"},
        }
    ]
    for n, doc in enumerate(alert_files(fleet, members, previous, routed)):
        suffix = "" if n == 0 else f"-{n + 1}"
        children.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": metadata(f"{name}-alerts{suffix}", ns, {**lbl, ALERT_LABEL: "1"}, owners),
                "data": {f"{ns}-{name}-alerts{suffix}.json": alert_file_text(doc)},
            }
        )
    if routed and bot_token is not None:
        children.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": metadata(f"{name}-alerts-contact-point", ns, {**lbl, ALERT_LABEL: "1"}, owners),
                "type": "Opaque",
                "stringData": {
                    f"{ns}-{name}-contact-point.json": json.dumps(
                        contact_point_file(fleet, bot_token), indent=1, sort_keys=True
                    )
                    + "\n"
                },
            }
        )
    return children


def retired_children(
    namespace: str, fleet: str, previous: ProvisionedAlerts, lbl: dict[str, str]
) -> list[Object]:
    """For a fleet that no longer exists: the ConfigMap `<fleet>-alerts-retired` (label grafana_alert, no
    owner, so it outlives the fleet) that makes Grafana delete what the fleet's files provisioned."""
    doc = retired_alert_file(namespace, fleet, previous)
    if doc is None:
        return []
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": metadata(retired_name(fleet), namespace, {**lbl, ALERT_LABEL: "1"}, []),
            "data": {f"{namespace}-{fleet}-alerts-retired.json": alert_file_text(doc)},
        }
    ]
