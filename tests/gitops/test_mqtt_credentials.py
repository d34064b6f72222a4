"""The credentials Job: each service identity gets `<identity>-mqtt-credentials` (basic-auth, random
password) unless it exists, against a stand-in for the Kubernetes Secrets API; run standalone as the Job
runs it. Its output is what the operator reads before it would generate a password itself."""

from __future__ import annotations

import base64
import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import gitops_build as gb
import gitops_standins as standins
import pytest

from weatherfleet import identities

SCRIPT = gb.GITOPS / "base" / "credentials" / "init" / "mqtt_credentials.py"


def _load():
    spec = importlib.util.spec_from_file_location("mqtt_credentials", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["mqtt_credentials"] = module
    spec.loader.exec_module(module)
    return module


creds = _load()


@pytest.fixture
def kube() -> Iterator[tuple[standins.KubeStandIn, str]]:
    app = standins.KubeStandIn()
    for url in standins.serve(app):
        yield app, url


def _settings(url: str, token: str = standins.SA_TOKEN):
    return creds.Settings(
        identities=identities.SERVICES,
        namespace="weatherfleet",
        kube_url=url,
        kube_token=token,
        kube_ca_file=None,
    )


def _password(app: standins.KubeStandIn, identity: str) -> str:
    secret = app.secrets[("weatherfleet", f"{identity}-mqtt-credentials")]
    return secret["stringData"]["password"]


def test_creates_one_login_per_identity_and_keeps_them(kube) -> None:
    app, url = kube
    done = creds.run(_settings(url))
    assert done == [f"created Secret {i}-mqtt-credentials" for i in identities.SERVICES]
    first = {i: _password(app, i) for i in identities.SERVICES}
    for identity in identities.SERVICES:
        secret = app.secrets[("weatherfleet", f"{identity}-mqtt-credentials")]
        assert secret["type"] == "kubernetes.io/basic-auth"
        assert secret["stringData"]["username"] == identity
        assert len(first[identity]) >= 24
    assert len(set(first.values())) == len(first), "every identity gets its own password"
    assert all(p not in "\n".join(done) for p in first.values()), "no password in the output"
    assert creds.run(_settings(url)) == [f"kept Secret {i}-mqtt-credentials" for i in identities.SERVICES]
    assert {i: _password(app, i) for i in identities.SERVICES} == first


def test_an_existing_secret_is_never_replaced(kube) -> None:
    app, url = kube
    app.secrets[("weatherfleet", f"{identities.OPERATOR}-mqtt-credentials")] = {
        "metadata": {"name": f"{identities.OPERATOR}-mqtt-credentials"},
        "data": {"password": base64.b64encode(b"made-by-the-operator").decode()},
    }
    done = creds.run(_settings(url))
    assert f"kept Secret {identities.OPERATOR}-mqtt-credentials" in done
    stored = app.secrets[("weatherfleet", f"{identities.OPERATOR}-mqtt-credentials")]
    assert base64.b64decode(stored["data"]["password"]) == b"made-by-the-operator"


def test_refusal_is_reported(kube) -> None:
    _, url = kube
    with pytest.raises(creds.CredentialsError, match="HTTP 401"):
        creds.run(_settings(url, token="wrong"))


def test_runs_as_the_job_runs_it(kube, tmp_path: Path) -> None:
    app, url = kube
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text(standins.SA_TOKEN)
    (sa / "namespace").write_text("weatherfleet")
    job = gb.find(gb.build(gb.GITOPS / "base" / "credentials"), "Job", "mqtt-credentials-init")
    container = job["spec"]["template"]["spec"]["containers"][0]
    job_env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    assert set(job_env["IDENTITIES"].split(",")) == set(identities.SERVICES)
    env = {"PATH": os.environ.get("PATH", ""), "KUBE_API_URL": url, "SERVICE_ACCOUNT_DIR": str(sa), **job_env}
    result = subprocess.run(
        [sys.executable, "-I", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert len(app.secrets) == len(identities.SERVICES)
    result = subprocess.run(
        [sys.executable, "-I", str(SCRIPT)],
        env=env | {"IDENTITIES": ""},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("mqtt-credentials: error: IDENTITIES is empty")


def test_role_reads_only_the_secrets_it_manages() -> None:
    objects = gb.build(gb.GITOPS / "base" / "credentials")
    role = gb.find(objects, "Role", "mqtt-credentials-init")
    readable = {n for r in role["rules"] if "get" in r["verbs"] for n in r["resourceNames"]}
    assert readable == {f"{i}-mqtt-credentials" for i in identities.SERVICES}
