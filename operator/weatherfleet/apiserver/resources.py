"""The resource types the API server serves: a few built-ins plus every CustomResourceDefinition created."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ResourceType:
    group: str
    version: str
    kind: str
    plural: str
    singular: str
    namespaced: bool = True
    status: bool = False
    short_names: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    schema: dict[str, Any] | None = None  # openAPIV3Schema of a CRD; None: accept anything
    columns: list[dict[str, Any]] = field(default_factory=list)  # a CRD's additionalPrinterColumns

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)

    @property
    def custom(self) -> bool:
        return self.schema is not None

    def discovery(self) -> list[dict[str, Any]]:
        verbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
        entries = [
            {
                "name": self.plural,
                "singularName": self.singular,
                "namespaced": self.namespaced,
                "kind": self.kind,
                "verbs": verbs,
                "shortNames": self.short_names,
                "categories": self.categories,
            }
        ]
        if self.status:
            entries.append(
                {
                    "name": f"{self.plural}/status",
                    "singularName": "",
                    "namespaced": self.namespaced,
                    "kind": self.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
        return entries


BUILTINS = [
    ResourceType(
        "", "v1", "Namespace", "namespaces", "namespace", namespaced=False, status=True, short_names=["ns"]
    ),
    ResourceType("", "v1", "ConfigMap", "configmaps", "configmap", short_names=["cm"]),
    ResourceType("", "v1", "Secret", "secrets", "secret"),
    ResourceType("", "v1", "Event", "events", "event", short_names=["ev"]),
    ResourceType("", "v1", "ServiceAccount", "serviceaccounts", "serviceaccount", short_names=["sa"]),
    ResourceType("", "v1", "Service", "services", "service", status=True, short_names=["svc"]),
    ResourceType(
        "apps", "v1", "Deployment", "deployments", "deployment", status=True, short_names=["deploy"]
    ),
    ResourceType("coordination.k8s.io", "v1", "Lease", "leases", "lease"),
    ResourceType("events.k8s.io", "v1", "Event", "events", "event", short_names=["ev"]),
    ResourceType(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        "customresourcedefinition",
        namespaced=False,
        status=True,
        short_names=["crd", "crds"],
    ),
]

_PRESERVE = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}

# kopf's own peering resources (kopf ships them as CRDs in its docs; kept schemaless as there).
KOPF_PEERING_CRDS = [
    {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.kopf.dev"},
        "spec": {
            "group": "kopf.dev",
            "scope": scope,
            "names": {"kind": kind, "plural": plural, "singular": plural[:-1]},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": _PRESERVE},
                }
            ],
        },
    }
    for kind, plural, scope in (
        ("ClusterKopfPeering", "clusterkopfpeerings", "Cluster"),
        ("KopfPeering", "kopfpeerings", "Namespaced"),
    )
]


def from_crd(crd: dict[str, Any]) -> list[ResourceType]:
    """One ResourceType per served version of a CRD."""
    spec = crd["spec"]
    names = spec["names"]
    return [
        ResourceType(
            group=spec["group"],
            version=v["name"],
            kind=names["kind"],
            plural=names["plural"],
            singular=names.get("singular") or names["kind"].lower(),
            namespaced=spec.get("scope", "Namespaced") == "Namespaced",
            status="status" in (v.get("subresources") or {}),
            short_names=list(names.get("shortNames", [])),
            categories=list(names.get("categories", [])),
            schema=(v.get("schema") or {}).get("openAPIV3Schema") or _PRESERVE,
            columns=list(v.get("additionalPrinterColumns") or []),
        )
        for v in spec["versions"]
        if v.get("served", True)
    ]
