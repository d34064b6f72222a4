"""Fixtures for the operator tests: the Kubernetes API double (or a real cluster with --real-cluster).

KUBECONFIG is pointed at the double by tests/conftest.py, at import time, before anything imports
`kubernetes`: the client and kopf read it once and keep it."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import hypothesis  # noqa: F401 - compiled now, before server threads start (CPython 3.11 AST race)
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import contextlib

from weatherfleet.apiserver import ApiServerDouble

REPO = Path(__file__).resolve().parents[2]
CERT_MANAGER_CRD = REPO.parent / "shared" / "schemas" / "cert-manager.io_certificates.yaml"
# tests/conftest.py points KUBECONFIG at the stand-in's kubeconfig unless --real-cluster is given
_REAL_KUBECONFIG = os.environ.get("KUBECONFIG") if "--real-cluster" in sys.argv else None
# The handlers read their timer intervals at import: short ones, so tests see resyncs and bake times pass.
for _name, _value in {
    "WEATHERFLEET_NAMESPACE": "weatherfleet",
    "WEATHERFLEET_RESYNC_SECONDS": "3",
    "WEATHERFLEET_ROLLOUT_SECONDS": "0.5",
    "WEATHERFLEET_BACKOFF_SECONDS": "0.5",
    "WEATHERFLEET_BACKOFF_MAX_SECONDS": "8",
    "WEATHERFLEET_STATUS_REFRESH_SECONDS": "5",
    "WEATHERFLEET_METRICS_PORT": "0",
    "WEATHERFLEET_FLEET_DEBOUNCE_SECONDS": "0.3",
    "WEATHERFLEET_STATUS_SETTLE_SECONDS": "2",
    "WEATHERFLEET_LEADER_SETTLE_SECONDS": "2",
}.items():
    os.environ.setdefault(_name, _value)
MQTT_ENV = (
    "WEATHERFLEET_MQTT_HOST",
    "WEATHERFLEET_MQTT_PORT",
    "WEATHERFLEET_MQTT_CA",
    "WEATHERFLEET_MQTT_CERT",
    "WEATHERFLEET_MQTT_KEY",
    "WEATHERFLEET_MQTT_PASSWORD",
)


def prepare_real_cluster() -> None:
    """Our CRDs applied with kubectl (server-side, as Argo CD would), cert-manager's Certificate CRD only
    when the cluster has none (never over a real cert-manager), and the operator's namespace."""
    import subprocess

    def kubectl(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["kubectl", *args], capture_output=True, text=True, check=check, timeout=120)

    reach = kubectl("get", "--raw", "/version", check=False)
    if reach.returncode != 0:
        pytest.fail(
            f"--real-cluster: the cluster in KUBECONFIG does not answer: {reach.stderr.strip()[:300]}"
        )
    kubectl("apply", "--server-side", "--field-manager=weatherfleet-tests", "-f", str(REPO / "crds"))
    if kubectl("get", "crd", "certificates.cert-manager.io", check=False).returncode != 0:
        kubectl("apply", "--server-side", "--field-manager=weatherfleet-tests", "-f", str(CERT_MANAGER_CRD))
    if kubectl("get", "namespace", "weatherfleet", check=False).returncode != 0:
        kubectl("create", "namespace", "weatherfleet")
    for crd in ("weathersensors", "sensorfleets", "firmwarereleases"):
        kubectl("wait", "--for=condition=Established", f"crd/{crd}.weatherfleet.io", "--timeout=60s")


@pytest.fixture(scope="session")
def kube(request: pytest.FixtureRequest) -> Iterator[ApiServerDouble | None]:
    """The double, started once, with our CRDs and cert-manager's Certificate CRD installed as `kubectl
    apply -f crds/` would. With --real-cluster: None, and the tests use $KUBECONFIG as it is."""
    if request.config.getoption("--real-cluster"):
        if not _REAL_KUBECONFIG:
            pytest.skip("--real-cluster needs KUBECONFIG pointing at a cluster")
        prepare_real_cluster()
        yield None
        return
    from helpers import install_crds

    double = ApiServerDouble().start()
    double.write_kubeconfig(Path(os.environ["KUBECONFIG"]))
    install_crds(double)
    yield double
    double.stop()


@pytest.fixture
def cluster(kube):
    from helpers import Cluster

    return Cluster()


@pytest.fixture
def namespace(cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace of the test's own, so device ids (certificate names) never collide between tests."""
    name = "t-" + request.node.name.replace("_", "-").lower()[:40].strip("-")
    yield cluster.namespace(name)
    with contextlib.suppress(cluster.ApiException):
        cluster.core.delete_namespace(name)


class OperatorProcess:
    """The real kopf operator (`kopf run --standalone` with our handlers) in KopfRunner's thread."""

    def __init__(self, mqtt: dict[str, str] | None = None) -> None:
        self.mqtt = mqtt or {}
        self.runner = None

    def start(self) -> OperatorProcess:
        from kopf.testing import KopfRunner

        for name in MQTT_ENV:
            os.environ.pop(name, None)
        os.environ.update(self.mqtt)
        self.runner = KopfRunner(
            ["run", "--standalone", "--all-namespaces", "-m", "weatherfleet.controller.handlers"], timeout=60
        )
        self.runner.__enter__()
        return self

    def stop(self) -> None:
        if self.runner is not None:
            self.runner.__exit__(None, None, None)
            runner, self.runner = self.runner, None
            assert runner.exception is None, runner.exception
            assert runner.exit_code == 0, runner.output[-3000:]


@pytest.fixture
def start_operator() -> Iterator:
    """Start (and restart) the operator; every instance is stopped gracefully at the end."""
    started: list[OperatorProcess] = []

    def start(mqtt: dict[str, str] | None = None) -> OperatorProcess:
        op = OperatorProcess(mqtt).start()
        started.append(op)
        return op

    yield start
    for op in started:
        op.stop()
    for name in MQTT_ENV:
        os.environ.pop(name, None)


@pytest.fixture
def fleet_broker(mosquitto_factory, mqtt_settings):
    """A broker of this test's own (retained messages of other tests cannot leak in) and the operator's
    MQTT environment for it (client certificate CN weatherfleet-operator)."""
    from weatherfleet import identities

    broker = mosquitto_factory()
    op = mqtt_settings(broker, identities.OPERATOR)
    env = {
        "WEATHERFLEET_MQTT_HOST": op.host,
        "WEATHERFLEET_MQTT_PORT": str(op.port),
        "WEATHERFLEET_MQTT_CA": str(op.ca),
        "WEATHERFLEET_MQTT_CERT": str(op.cert),
        "WEATHERFLEET_MQTT_KEY": str(op.key),
        # the services listener: the operator's login (its username is its client id, the identity)
        "WEATHERFLEET_MQTT_PASSWORD": op.password.get_secret_value(),
    }
    return broker, env, lambda identity: mqtt_settings(broker, identity)
