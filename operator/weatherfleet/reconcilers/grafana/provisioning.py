"""How Grafana reads the alerting files written here, and what the rule and contact point files share.

Grafana 12.0, pkg/services/provisioning/alerting and .../values:
- Every alerting file is read on start and on `POST /api/admin/provisioning/alerting/reload`, which the
  alerts sidecar calls after each change. Per file, rule groups are upserted first, then `deleteRules`
  are deleted; deleting a uid that does not exist is a no-op. A rule that vanishes from the files is
  *not* deleted: only `deleteRules` deletes. So the first alert file of a fleet lists under `deleteRules`
  every rule an earlier version of its files provisioned and the current one no longer has (see
  `ProvisionedAlerts`), and a deleted fleet leaves a retired file that deletes all of its rules.
- Contact points are provisioned before rules and deleted (`deleteContactPoints`) after them, so a rule
  may route to a contact point of the same reload, and a contact point is deleted only once no rule
  routes to it. Rules route by `notification_settings` (simplified routing), not by the notification
  policy tree: that tree is one per organisation, and a `policies` block in a fleet's file would replace
  the whole tree for every alert of the organisation.
- String fields of the v1 file types (`values.StringValue`, labels, contact point settings) go through
  environment expansion, where `$$` stands for `$`; rule annotations are taken raw (`Annotations.Raw`),
  so they are written without escaping.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ...models.fleet import SensorFleet

ALERT_LABEL = "grafana_alert"
DASHBOARD_LABEL = "grafana_dashboard"
# The annotation that names a dashboard's folder. The k8s-sidecar reads the annotation named by its
# FOLDER_ANNOTATION variable (default `k8s-sidecar-target-directory`) and writes the ConfigMap's files into
# that subfolder; Grafana's file provider with `foldersFromFilesStructure` makes the subfolder's name the
# dashboard folder. gitops/base/grafana sets FOLDER_ANNOTATION to this name.
FOLDER_ANNOTATION = "grafana_folder"
ORG_ID = 1


def provisioned_uid(namespace: str, fleet: str, item: str) -> str:
    """The uid of one thing a fleet provisions (a sensor's rule, the fleet's contact point)."""
    return "wf-" + hashlib.sha256(f"{namespace}/{fleet}/{item}".encode()).hexdigest()[:24]


def contact_point_name(fleet: SensorFleet) -> str:
    return f"weatherfleet-{fleet.metadata.namespace}-{fleet.metadata.name}-telegram"


def contact_point_uid(namespace: str, fleet: str) -> str:
    """The uid of a fleet's Telegram integration; "telegram" is no valid device id, so no rule shares it."""
    return provisioned_uid(namespace, fleet, "telegram")


def expanded_literal(text: str) -> str:
    """Text for a field Grafana expands environment variables in (`$NAME`, `${NAME}`): `$$` is a `$`."""
    return text.replace("$", "$$")


def compact(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def contact_point_file(fleet: SensorFleet, bot_token: str) -> dict[str, Any]:
    """The fleet's Telegram contact point as a provisioning document. It holds the bot token, so it goes
    into a Secret (`grafana_children`); Grafana expands variables in contact point settings, hence `$$`."""
    telegram = fleet.spec.alerting.telegram
    if telegram is None:
        raise ValueError(f"SensorFleet {fleet.metadata.name} has no alerting.telegram")
    return {
        "apiVersion": 1,
        "contactPoints": [
            {
                "orgId": ORG_ID,
                "name": contact_point_name(fleet),
                "receivers": [
                    {
                        "uid": contact_point_uid(fleet.metadata.namespace, fleet.metadata.name),
                        "type": "telegram",
                        "settings": {
                            "bottoken": expanded_literal(bot_token),
                            "chatid": telegram.chat_id,
                            "parse_mode": "HTML",
                        },
                        "disableResolveMessage": False,
                    }
                ],
            }
        ],
    }
