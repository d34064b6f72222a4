"""Policy over the built example cluster: hardening of every container, NetworkPolicies, disruption
budgets, RBAC, API tokens, Secrets. Each check is also shown to catch the fault it looks for."""

from __future__ import annotations

import base64
import copy
from collections.abc import Callable

import gitops_build as gb
import gitops_policy as gp
import pytest


def _is_operator(obj: dict) -> bool:
    labels = obj["metadata"].get("labels", {})
    return labels.get("app.kubernetes.io/name") == "weatherfleet-operator" or obj["kind"] == "KopfPeering"


def test_example_cluster_has_no_policy_violations(example: list[dict]) -> None:
    """Everything but the operator's own manifests (gitops/base/operator, checked separately below so a
    finding there is attributed to them); NetworkPolicies and RBAC bindings need the whole picture."""
    problems = gp.violations(example)
    operator_names = {o["metadata"]["name"] for o in example if _is_operator(o)}
    assert [p for p in problems if not any(f"/{n}" in p.split(":")[0] for n in operator_names)] == []


def test_operator_manifests_meet_the_same_policy(example: list[dict]) -> None:
    operator_names = {o["metadata"]["name"] for o in example if _is_operator(o)}
    assert "weatherfleet-operator" in operator_names
    problems = gp.violations(example)
    assert [p for p in problems if any(f"/{n}" in p.split(":")[0] for n in operator_names)] == []


def test_every_workload_is_covered(example: list[dict]) -> None:
    """The checks saw the workloads they are meant for (a policy over nothing passes trivially)."""
    workloads = {o["metadata"]["name"] for o in example if o["kind"] in gp.WORKLOAD_KINDS}
    assert {"nanomq", "otaflux", "ingest", "grafana", "influxdb3", "influxdb3-init"} <= workloads
    containers = [c for o in example for s in gp.pod_specs(o) for c in s["containers"]]
    assert len(containers) >= 8


def _mutated(objects: list[dict], kind: str, name: str, change: Callable[[dict], None]) -> list[dict]:
    objects = copy.deepcopy(objects)
    change(gb.find(objects, kind, name))
    return objects


def _otaflux_container(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda d: _otaflux_container(d).update(image="ghcr.io/weatherfleet/weatherfleet:latest"),
            "tagged latest",
        ),
        (lambda d: _otaflux_container(d).update(image="ghcr.io/weatherfleet/weatherfleet"), "no tag"),
        (lambda d: _otaflux_container(d)["resources"]["limits"].pop("memory"), "no limits.memory"),
        (lambda d: _otaflux_container(d).pop("livenessProbe"), "no livenessProbe"),
        (lambda d: _otaflux_container(d).pop("readinessProbe"), "no readinessProbe"),
        (
            lambda d: _otaflux_container(d)["securityContext"].update(readOnlyRootFilesystem=False),
            "readOnlyRootFilesystem",
        ),
        (
            lambda d: _otaflux_container(d)["securityContext"].update(allowPrivilegeEscalation=True),
            "allowPrivilegeEscalation",
        ),
        (lambda d: _otaflux_container(d)["securityContext"]["capabilities"].update(drop=[]), "drop ALL"),
        (
            lambda d: (
                _otaflux_container(d)["securityContext"].pop("runAsNonRoot"),
                d["spec"]["template"]["spec"]["securityContext"].pop("runAsNonRoot"),
            ),
            "runAsNonRoot",
        ),
        (
            lambda d: (
                _otaflux_container(d)["securityContext"].pop("seccompProfile"),
                d["spec"]["template"]["spec"]["securityContext"].pop("seccompProfile"),
            ),
            "seccompProfile",
        ),
        (lambda d: d["spec"]["template"]["spec"].update(hostNetwork=True), "hostNetwork"),
        (
            lambda d: d["spec"]["template"]["spec"]["volumes"].append(
                {"name": "h", "hostPath": {"path": "/"}}
            ),
            "hostPath",
        ),
    ],
)
def test_container_checks_catch_each_fault(infrastructure: list[dict], change, expected: str) -> None:
    assert gp.check_containers(infrastructure) == []
    found = gp.check_containers(_mutated(infrastructure, "Deployment", "otaflux", change))
    assert any(expected in problem and "otaflux" in problem for problem in found), found


