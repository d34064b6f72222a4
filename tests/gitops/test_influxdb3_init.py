"""The InfluxDB 3 init Job's script against stand-ins for the two APIs it talks to: InfluxDB 3 Core's
token and database endpoints, and the Kubernetes Secrets API. (Neither InfluxDB 3 nor a kube-apiserver
can run here; the stand-ins answer as the real endpoints do for these calls, including the refusals.)
The script runs the way the Job runs it: as a standalone program, standard library only."""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import gitops_build as gb
import gitops_standins as standins
import pytest

from weatherfleet.services.process import free_port

SCRIPT = gb.GITOPS / "base" / "influxdb3" / "init" / "influxdb3_init.py"
SA_TOKEN = standins.SA_TOKEN


def _load_script():
    spec = importlib.util.spec_from_file_location("influxdb3_init", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["influxdb3_init"] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


init = _load_script()


class InfluxStandIn:
    """InfluxDB 3 Core with authorization: the first admin token may be created without a token, after
    that every request needs it; creating an existing database answers 409."""

    def __init__(self) -> None:
        self.operator_token: str | None = None
        self.databases: set[str] = set()
        self.token_requests = 0

    def handle(self, method: str, path: str, headers, body: bytes) -> tuple[int, dict]:
        authorized = (
            self.operator_token is not None
            and headers.get("Authorization") == f"Bearer {self.operator_token}"
        )
        if method == "GET" and path == "/health":
            return (200, {"status": "pass"}) if authorized else (401, {"error": "unauthorized"})
        if method == "POST" and path == "/api/v3/configure/token/admin":
            self.token_requests += 1
            if self.operator_token is not None:
                return 401, {"error": "the operator token exists; authenticate"}
            self.operator_token = "apiv3_" + secrets.token_urlsafe(48)
            return 201, {"id": 0, "name": "_admin", "token": self.operator_token, "expiry": None}
        if method == "POST" and path == "/api/v3/configure/database":
            if not authorized:
                return 401, {"error": "unauthorized"}
            name = json.loads(body)["db"]
            if name in self.databases:
                return 409, {"error": f"attempted to create resource that already exists: {name}"}
            self.databases.add(name)
            return 200, {}
        return 404, {"error": "not found"}


@pytest.fixture
def influx() -> Iterator[tuple[InfluxStandIn, str]]:
    app = InfluxStandIn()
    for url in standins.serve(app):
        yield app, url


@pytest.fixture
def kube() -> Iterator[tuple[standins.KubeStandIn, str]]:
    app = standins.KubeStandIn()
    for url in standins.serve(app):
        yield app, url


def _settings(influx_url: str, kube_url: str, **overrides):
    values = {
        "influx_url": influx_url,
        "database": "weather",
        "secret_name": "influxdb3-token",
        "namespace": "weatherfleet",
        "kube_url": kube_url,
        "kube_token": SA_TOKEN,
        "kube_ca_file": None,
        "ready_timeout": 5.0,
        "retry_interval": 0.05,
    }
    return init.Settings(**(values | overrides))


def test_first_run_creates_token_secret_and_database(influx, kube) -> None:
    (influx_app, influx_url), (kube_app, kube_url) = influx, kube
    done = init.run(_settings(influx_url, kube_url))
    assert influx_app.operator_token is not None
    assert kube_app.token("weatherfleet", "influxdb3-token") == influx_app.operator_token
    assert influx_app.databases == {"weather"}
    assert any("created the operator token" in line for line in done)
    assert all(influx_app.operator_token not in line for line in done), "the token must never be logged"


def test_second_run_reuses_the_token_and_keeps_the_database(influx, kube) -> None:
    (influx_app, influx_url), (kube_app, kube_url) = influx, kube
    init.run(_settings(influx_url, kube_url))
    token = influx_app.operator_token
    done = init.run(_settings(influx_url, kube_url))
    assert influx_app.token_requests == 1
    assert kube_app.token("weatherfleet", "influxdb3-token") == token
    assert done == [
        "reused the operator token from Secret influxdb3-token",
        "database weather already exists",
    ]


def test_lost_secret_fails_with_the_way_out(influx, kube) -> None:
    (_, influx_url), (kube_app, kube_url) = influx, kube
    init.run(_settings(influx_url, kube_url))
    kube_app.secrets.clear()
    with pytest.raises(init.InitError, match="regenerate"):
        init.run(_settings(influx_url, kube_url))
    assert kube_app.secrets == {}, "nothing half-made is left behind"


def test_a_secret_with_a_foreign_token_is_refused(influx, kube) -> None:
    (_, influx_url), (kube_app, kube_url) = influx, kube
    init.run(_settings(influx_url, kube_url))
    kube_app.secrets[("weatherfleet", "influxdb3-token")]["data"]["token"] = base64.b64encode(
        b"stale"
    ).decode()
    with pytest.raises(init.InitError, match="rejected"):
        init.run(_settings(influx_url, kube_url))


def test_kubernetes_refusal_is_reported(influx, kube) -> None:
    (_, influx_url), (_, kube_url) = influx, kube
    with pytest.raises(init.InitError, match="HTTP 401"):
        init.run(_settings(influx_url, kube_url, kube_token="wrong"))


def test_unreachable_influxdb_times_out_clearly(kube) -> None:
    _, kube_url = kube
    with pytest.raises(init.InitError, match="did not answer within 1s"):
        init.run(_settings(f"http://127.0.0.1:{free_port()}", kube_url, ready_timeout=1.0))


def test_runs_as_the_job_runs_it(influx, kube, tmp_path: Path) -> None:
    """A separate Python process, configured only by the Job's environment and the service-account
    files, exits 0 the first time and again the second time; a failure exits 1 with one clear line."""
    (influx_app, influx_url), (kube_app, kube_url) = influx, kube
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    (sa / "token").write_text(SA_TOKEN + "\n")
    (sa / "namespace").write_text("weatherfleet")
    env = {
        "PATH": os.environ.get("PATH", ""),
        "INFLUXDB3_URL": influx_url,
        "INFLUXDB3_DATABASE": "weather",
        "TOKEN_SECRET_NAME": "influxdb3-token",
        "KUBE_API_URL": kube_url,
        "SERVICE_ACCOUNT_DIR": str(sa),
        "READY_TIMEOUT_SECONDS": "5",
    }
    for _ in range(2):
        result = subprocess.run(
            [sys.executable, "-I", str(SCRIPT)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert influx_app.operator_token not in result.stdout + result.stderr
    assert kube_app.token("weatherfleet", "influxdb3-token") == influx_app.operator_token
    kube_app.secrets.clear()
    result = subprocess.run(
        [sys.executable, "-I", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 1
    assert result.stderr.startswith("influxdb3-init: error: InfluxDB already has an operator token")


def test_job_runs_the_script_it_mounts(infrastructure: list[dict]) -> None:
    job = gb.find(infrastructure, "Job", "influxdb3-init")
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    (mount,) = container["volumeMounts"]
    script_path = container["command"][-1]
    assert script_path == f"{mount['mountPath']}/{SCRIPT.name}"
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    config_map = gb.find(infrastructure, "ConfigMap", volume["configMap"]["name"])
    assert config_map["data"][SCRIPT.name] == SCRIPT.read_text()
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["INFLUXDB3_URL"] == "http://influxdb3:8181"
    role = gb.find(infrastructure, "Role", "influxdb3-init")
    named = [r for r in role["rules"] if "get" in r["verbs"]]
    assert named and all(r.get("resourceNames") == [env["TOKEN_SECRET_NAME"]] for r in named)
