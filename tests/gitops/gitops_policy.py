"""Policy checks over built manifests: each function returns the violations it finds, as readable lines.

Pure functions over lists of objects, so the tests run them on the real build (expecting nothing) and on
deliberately broken copies (expecting the exact violation), which shows every check can fail.
"""

from __future__ import annotations

import base64
import ipaddress
import re
from collections.abc import Iterator

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod"}
BATCH_KINDS = {"Job", "CronJob"}
# Components that devices (anything outside the cluster) may reach, and on which ports.
PUBLIC_ENDPOINTS = {"nanomq": {8883}, "otaflux": {8080}}
# The databases and who may talk to them.
DATABASE_CLIENTS = {"influxdb3": {"ingest", "grafana", "weatherfleet-operator", "influxdb3-init"}}
# Secret keys whose values are identifiers, not secrets.
NON_SECRET_KEYS = {"username", "admin-user"}
PLACEHOLDER = re.compile(r"^PLACEHOLDER-[A-Za-z0-9-]+$")


def name(obj: dict) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def pod_specs(obj: dict) -> Iterator[dict]:
    kind = obj.get("kind")
    if kind == "Pod":
        yield obj["spec"]
    elif kind == "CronJob":
        yield obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    elif kind in WORKLOAD_KINDS:
        yield obj["spec"]["template"]["spec"]


def pod_labels(obj: dict) -> dict[str, str]:
    if obj["kind"] == "Pod":
        return obj["metadata"].get("labels", {})
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["metadata"].get("labels", {})
    return obj["spec"]["template"]["metadata"].get("labels", {})


