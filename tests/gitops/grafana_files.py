"""What Grafana 12.0 and the k8s-sidecar do with the files the operator writes, reduced to what those files
use, written from their sources:

- grafana pkg/services/provisioning/values/values.go: `interpolateValue` (split on `$$`, expand `$NAME` and
  `${NAME}` from the environment, join with `$`);
- pkg/services/provisioning/alerting/{types,rules_types,contact_point_types}.go: the v1 file types (their
  json/yaml tags are the only keys read: Go's decoder silently ignores any other), which fields go through
  interpolation (`values.StringValue`, `StringMapValue.Value()` for labels, `JSONValue.Value()` for
  contact point settings) and which are taken raw (rule annotations: `Annotations.Raw`; the query model:
  `Model.Raw`), and what makes a file invalid;
- .../alerting/provisioner.go and rules_provisioner.go: the order of one provisioning run (contact points,
  then per file: rule groups upserted, then `deleteRules`; contact points deleted after all rules;
  deleting an unknown uid is a no-op), and ngalert's refusals (a rule routed to a contact point that does
  not exist; deleting a contact point a rule still routes to);
- k8s-sidecar src/resources.py `_get_destination_folder` and Grafana's dashboard file reader
  (`foldersFromFilesStructure`: the folder is the name of the file's directory).

Rule annotations are Go templates evaluated per alert; `{{ $labels.NAME }}` is the only construct the
operator writes, and `expand_template` evaluates exactly that.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
from dataclasses import dataclass, field

import yaml

# AlertingFileV1 and the types it nests, by their json/yaml tags.
FILE_KEYS = {
    "apiVersion", "groups", "deleteRules", "contactPoints", "deleteContactPoints", "policies",
    "resetPolicies", "muteTimes", "deleteMuteTimes", "templates", "deleteTemplates",
}  # fmt: skip
GROUP_KEYS = {"orgId", "name", "folder", "interval", "rules"}
RULE_KEYS = {
    "uid", "title", "condition", "data", "dasboardUid", "dashboardUid", "panelId", "noDataState",
    "execErrState", "for", "keepFiringFor", "missing_series_evals_to_resolve", "annotations", "labels",
    "isPaused", "notification_settings", "record",
}  # fmt: skip
QUERY_KEYS = {"refId", "queryType", "relativeTimeRange", "datasourceUid", "model"}
NOTIFICATION_SETTINGS_KEYS = {
    "receiver", "group_by", "group_wait", "group_interval", "repeat_interval", "mute_time_intervals",
    "active_time_intervals",
}  # fmt: skip
DELETE_KEYS = {"orgId", "uid"}
CONTACT_POINT_KEYS = {"orgId", "name", "receivers"}
RECEIVER_KEYS = {"uid", "type", "settings", "disableResolveMessage"}
NO_DATA_STATES = {"Alerting", "NoData", "OK", "KeepLast"}
EXEC_ERR_STATES = {"Alerting", "Error", "OK", "KeepLast"}

_VAR = re.compile(r"\$\{([^}]*)\}|\$([A-Za-z0-9_]+)")


class InvalidFile(Exception):
    """Grafana refuses the file (and with it the whole provisioning run)."""


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """values.interpolateValue: `$$` is a literal `$`; `$NAME` and `${NAME}` are environment variables."""
    env = env or {}
    parts = value.split("$$")
    return "$".join(_VAR.sub(lambda m: env.get(m.group(1) or m.group(2), ""), part) for part in parts)


def _interpolate_json(value, env):
    if isinstance(value, str):
        return interpolate(value, env)
    if isinstance(value, list):
        return [_interpolate_json(v, env) for v in value]
    if isinstance(value, dict):
        return {k: _interpolate_json(v, env) for k, v in value.items()}
    return value


def _only(obj: dict, keys: set[str], what: str) -> None:
    unknown = sorted(set(obj) - keys)
    if unknown:
        raise InvalidFile(f"{what}: Grafana does not read {unknown} (ignored silently)")


@dataclass
class Rule:
    uid: str
    title: str
    folder: str
    group: str
    labels: dict[str, str]
    annotations: dict[str, str]
    receiver: str | None
    models: list[dict]


@dataclass
class AlertingFile:
    name: str
    rules: list[Rule] = field(default_factory=list)
    delete_rules: list[str] = field(default_factory=list)
    contact_points: dict[str, dict] = field(default_factory=dict)  # integration uid -> {name, type, settings}
    delete_contact_points: list[str] = field(default_factory=list)
    policies: list[dict] = field(default_factory=list)


def read_file(name: str, text: str, env: dict[str, str] | None = None) -> AlertingFile:
    """One provisioning file as Grafana maps it to its model (AlertingFileV1.MapToModel)."""
    doc = json.loads(text) if name.endswith(".json") else yaml.safe_load(text)
    if not isinstance(doc, dict) or doc.get("apiVersion") != 1:
        raise InvalidFile(f"{name}: apiVersion 1 expected")
    _only(doc, FILE_KEYS, name)
    out = AlertingFile(name=name, policies=list(doc.get("policies") or []))
    for group in doc.get("groups") or []:
        _only(group, GROUP_KEYS, f"{name} group")
        title = interpolate(group.get("name", ""), env)
        folder = interpolate(group.get("folder", ""), env)
        if not title.strip() or not folder.strip():
            raise InvalidFile(f"{name}: a rule group needs a name and a folder")
        if not re.fullmatch(r"\d+[smhdwy]", interpolate(group.get("interval", ""), env)):
            raise InvalidFile(f"{name}: group interval {group.get('interval')!r}")
        for rule in group.get("rules") or []:
            _only(rule, RULE_KEYS, f"{name} rule")
            uid, rtitle = interpolate(rule.get("uid", ""), env), interpolate(rule.get("title", ""), env)
            if not rtitle or not uid:
                raise InvalidFile(f"{name}: a rule needs a title and a uid")
            if not rule.get("data"):
                raise InvalidFile(f"{name}: rule {uid} has no data")
            for query in rule["data"]:
                _only(query, QUERY_KEYS, f"{name} rule {uid} query")
            if not interpolate(rule.get("condition", ""), env):
                raise InvalidFile(f"{name}: rule {uid} has no condition")
            if interpolate(rule.get("noDataState", "NoData"), env) not in NO_DATA_STATES:
                raise InvalidFile(f"{name}: rule {uid} noDataState")
            if interpolate(rule.get("execErrState", "Alerting"), env) not in EXEC_ERR_STATES:
                raise InvalidFile(f"{name}: rule {uid} execErrState")
            settings = rule.get("notification_settings")
            if settings is not None:
                _only(settings, NOTIFICATION_SETTINGS_KEYS, f"{name} rule {uid} notification_settings")
                if not interpolate(settings.get("receiver", ""), env):
                    raise InvalidFile(f"{name}: rule {uid}: receiver must not be empty")
            out.rules.append(
                Rule(
                    uid=uid,
                    title=rtitle,
                    folder=folder,
                    group=title,
                    labels={k: interpolate(v, env) for k, v in (rule.get("labels") or {}).items()},
                    annotations=dict(rule.get("annotations") or {}),  # Annotations.Raw
                    receiver=interpolate(settings["receiver"], env) if settings else None,
                    models=[q["model"] for q in rule["data"]],  # Model.Raw
                )
            )
    for item in doc.get("deleteRules") or []:
        _only(item, DELETE_KEYS, f"{name} deleteRules")
        out.delete_rules.append(interpolate(item["uid"], env))
    for point in doc.get("contactPoints") or []:
        _only(point, CONTACT_POINT_KEYS, f"{name} contact point")
        cp_name = interpolate(point.get("name", ""), env).strip()
        if not cp_name:
            raise InvalidFile(f"{name}: a contact point needs a name")
        for receiver in point.get("receivers") or []:
            _only(receiver, RECEIVER_KEYS, f"{name} receiver")
            if not receiver.get("uid", "").strip() or not receiver.get("settings"):
                raise InvalidFile(f"{name}: a receiver needs a uid and settings")
            settings = _interpolate_json(receiver["settings"], env)
            if receiver.get("type") == "telegram" and not (
                settings.get("bottoken") and settings.get("chatid")
            ):
                raise InvalidFile(f"{name}: telegram needs bottoken and chatid")
            out.contact_points[receiver["uid"]] = {
                "name": cp_name,
                "type": receiver.get("type"),
                "settings": settings,
            }
    for item in doc.get("deleteContactPoints") or []:
        _only(item, DELETE_KEYS, f"{name} deleteContactPoints")
        out.delete_contact_points.append(interpolate(item["uid"], env))
    return out


@dataclass
class Grafana:
    """The state provisioning leaves: rules by uid, contact points by integration uid, the policy tree."""

    rules: dict[str, Rule] = field(default_factory=dict)
    contact_points: dict[str, dict] = field(default_factory=dict)
    policy_trees: list[str] = field(default_factory=list)  # which file set the org's tree, in order

    def provision(self, folder: dict[str, str], env: dict[str, str] | None = None) -> None:
        """One run over the provisioning folder (file name -> text), files in name order as Grafana reads
        the directory. Raises InvalidFile where Grafana's run would stop."""
        files = [read_file(n, folder[n], env) for n in sorted(folder)]
        for f in files:
            self.contact_points.update(f.contact_points)
        for f in files:
            if f.policies:
                self.policy_trees.append(f.name)  # each `policies` replaces the org's whole tree
        names = {cp["name"] for cp in self.contact_points.values()}
        for f in files:
            for rule in f.rules:
                if rule.receiver is not None and rule.receiver not in names:
                    raise InvalidFile(f"rule {rule.uid}: contact point {rule.receiver!r} does not exist")
                self.rules[rule.uid] = rule
            for uid in f.delete_rules:
                self.rules.pop(uid, None)
        for f in files:
            for uid in f.delete_contact_points:
                point = self.contact_points.get(uid)
                if point is None:
                    continue
                users = [r.uid for r in self.rules.values() if r.receiver == point["name"]]
                if users:
                    raise InvalidFile(f"contact point {point['name']} is used by rules {users}")
                del self.contact_points[uid]


