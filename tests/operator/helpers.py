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
    else:
        # Without ../shared/schemas the kind must still exist (the operator writes Certificates); its
        # objects are then kept as they come, unvalidated.
        docs.append(_SCHEMALESS_CERTIFICATE_CRD)
    # The operator turns device CSRs into CertificateRequests (certificates that renew themselves);
    # ../shared/schemas has no schema for them: kept as they come.
    docs.append(certificate_request_crd())
    return docs


def certificate_request_crd() -> dict:
    import copy

    crd = copy.deepcopy(_SCHEMALESS_CERTIFICATE_CRD)
    crd["metadata"]["name"] = "certificaterequests.cert-manager.io"
    crd["spec"]["names"] = {
        "kind": "CertificateRequest",
        "listKind": "CertificateRequestList",
        "plural": "certificaterequests",
        "singular": "certificaterequest",
        "shortNames": ["cr", "crs"],
    }
    return crd


_SCHEMALESS_CERTIFICATE_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "certificates.cert-manager.io"},
    "spec": {
        "group": "cert-manager.io",
        "names": {
            "kind": "Certificate",
            "listKind": "CertificateList",
            "plural": "certificates",
            "singular": "certificate",
            "shortNames": ["cert", "certs"],
        },
        "scope": "Namespaced",
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "schema": {
                    "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                },
            }
        ],
    },
}


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


# --- talking to the cluster (the double or a real one) as a user would -----------------------------------

GROUP, VERSION = "weatherfleet.io", "v1alpha1"
PLURALS = {
    "WeatherSensor": "weathersensors",
    "SensorFleet": "sensorfleets",
    "FirmwareRelease": "firmwarereleases",
}


class Cluster:
    """kubectl-like helpers over the `kubernetes` client."""

    def __init__(self) -> None:
        from kubernetes import client, config

        config.load_kube_config()
        self.api = client.ApiClient()
        self.api.user_agent = "tests/1.0"
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.crs = client.CustomObjectsApi(self.api)
        self.ApiException = client.ApiException

    def namespace(self, name: str) -> str:
        try:
            self.core.create_namespace({"metadata": {"name": name}})
        except self.ApiException as exc:
            if exc.status != 409:
                raise
        return name

    def create(self, kind: str, namespace: str, name: str, spec: dict, labels: dict | None = None) -> dict:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": kind,
            "metadata": {"name": name, "labels": labels or {}},
            "spec": spec,
        }
        return self.crs.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURALS[kind], body)

    def get(self, kind: str, namespace: str, name: str) -> dict | None:
        try:
            return self.crs.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURALS[kind], name)
        except self.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def patch(self, kind: str, namespace: str, name: str, patch: dict) -> dict:
        return self.crs.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURALS[kind], name, patch)

    def delete(self, kind: str, namespace: str, name: str) -> None:
        self.crs.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURALS[kind], name)

    def condition(self, obj: dict | None, type_: str) -> dict | None:
        for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
            if cond["type"] == type_:
                return cond
        return None

    def is_true(self, kind: str, namespace: str, name: str, type_: str = "Ready") -> bool:
        cond = self.condition(self.get(kind, namespace, name), type_)
        return bool(cond and cond["status"] == "True")

    def certificates(self, namespace: str) -> list[dict]:
        return self.crs.list_namespaced_custom_object("cert-manager.io", "v1", namespace, "certificates")[
            "items"
        ]

    def mark_certificates_ready(self, namespace: str) -> int:
        """What cert-manager does once it issued a certificate: Ready=True in the status."""
        marked = 0
        for cert in self.certificates(namespace):
            if self.condition(cert, "Ready"):
                continue
            status = {
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "Ready",
                        "message": "Certificate is up to date and has not expired",
                        "lastTransitionTime": "2026-01-01T00:00:00Z",
                    }
                ],
                "notAfter": "2027-01-01T00:00:00Z",
            }
            self.crs.patch_namespaced_custom_object_status(
                "cert-manager.io",
                "v1",
                namespace,
                "certificates",
                cert["metadata"]["name"],
                {"status": status},
            )
            marked += 1
        return marked

    def configmap(self, namespace: str, name: str):
        try:
            return self.core.read_namespaced_config_map(name, namespace)
        except self.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def secret(self, namespace: str, name: str):
        try:
            return self.core.read_namespaced_secret(name, namespace)
        except self.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def events(self, namespace: str, name: str | None = None) -> list:
        items = self.core.list_namespaced_event(namespace).items
        return [e for e in items if name is None or e.involved_object.name == name]

    def broker_deployment(self, namespace: str, name: str = "nanomq") -> None:
        labels = {"app": name}
        self.apps.create_namespaced_deployment(
            namespace,
            {
                "metadata": {"name": name},
                "spec": {
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {"containers": [{"name": "nanomq", "image": "emqx/nanomq:0.22.10"}]},
                    },
                },
            },
        )

    def config_hash(self, namespace: str, name: str = "nanomq") -> str | None:
        dep = self.apps.read_namespaced_deployment(name, namespace)
        return (dep.spec.template.metadata.annotations or {}).get("weatherfleet.io/config-hash")