def selects(selector: dict | None, labels: dict[str, str]) -> bool:
    """metav1.LabelSelector semantics (matchLabels and matchExpressions)."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        present, values = expr["key"] in labels, expr.get("values", [])
        op = expr["operator"]
        if (op == "In" and (not present or labels[expr["key"]] not in values)) or (
            op == "NotIn" and present and labels[expr["key"]] in values
        ):
            return False
        if (op == "Exists" and not present) or (op == "DoesNotExist" and present):
            return False
    return True


# --- containers ------------------------------------------------------------------------------------------


def image_problem(image: str) -> str | None:
    if "@sha256:" in image:
        return None
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return f"image {image} has no tag (means latest)"
    if last.rsplit(":", 1)[1] == "latest":
        return f"image {image} is tagged latest"
    return None


# Volume types the Pod Security "restricted" profile admits (no hostPath and friends).
RESTRICTED_VOLUME_TYPES = {
    "configMap",
    "secret",
    "emptyDir",
    "persistentVolumeClaim",
    "projected",
    "downwardAPI",
    "csi",
    "ephemeral",
}


def check_containers(objects: list[dict]) -> list[str]:
    problems: list[str] = []
    for obj in objects:
        for spec in pod_specs(obj):
            where = name(obj)
            pod_sc = spec.get("securityContext", {})
            for volume in spec.get("volumes", []):
                kinds = set(volume) - {"name"}
                if not kinds <= RESTRICTED_VOLUME_TYPES:
                    problems.append(
                        f"{where}: volume {volume['name']} is {sorted(kinds)}, not allowed in restricted"
                    )
            for flag in ("hostNetwork", "hostPID", "hostIPC"):
                if spec.get(flag):
                    problems.append(f"{where}: {flag} is set")
            containers = [(c, False) for c in spec.get("containers", [])]
            containers += [(c, True) for c in spec.get("initContainers", [])]
            for container, is_init in containers:
                cw = f"{where} container {container['name']}"
                problem = image_problem(container.get("image", ""))
                if problem:
                    problems.append(f"{cw}: {problem}")
                resources = container.get("resources", {})
                for section in ("requests", "limits"):
                    for resource in ("cpu", "memory"):
                        if resource not in resources.get(section, {}):
                            problems.append(f"{cw}: no {section}.{resource}")
                sc = container.get("securityContext", {})
                if sc.get("allowPrivilegeEscalation") is not False:
                    problems.append(f"{cw}: allowPrivilegeEscalation is not false")
                if sc.get("readOnlyRootFilesystem") is not True:
                    problems.append(f"{cw}: readOnlyRootFilesystem is not true")
                if sc.get("privileged"):
                    problems.append(f"{cw}: privileged")
                if "ALL" not in sc.get("capabilities", {}).get("drop", []):
                    problems.append(f"{cw}: capabilities do not drop ALL")
                if sc.get("capabilities", {}).get("add"):
                    problems.append(f"{cw}: adds capabilities {sc['capabilities']['add']}")
                if not sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot", False)):
                    problems.append(f"{cw}: runAsNonRoot is not true")
                if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
                    problems.append(f"{cw}: runs as uid 0")
                seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type")
                if seccomp != "RuntimeDefault":
                    problems.append(f"{cw}: seccompProfile is {seccomp!r}, not RuntimeDefault")
                long_running = obj["kind"] not in BATCH_KINDS and not is_init
                for probe in ("livenessProbe", "readinessProbe"):
                    if long_running and probe not in container:
                        problems.append(f"{cw}: no {probe}")
    return problems


# --- network policies ------------------------------------------------------------------------------------


def _is_default_deny(policy: dict) -> bool:
    spec = policy["spec"]
    return (
        spec.get("podSelector") in ({}, None)
        and set(spec.get("policyTypes", [])) == {"Ingress", "Egress"}
        and not spec.get("ingress")
        and not spec.get("egress")
    )


def _from_anywhere(rule: dict) -> bool:
    peers = rule.get("from")
    if not peers:
        return True
    for peer in peers:
        block = peer.get("ipBlock")
        if block and ipaddress.ip_network(block["cidr"]).prefixlen == 0:
            return True
        if "namespaceSelector" in peer and peer["namespaceSelector"] == {} and "podSelector" not in peer:
            return True
    return False


def check_network_policies(objects: list[dict]) -> list[str]:
    problems: list[str] = []
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    workloads = [o for o in objects if o["kind"] in WORKLOAD_KINDS]
    namespaces = {o["metadata"].get("namespace") for o in workloads}
    for ns in sorted(n or "" for n in namespaces):
        if not any(_is_default_deny(p) for p in policies if p["metadata"].get("namespace", "") == ns):
            problems.append(f"namespace {ns!r}: no default-deny NetworkPolicy")
    specific = [p for p in policies if p["spec"].get("podSelector")]
    for obj in workloads:
        labels = pod_labels(obj)
        if not any(selects(p["spec"]["podSelector"], labels) for p in specific):
            problems.append(f"{name(obj)}: no NetworkPolicy selects its pods (it can talk to nothing)")
    for policy in specific:
        component = policy["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name", "")
        for rule in policy["spec"].get("ingress", []):
            if not _from_anywhere(rule):
                continue
            ports = {p.get("port") for p in rule.get("ports", [])} or {"all ports"}
            allowed = PUBLIC_ENDPOINTS.get(component, set())
            if not ports <= allowed:
                problems.append(
                    f"{name(policy)}: {component or 'pods'} open to anywhere on {sorted(map(str, ports))}; "
                    f"only {sorted(PUBLIC_ENDPOINTS)} may face devices"
                )
        if component in DATABASE_CLIENTS:
            for rule in policy["spec"].get("ingress", []):
                clients = set()
                for peer in rule.get("from", []) or [{}]:
                    selector = peer.get("podSelector")
                    if selector is None or "namespaceSelector" in peer or "ipBlock" in peer:
                        clients.add("<outside the namespace>")
                    else:
                        clients.add(
                            selector.get("matchLabels", {}).get("app.kubernetes.io/name", "<any pod>")
                        )
                extra = clients - DATABASE_CLIENTS[component]
                if extra:
                    problems.append(f"{name(policy)}: database {component} reachable by {sorted(extra)}")
    return problems


# --- disruption budgets ----------------------------------------------------------------------------------


def check_disruption_budgets(objects: list[dict]) -> list[str]:
    """Every workload that runs two or more replicas (itself or through an HPA) keeps one up in drains."""
    problems: list[str] = []
    pdbs = [o for o in objects if o["kind"] == "PodDisruptionBudget"]
    hpa_min = {
        o["spec"]["scaleTargetRef"]["name"]: o["spec"].get("minReplicas", 1)
        for o in objects
        if o["kind"] == "HorizontalPodAutoscaler"
    }
    for obj in objects:
        if obj["kind"] not in {"Deployment", "StatefulSet"}:
            continue
        replicas = max(obj["spec"].get("replicas", 1), hpa_min.get(obj["metadata"]["name"], 0))
        if replicas < 2:
            continue
        labels = pod_labels(obj)
        if not any(selects(p["spec"].get("selector"), labels) for p in pdbs):
            problems.append(f"{name(obj)}: {replicas} replicas but no PodDisruptionBudget")
    return problems


# --- secrets ---------------------------------------------------------------------------------------------

_PEM = re.compile(r"-----BEGIN [A-Z ]+-----")
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.")
_HIGH_ENTROPY = re.compile(r"[A-Za-z0-9+/_=-]{24,}")


def _secret_values(secret: dict) -> Iterator[tuple[str, str]]:
    for key, value in (secret.get("stringData") or {}).items():
        yield key, value
    for key, value in (secret.get("data") or {}).items():
        try:
            yield key, base64.b64decode(value).decode()
        except (ValueError, UnicodeDecodeError):
            yield key, "<binary>"


def secret_value_problem(key: str, value: str) -> str | None:
    if _PEM.search(value):
        return "holds a PEM block"
    if _JWT.search(value):
        return "holds a JWT"
    if key in NON_SECRET_KEYS and re.fullmatch(r"[a-z][a-z0-9_.-]{0,62}", value):
        return None
    meaningful = [
        line.strip() for line in value.splitlines() if line.strip() and not line.strip().startswith("#")
    ]
    if not meaningful:
        return None  # empty, or comments only (a seed file)
    if len(meaningful) == 1 and PLACEHOLDER.match(meaningful[0]):
        return None
    if any(_HIGH_ENTROPY.search(line) and not PLACEHOLDER.match(line) for line in meaningful):
        return "looks like a real credential"
    return "is not a named placeholder (PLACEHOLDER-...)"


def check_secrets(objects: list[dict]) -> list[str]:
    problems = []
    for secret in (o for o in objects if o["kind"] == "Secret"):
        for key, value in _secret_values(secret):
            problem = secret_value_problem(key, value)
            if problem:
                problems.append(f"{name(secret)} key {key}: {problem}")
    return problems


# --- RBAC and API tokens ---------------------------------------------------------------------------------


def check_rbac(objects: list[dict]) -> list[str]:
    problems = []
    for role in (o for o in objects if o["kind"] in {"Role", "ClusterRole"}):
        for rule in role.get("rules", []):
            for field in ("apiGroups", "resources", "verbs"):
                if "*" in rule.get(field, []):
                    problems.append(f"{name(role)}: wildcard in {field}")
            reads_secrets = "secrets" in rule.get("resources", []) and {"list", "watch"} & set(
                rule.get("verbs", [])
            )
            if reads_secrets and role["kind"] == "ClusterRole":
                problems.append(f"{name(role)}: may list or watch every Secret of the cluster")
    return problems


def check_api_tokens(objects: list[dict]) -> list[str]:
    """A pod gets a Kubernetes API token only when its ServiceAccount is bound to a role."""
    problems = []
    accounts = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ServiceAccount"}
    bound = {
        s["name"]
        for b in objects
        if b["kind"] in {"RoleBinding", "ClusterRoleBinding"}
        for s in b.get("subjects", [])
        if s.get("kind") == "ServiceAccount"
    }
    for obj in objects:
        for spec in pod_specs(obj):
            account = spec.get("serviceAccountName", "default")
            if account not in accounts:
                problems.append(f"{name(obj)}: ServiceAccount {account} is not in the manifests")
                continue
            automount = spec.get(
                "automountServiceAccountToken", accounts[account].get("automountServiceAccountToken", True)
            )
            if automount and account not in bound:
                problems.append(f"{name(obj)}: mounts an API token but {account} has no role")
    return problems


def check_services(objects: list[dict]) -> list[str]:
    """Every Service selects the pods of some workload in the build."""
    problems = []
    workloads = [o for o in objects if o["kind"] in WORKLOAD_KINDS]
    for service in (o for o in objects if o["kind"] == "Service"):
        selector = service["spec"].get("selector")
        if selector and not any(selects({"matchLabels": selector}, pod_labels(w)) for w in workloads):
            problems.append(f"{name(service)}: selects no pods")
    return problems


ALL_CHECKS = (
    check_containers,
    check_network_policies,
    check_disruption_budgets,
    check_secrets,
    check_rbac,
    check_api_tokens,
    check_services,
)


def violations(objects: list[dict]) -> list[str]:
    return [problem for check in ALL_CHECKS for problem in check(objects)]
