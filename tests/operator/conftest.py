"""Fixtures for the operator tests: the Kubernetes API double (or a real cluster with --real-cluster).

KUBECONFIG is pointed at the double HERE, at import time, before anything imports `kubernetes`: the
client and kopf read it once and keep it."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kubedouble import ApiServerDouble

REPO = Path(__file__).resolve().parents[2]
CERT_MANAGER_CRD = REPO.parent / "shared" / "schemas" / "cert-manager.io_certificates.yaml"
_KUBECONFIG_DIR = Path(tempfile.mkdtemp(prefix="weatherfleet-kube-"))
_REAL_KUBECONFIG = os.environ.get("KUBECONFIG")
if "--real-cluster" not in sys.argv:
    os.environ["KUBECONFIG"] = str(_KUBECONFIG_DIR / "config")


@pytest.fixture(scope="session")
def kube(request: pytest.FixtureRequest) -> Iterator[ApiServerDouble | None]:
    """The double, started once, with our CRDs and cert-manager's Certificate CRD installed as `kubectl
    apply -f crds/` would. With --real-cluster: None, and the tests use $KUBECONFIG as it is."""
    if request.config.getoption("--real-cluster"):
        if not _REAL_KUBECONFIG:
            pytest.skip("--real-cluster needs KUBECONFIG pointing at a cluster")
        yield None
        return
    from helpers import install_crds

    double = ApiServerDouble().start()
    double.write_kubeconfig(Path(os.environ["KUBECONFIG"]))
    install_crds(double)
    yield double
    double.stop()
