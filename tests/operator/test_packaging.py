"""Packaging checked without a container engine: the Dockerfile's properties, the operator's manifests
(kustomize build, schema validation) and its RBAC being exactly what the code uses."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from weatherfleet.cli import COMMANDS
from weatherfleet.controller.settings import ENV_PREFIX, OperatorSettings

REPO = Path(__file__).resolve().parents[2]


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) with line continuations joined and comments dropped."""
    text = (REPO / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, rest = line.partition(" ")
            out.append((instruction.upper(), rest.strip()))
    return out


def test_dockerfile_is_multistage_pinned_slim_and_non_root():
    steps = dockerfile()
    args = dict(a.split("=", 1) for i, a in steps if i == "ARG" and "=" in a)
    froms = [a for i, a in steps if i == "FROM"]
    assert len(froms) >= 2, "multi-stage"
    bases = {args.get(f.split()[0].strip("${}"), f.split()[0]) for f in froms}
    assert len(bases) == 1
    base = bases.pop()
    assert re.search(r":\d+\.\d+\.\d+-slim-\w+$", base) or "@sha256:" in base, f"not pinned: {base}"
    assert "latest" not in base
    # The runtime stage copies only built wheels from the build stage, runs as a numeric non-root user.
    runtime = steps[max(i for i, (ins, _) in enumerate(steps) if ins == "FROM") :]
    users = [a for i, a in runtime if i == "USER"]
    assert users and users[-1].split(":")[0].isdigit() and users[-1].split(":")[0] != "0"
    assert not any(i == "COPY" and "--from" not in a for i, a in runtime), "runtime ships no sources"
    assert not any(i == "ADD" for i, _ in steps), "ADD fetches URLs and unpacks archives implicitly"
    assert not any(re.search(r"(PASSWORD|TOKEN|SECRET|_KEY)=", a) for i, a in steps if i in ("ENV", "ARG"))
    # One image, three components: the entrypoint is the CLI, the command picks operator/otaflux/ingest.
    entry = [a for i, a in steps if i == "ENTRYPOINT"][-1]
    assert yaml.safe_load(entry) == ["weatherfleet"]
    assert yaml.safe_load([a for i, a in steps if i == "CMD"][-1]) == ["operator"]
    assert {"operator", "otaflux", "ingest"} <= set(COMMANDS)


def test_dockerignore_keeps_keys_and_environments_out():
    lines = (REPO / ".dockerignore").read_text().splitlines()
    ignore = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert ignore[0] == "**" and "**/*.key" in ignore and "**/*.pem" in ignore
    assert "!.venv" not in ignore and "!tests/" not in ignore


@pytest.fixture(scope="module")
def manifests() -> list[dict]:
    if not shutil.which("kubectl"):
        pytest.skip("kubectl not installed")
    out = subprocess.run(
        ["kubectl", "kustomize", str(REPO / "gitops/base/operator")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def test_manifests_validate_against_kubernetes_schemas(manifests):
    import kubernetes_validate

    for doc in manifests:
        if doc["kind"] in ("KopfPeering",):
            continue
        kubernetes_validate.validate(doc, "1.31", strict=True)


# What the operator does, by resource: the verbs it needs and nothing else (see docs/operator.md).
EXPECTED_ROLE = {
    ("weatherfleet.io", "weathersensors"): {"get", "list", "watch"},
    ("weatherfleet.io", "sensorfleets"): {"get", "list", "watch"},
    ("weatherfleet.io", "firmwarereleases"): {"get", "list", "watch"},
    ("weatherfleet.io", "weathersensors/status"): {"get", "patch"},
    ("weatherfleet.io", "sensorfleets/status"): {"get", "patch"},
    ("weatherfleet.io", "firmwarereleases/status"): {"get", "patch"},
    ("cert-manager.io", "certificates"): {"get", "list", "watch", "create", "patch", "delete"},
    ("cert-manager.io", "certificaterequests"): {"get", "list", "watch", "create", "patch", "delete"},
    ("cert-manager.io", "certificaterequests/status"): {"patch"},
    ("", "configmaps"): {"get", "list", "watch", "create", "patch", "delete"},
    ("", "secrets"): {"get", "list", "watch", "create", "patch", "delete"},
    ("", "events"): {"create", "patch"},
    ("apps", "deployments"): {"get", "patch"},
    ("kopf.dev", "kopfpeerings"): {"get", "list", "watch", "patch"},
}


def test_rbac_is_least_privilege_and_matches_what_the_operator_does(manifests):
    role = by_kind(manifests, "Role")[0]
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
        assert not {"deletecollection", "update", "escalate", "bind", "impersonate"} & set(rule["verbs"])
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    assert granted == EXPECTED_ROLE
    deployments = next(r for r in role["rules"] if "deployments" in r["resources"])
    assert deployments["resourceNames"] == ["nanomq"]
    cluster_role = by_kind(manifests, "ClusterRole")[0]
    assert cluster_role["rules"] == [
        {
            "apiGroups": ["apiextensions.k8s.io"],
            "resources": ["customresourcedefinitions"],
            "verbs": ["get", "list", "watch"],
        },
        {
            "apiGroups": ["cert-manager.io"],
            "resources": ["signers"],
            "resourceNames": ["clusterissuers.cert-manager.io/weatherfleet-ca"],
            "verbs": ["approve"],
        },
    ]
    sa = by_kind(manifests, "ServiceAccount")[0]["metadata"]["name"]
    for binding in by_kind(manifests, "RoleBinding") + by_kind(manifests, "ClusterRoleBinding"):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": "weatherfleet"}]


def test_deployment_is_hardened_and_configured_with_real_settings(manifests):
    deployment = by_kind(manifests, "Deployment")[0]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    sc = container["securityContext"]
    assert (
        sc["readOnlyRootFilesystem"]
        and not sc["allowPrivilegeEscalation"]
        and sc["capabilities"]["drop"] == ["ALL"]
    )
    assert container["args"][0] == "operator"
    args = container["args"]
    peering = args[args.index("--peering") + 1]
    assert peering in {d["metadata"]["name"] for d in by_kind(manifests, "KopfPeering")}
    assert "--standalone" not in args
    # Every WEATHERFLEET_* variable is a real setting (a typo would silently be ignored).
    for env in container["env"]:
        if env["name"].startswith(ENV_PREFIX):
            assert env["name"][len(ENV_PREFIX) :].lower() in OperatorSettings.model_fields, env["name"]
    assert any(e.get("valueFrom", {}).get("secretKeyRef") for e in container["env"])  # secrets by reference
    assert "livenessProbe" in container
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["mqtt-client"]["secret"]["secretName"] == "weatherfleet-operator-tls"
    text = shlex.join(args)
    assert "password" not in text.lower()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WEATHERFLEET_RESYNC_SECONDS": "-5"}, "WEATHERFLEET_RESYNC_SECONDS"),
        ({"WEATHERFLEET_WORKERS": "many"}, "WEATHERFLEET_WORKERS"),
        ({"WEATHERFLEET_MQTT_HOST": "nanomq"}, "mutual TLS"),
    ],
)
def test_operator_command_refuses_bad_settings_clearly(env, expected):
    import os
    import sys

    clean = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    result = subprocess.run(
        [sys.executable, "-m", "weatherfleet.cli", "operator", "--standalone"],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert expected in result.stderr and "Traceback" not in result.stderr
