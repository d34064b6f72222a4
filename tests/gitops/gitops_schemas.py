"""Validate built objects: built-in kinds with kubernetes-validate (strict), custom resources with
jsonschema against the openAPIV3Schema of their CustomResourceDefinition (Draft 4, as
../shared/schemas/README.md prescribes)."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

KUBERNETES_VERSION = "1.33.0"
BUILT_IN_GROUPS = {
    "",
    "v1",
    "apps",
    "batch",
    "autoscaling",
    "policy",
    "networking.k8s.io",
    "rbac.authorization.k8s.io",
    "apiextensions.k8s.io",
    "coordination.k8s.io",
    "admissionregistration.k8s.io",
    "scheduling.k8s.io",
    "storage.k8s.io",
}


def group_of(obj: dict) -> str:
    api_version = obj["apiVersion"]
    return api_version.split("/")[0] if "/" in api_version else ""


def is_built_in(obj: dict) -> bool:
    return group_of(obj) in BUILT_IN_GROUPS


class CrdSchemas:
    """openAPIV3Schema per (group, kind, version), from CRD manifests."""

    def __init__(self) -> None:
        self._schemas: dict[tuple[str, str, str], dict] = {}

    def add(self, crd: dict) -> None:
        spec = crd["spec"]
        for version in spec["versions"]:
            self._schemas[(spec["group"], spec["names"]["kind"], version["name"])] = version["schema"][
                "openAPIV3Schema"
            ]

    def add_files(self, paths: list[Path]) -> None:
        for path in paths:
            for doc in yaml.safe_load_all(path.read_text()):
                if doc and doc.get("kind") == "CustomResourceDefinition":
                    self.add(doc)

    def knows(self, obj: dict) -> bool:
        return self._key(obj) in self._schemas

    def _key(self, obj: dict) -> tuple[str, str, str]:
        return group_of(obj), obj["kind"], obj["apiVersion"].split("/")[-1]

    def errors(self, obj: dict) -> list[str]:
        validator = jsonschema.Draft4Validator(self._schemas[self._key(obj)])
        return [
            f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
        ]


def built_in_errors(obj: dict) -> list[str]:
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        path = "/".join(map(str, error.path)) or "<root>"
        return [f"{path}: {error.message}"]
    return []