def expand_template(text: str, labels: dict[str, str]) -> str:
    """The annotation as an alert shows it: `{{ $labels.NAME }}` replaced by the label's value; any other
    template action is refused here (the operator writes none)."""
    action = re.compile(r"\{\{\s*\$labels\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
    if "{{" in action.sub("", text):
        raise AssertionError(f"unexpected template action in {text!r}")
    return action.sub(lambda m: labels.get(m.group(1), ""), text)


# --- the sidecars --------------------------------------------------------------------------------------


def sidecar_env(deployment: dict, label: str) -> dict[str, str]:
    for container in deployment["spec"]["template"]["spec"]["containers"]:
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        if env.get("LABEL") == label:
            return env
    raise LookupError(f"no sidecar for label {label}")


def sidecar_files(objects: list[dict], env: dict[str, str]) -> dict[str, str]:
    """Path -> text the k8s-sidecar writes for the objects it watches: LABEL selects, RESOURCE says which
    kinds, the annotation FOLDER_ANNOTATION names (default `k8s-sidecar-target-directory`) picks a
    subfolder of FOLDER, UNIQUE_FILENAMES prefixes namespace, kind and name."""
    import base64

    kinds = {"configmap": {"ConfigMap"}, "secret": {"Secret"}, "both": {"ConfigMap", "Secret"}}[
        env.get("RESOURCE", "configmap")
    ]
    annotation = env.get("FOLDER_ANNOTATION") or "k8s-sidecar-target-directory"
    files = {}
    for obj in objects:
        labels = obj["metadata"].get("labels") or {}
        if obj["kind"] not in kinds or env["LABEL"] not in labels:
            continue
        if env.get("LABEL_VALUE") and labels[env["LABEL"]] != env["LABEL_VALUE"]:
            continue
        folder = env["FOLDER"]
        override = (obj["metadata"].get("annotations") or {}).get(annotation)
        if override:
            folder = override if posixpath.isabs(override) else posixpath.join(folder, override)
        data = dict(obj.get("data") or {})
        if obj["kind"] == "Secret":
            data = {k: base64.b64decode(v).decode() for k, v in data.items()}
            data.update(obj.get("stringData") or {})
        for key, text in data.items():
            name = key
            if env.get("UNIQUE_FILENAMES") == "true":
                kind = obj["kind"].lower()
                name = f"namespace_{obj['metadata']['namespace']}.{kind}_{obj['metadata']['name']}.{key}"
            files[posixpath.join(folder, name)] = text
    return files


def dashboard_folder(path: str, provider_path: str) -> str:
    """Grafana's file provider with foldersFromFilesStructure: the directory's name, or General at the top."""
    directory = posixpath.dirname(path)
    return (
        "General"
        if os.path.normpath(directory) == os.path.normpath(provider_path)
        else posixpath.basename(directory)
    )
