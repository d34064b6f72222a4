"""What the operator makes for the example fleet (`weatherfleet render gitops/examples`, the same pure
reconcilers the operator runs) fits what gitops deploys: the sidecars pick up its dashboards and alert
rules, Grafana has every variable they substitute and the datasource they query, OtaFlux
mounts its rollout plan, NanoMQ mounts its ACL; and nothing it makes is also deployed from git (two
owners of one object fight: Argo CD puts back what the operator changes, and the reverse)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import gitops_build as gb
import pytest
import yaml


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    result = subprocess.run(
        [sys.executable, "-m", "weatherfleet.cli", "render", str(gb.GITOPS / "examples")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=gb.REPO,
    )
    assert result.returncode == 0, result.stderr
    children = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert children, "render produced nothing for the example fleet"
    return children


def _grafana_env(example: list[dict]) -> set[str]:
    containers = gb.find(example, "Deployment", "grafana")["spec"]["template"]["spec"]["containers"]
    return {e["name"] for c in containers if c["name"] == "grafana" for e in c.get("env", [])}


def _sidecar_labels(example: list[dict]) -> set[str]:
    containers = gb.find(example, "Deployment", "grafana")["spec"]["template"]["spec"]["containers"]
    return {e["value"] for c in containers for e in c.get("env", []) if e["name"] == "LABEL"}


def test_sidecars_pick_up_dashboards_and_alerts(rendered: list[dict], example: list[dict]) -> None:
    labels = _sidecar_labels(example)
    grafana_maps = [
        o for o in rendered if o["kind"] == "ConfigMap" and labels & set(o["metadata"].get("labels", {}))
    ]
    kinds = {label for o in grafana_maps for label in labels if label in o["metadata"]["labels"]}
    assert kinds == {"grafana_dashboard", "grafana_alert"}
    for config_map in grafana_maps:
        assert config_map["metadata"]["namespace"] == "weatherfleet", "the sidecars watch their own namespace"


def test_grafana_has_every_variable_and_datasource_the_rules_use(
    rendered: list[dict], example: list[dict]
) -> None:
    env = _grafana_env(example)
    provisioning = gb.find(example, "ConfigMap", "grafana-provisioning")["data"]
    uids = {d["uid"] for d in yaml.safe_load(provisioning["datasources.yaml"])["datasources"]}
    used_variables, used_uids = set(), set()
    for config_map in (o for o in rendered if o["kind"] == "ConfigMap"):
        labels = config_map["metadata"].get("labels", {})
        if "grafana_alert" not in labels and "grafana_dashboard" not in labels:
            continue
        for text in config_map.get("data", {}).values():
            used_variables |= set(re.findall(r"\$\{?([A-Z][A-Z0-9_]*)\}?", text))
            used_uids |= set(re.findall(r'"(?:datasourceUid|uid)":\s*"(influxdb3|[a-z0-9-]+)"', text)) & {
                "influxdb3"
            }
            if "grafana_dashboard" in labels:
                json.loads(text)  # the sidecar writes it to disk as a dashboard file: it must be JSON
    assert used_variables <= env, f"Grafana lacks {sorted(used_variables - env)}"
    assert used_uids <= uids


def test_operator_files_land_where_the_workloads_read_them(
    rendered: list[dict], infrastructure: list[dict]
) -> None:
    plan = [
        o
        for o in rendered
        if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "weatherfleet-rollout-plan"
    ]
    assert plan, "render made no rollout plan"
    pod = gb.find(infrastructure, "Deployment", "otaflux")["spec"]["template"]["spec"]
    assert any(v.get("configMap", {}).get("name") == "weatherfleet-rollout-plan" for v in pod["volumes"])
    for key in plan[0]["data"]:
        assert key.endswith(".json"), "OtaFlux reads every *.json file of the mounted directory"
    acl = [o for o in rendered if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "nanomq-acl"]
    assert acl and "nanomq_acl.conf" in acl[0]["data"]
    broker = gb.find(infrastructure, "Deployment", "nanomq")["spec"]["template"]["spec"]
    assert any(v.get("configMap", {}).get("name") == "nanomq-acl" for v in broker["volumes"])


def test_nothing_has_two_owners(rendered: list[dict], example: list[dict]) -> None:
    """The seed ACL ConfigMap and password Secret are the one deliberate overlap: git holds a deny-all
    seed, the operator owns the data (Argo CD ignores it, see argocd/apps/infrastructure.yaml)."""
    shared_on_purpose = {
        ("ConfigMap", "weatherfleet", "nanomq-acl"),
        ("Secret", "weatherfleet", "nanomq-passwords"),
    }
    from_git = {gb.key(o) for o in example}
    from_operator = {gb.key(o) for o in rendered}
    both = sorted((from_git & from_operator) - shared_on_purpose)
    assert both == [], (
        f"deployed from git and also made by the operator: {both}. The broker's server certificate belongs "
        "to gitops (base/certificates): NanoMQ needs it before any fleet exists, and the cluster overlay adds "
        "the external name devices dial, which the operator's copy would remove again."
    )
