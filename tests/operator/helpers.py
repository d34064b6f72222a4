"""Helpers shared by the operator tests and bench/operator.py."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import yaml

REPO = Path(__file__).resolve().parents[2]
CERT_MANAGER_CRD = REPO.parent / "shared" / "schemas" / "cert-manager.io_certificates.yaml"
T = TypeVar("T")


def crd_documents() -> list[dict]:
    docs = [yaml.safe_load(p.read_text()) for p in sorted((REPO / "crds").glob("*.yaml"))]
    if CERT_MANAGER_CRD.exists():
        docs.append(yaml.safe_load(CERT_MANAGER_CRD.read_text()))
    return docs


def install_crds(double) -> None:
    def create(store):
        crd_type = store.type_for("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        for doc in crd_documents():
            store.create(crd_type, None, doc)
        store.create(store.type_for("", "v1", "namespaces"), None, {"metadata": {"name": "weatherfleet"}})

    double.call(create)


def wait_for(predicate: Callable[[], T], timeout: float = 60.0, what: str = "condition") -> T:
    """Poll until `predicate()` returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last})" if last else "")
    )