def test_network_policy_checks_catch_each_fault(infrastructure: list[dict]) -> None:
    assert gp.check_network_policies(infrastructure) == []

    without_default_deny = [o for o in infrastructure if o["metadata"]["name"] != "default-deny"]
    assert any("default-deny" in p for p in gp.check_network_policies(without_default_deny))

    without_ingest_policy = [
        o for o in infrastructure if not (o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "ingest")
    ]
    assert any("Deployment/ingest" in p for p in gp.check_network_policies(without_ingest_policy))

    def open_grafana(policy: dict) -> None:
        policy["spec"]["ingress"] = [{"ports": [{"port": 3000, "protocol": "TCP"}]}]

    found = gp.check_network_policies(_mutated(infrastructure, "NetworkPolicy", "grafana", open_grafana))
    assert any("grafana open to anywhere" in p for p in found), found

    def open_database(policy: dict) -> None:
        policy["spec"]["ingress"][0]["from"].append({"namespaceSelector": {}})

    found = gp.check_network_policies(_mutated(infrastructure, "NetworkPolicy", "influxdb3", open_database))
    assert any("database influxdb3 reachable" in p for p in found), found

    def extra_port(policy: dict) -> None:
        policy["spec"]["ingress"][0]["ports"].append({"port": 9090, "protocol": "TCP"})

    found = gp.check_network_policies(_mutated(infrastructure, "NetworkPolicy", "otaflux", extra_port))
    assert any("9090" in p for p in found), found


def test_devices_reach_only_the_broker_and_otaflux(infrastructure: list[dict]) -> None:
    """Positively: exactly NanoMQ:8883 and OtaFlux:8080 accept traffic from anywhere."""
    public = set()
    for policy in (o for o in infrastructure if o["kind"] == "NetworkPolicy"):
        component = policy["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name")
        for rule in policy["spec"].get("ingress", []):
            if gp._from_anywhere(rule):
                public |= {(component, p["port"]) for p in rule.get("ports", [])}
    assert public == {("nanomq", 8883), ("otaflux", 8080)}


def test_disruption_budget_check(infrastructure: list[dict]) -> None:
    assert gp.check_disruption_budgets(infrastructure) == []
    without_pdb = [o for o in infrastructure if o["kind"] != "PodDisruptionBudget"]
    assert any("Deployment/otaflux" in p for p in gp.check_disruption_budgets(without_pdb))


@pytest.mark.parametrize(
    ("value", "verdict"),
    [
        ("PLACEHOLDER-registry-password", None),
        ("", None),
        ("# seed: no users\n", None),
        ("hunter2", "not a named placeholder"),
        ("c2VjcmV0LXRva2VuLXRoYXQtbG9va3MtcmVhbA==", "real credential"),
        ("-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\n-----END EC PRIVATE KEY-----\n", "PEM"),
        ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.abc", "JWT"),
        ('"dev-01": "Zx8vT2kq9LmN4pQr7sUw1yBc"\n', "real credential"),
    ],
)
def test_secret_value_verdicts(value: str, verdict: str | None) -> None:
    problem = gp.secret_value_problem("password", value)
    assert (problem is None) if verdict is None else (verdict in (problem or "")), problem


def test_committed_secrets_are_placeholders(example: list[dict]) -> None:
    secrets = [o for o in example if o["kind"] == "Secret"]
    assert len(secrets) >= 5
    assert gp.check_secrets(example) == []
    leaked = copy.deepcopy(secrets[0])
    leaked.pop("stringData", None)
    leaked["data"] = {"password": base64.b64encode(b"Tr0ub4dor&3-correct-horse-battery").decode()}
    assert gp.check_secrets([leaked])


def test_rbac_and_api_token_checks(infrastructure: list[dict]) -> None:
    assert gp.check_rbac(infrastructure) == []
    assert gp.check_api_tokens(infrastructure) == []

    def widen(role: dict) -> None:
        role["rules"][0]["verbs"] = ["*"]

    assert gp.check_rbac(_mutated(infrastructure, "Role", "grafana-sidecar", widen))

    def read_all_secrets(role: dict) -> None:
        role["kind"] = "ClusterRole"
        role["rules"].append({"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]})

    assert any(
        "every Secret of the cluster" in p
        for p in gp.check_rbac(_mutated(infrastructure, "Role", "influxdb3-init", read_all_secrets))
    )

    def mount_token(deployment: dict) -> None:
        deployment["spec"]["template"]["spec"]["automountServiceAccountToken"] = True

    found = gp.check_api_tokens(_mutated(infrastructure, "Deployment", "ingest", mount_token))
    assert any("Deployment/ingest" in p for p in found), found


def test_services_select_running_pods(infrastructure: list[dict]) -> None:
    assert gp.check_services(infrastructure) == []

    def typo(service: dict) -> None:
        service["spec"]["selector"] = {"app.kubernetes.io/name": "nanoqm"}

    assert gp.check_services(_mutated(infrastructure, "Service", "nanomq", typo))
