"""cert-manager's CustomResourceDefinitions for an API server that has none: the upstream files when a
folder of them is given (the tests validate against `../shared/schemas`), otherwise the same kinds, names
and printer columns without a schema (objects are stored as they come)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

_READY = '.status.conditions[?(@.type == "Ready")]'
KINDS = {
    # kind: (plural, scope, short names, printer columns)
    "Certificate": (
        "certificates",
        "Namespaced",
        ["cert", "certs"],
        [
            {"jsonPath": f"{_READY}.status", "name": "Ready", "type": "string"},
            {"jsonPath": ".spec.secretName", "name": "Secret", "type": "string"},
            {"jsonPath": ".spec.issuerRef.name", "name": "Issuer", "priority": 1, "type": "string"},
            {"jsonPath": f"{_READY}.message", "name": "Status", "priority": 1, "type": "string"},
            {"jsonPath": ".status.notAfter", "name": "Expiration", "priority": 1, "type": "string"},
            {"jsonPath": ".metadata.creationTimestamp", "name": "Age", "type": "date"},
        ],
    ),
    "CertificateRequest": (
        "certificaterequests",
        "Namespaced",
        ["cr", "crs"],
        [
            {
                "jsonPath": '.status.conditions[?(@.type == "Approved")].status',
                "name": "Approved",
                "type": "string",
            },
            {"jsonPath": f"{_READY}.status", "name": "Ready", "type": "string"},
            {"jsonPath": ".spec.issuerRef.name", "name": "Issuer", "type": "string"},
            {"jsonPath": ".metadata.creationTimestamp", "name": "Age", "type": "date"},
        ],
    ),
    "Issuer": ("issuers", "Namespaced", [], None),
    "ClusterIssuer": ("clusterissuers", "Cluster", [], None),
}
_ISSUER_COLUMNS = [
    {"jsonPath": f"{_READY}.status", "name": "Ready", "type": "string"},
    {"jsonPath": f"{_READY}.message", "name": "Status", "priority": 1, "type": "string"},
    {"jsonPath": ".metadata.creationTimestamp", "name": "Age", "type": "date"},
]


def schemaless(kind: str) -> dict[str, Any]:
    plural, scope, short, columns = KINDS[kind]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.cert-manager.io"},
        "spec": {
            "group": "cert-manager.io",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short,
                "categories": ["cert-manager"],
            },
            "scope": scope,
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns or _ISSUER_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                    },
                }
            ],
        },
    }


def crds(schemas: Path | None = None) -> list[dict[str, Any]]:
    """Certificate, Issuer and ClusterIssuer: from `schemas/cert-manager.io_<plural>.yaml` where present."""
    documents = []
    for kind, (plural, *_rest) in KINDS.items():
        upstream = Path(schemas) / f"cert-manager.io_{plural}.yaml" if schemas else None
        if upstream is not None and upstream.is_file():
            documents.append(yaml.safe_load(upstream.read_text()))
        else:
            documents.append(schemaless(kind))
    return documents
