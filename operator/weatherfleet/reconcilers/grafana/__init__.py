"""Grafana for a fleet: a dashboard (built with grafana-foundation-sdk) and "no data" alert rules, both as
ConfigMaps for the Grafana Helm chart's sidecar (labels `grafana_dashboard` / `grafana_alert`), and the
fleet's Telegram contact point as a Secret with the `grafana_alert` label (it holds the bot token).

One module per concern, all pure: `datasource` (the InfluxDB 3 tables, caches and SQL query target),
`dashboard` (panels and variables), `alert_rules` (rules, deletions, the alert file text),
`provisioning` (how Grafana reads the files; the contact point) and `children` (the ConfigMaps and the
Secret). The names the rest of weatherfleet uses are here.
"""

from __future__ import annotations

from .alert_rules import ProvisionedAlerts, fleet_alert_configmaps, retired_name
from .children import grafana_children, retired_children
from .dashboard import build_dashboard
from .provisioning import ALERT_LABEL, DASHBOARD_LABEL, FOLDER_ANNOTATION, contact_point_file

__all__ = [
    "ALERT_LABEL",
    "DASHBOARD_LABEL",
    "FOLDER_ANNOTATION",
    "ProvisionedAlerts",
    "build_dashboard",
    "contact_point_file",
    "fleet_alert_configmaps",
    "grafana_children",
    "retired_children",
    "retired_name",
]
