"""Every object the gitops tree produces validates: built-in kinds strictly against the Kubernetes
OpenAPI schemas, cert-manager and Argo CD objects against their upstream CRDs (../shared/schemas), and
weatherfleet's own resources against crds/."""

from __future__ import annotations

import copy

import gitops_build as gb
import gitops_schemas as gs
import pytest

UPSTREAM_GROUPS = {"cert-manager.io", "argoproj.io"}


def _argocd_objects() -> list[dict]:
    return [*gb.build(gb.GITOPS / "argocd" / "apps"), *gb.build(gb.GITOPS / "argocd" / "bootstrap")]


@pytest.fixture(scope="module")
def own_schemas() -> gs.CrdSchemas:
    schemas = gs.CrdSchemas()
    schemas.add_files(sorted(gb.CRDS.glob("*.yaml")))
    return schemas


@pytest.fixture(scope="module")
def upstream_schemas(shared_schemas) -> gs.CrdSchemas:
    schemas = gs.CrdSchemas()
    schemas.add_files(sorted(shared_schemas.glob("*.yaml")))
    return schemas


def test_built_in_objects_validate_strictly(example: list[dict]) -> None:
    objects = [o for o in [*example, *gb.build(gb.GITOPS / "argocd" / "config")] if gs.is_built_in(o)]
    assert len(objects) > 40
    problems = {gb.key(o): gs.built_in_errors(o) for o in objects}
    assert {k: v for k, v in problems.items() if v} == {}


def test_weatherfleet_resources_validate_against_crds(
    example: list[dict], own_schemas: gs.CrdSchemas
) -> None:
    ours = [o for o in example if gs.group_of(o) == "weatherfleet.io"]
    assert {o["kind"] for o in ours} == {"WeatherSensor", "SensorFleet", "FirmwareRelease"}
    problems = {gb.key(o): own_schemas.errors(o) for o in ours}
    assert {k: v for k, v in problems.items() if v} == {}


def test_cert_manager_and_argocd_objects_validate_against_upstream_crds(
    example: list[dict], upstream_schemas: gs.CrdSchemas
) -> None:
    objects = [o for o in [*example, *_argocd_objects()] if gs.group_of(o) in UPSTREAM_GROUPS]
    kinds = {o["kind"] for o in objects}
    assert {"Certificate", "ClusterIssuer", "Application", "AppProject"} <= kinds
    unknown = [gb.key(o) for o in objects if not upstream_schemas.knows(o)]
    assert unknown == []
    problems = {gb.key(o): upstream_schemas.errors(o) for o in objects}
    assert {k: v for k, v in problems.items() if v} == {}


def test_every_object_has_a_schema(example: list[dict], own_schemas: gs.CrdSchemas) -> None:
    """Nothing in the build escapes validation: any other custom resource must come with its CRD."""
    in_build = gs.CrdSchemas()
    for crd in (o for o in example if o["kind"] == "CustomResourceDefinition"):
        in_build.add(crd)
    others = [
        o
        for o in example
        if not gs.is_built_in(o) and gs.group_of(o) not in UPSTREAM_GROUPS | {"weatherfleet.io"}
    ]
    assert [gb.key(o) for o in others if not in_build.knows(o)] == []
    problems = {gb.key(o): in_build.errors(o) for o in others}
    assert {k: v for k, v in problems.items() if v} == {}


# The validators above are only worth something if they reject bad objects.


def test_strict_validation_rejects_an_unknown_field(infrastructure: list[dict]) -> None:
    deployment = copy.deepcopy(gb.find(infrastructure, "Deployment", "otaflux"))
    deployment["spec"]["template"]["spec"]["containers"][0]["resource"] = {}  # typo of `resources`
    assert gs.built_in_errors(deployment)


def test_crd_validation_rejects_a_bad_certificate(upstream_schemas: gs.CrdSchemas) -> None:
    root = copy.deepcopy(gb.find(gb.build(gb.GITOPS / "base" / "pki"), "Certificate", "weatherfleet-root-ca"))
    assert upstream_schemas.errors(root) == []
    root["spec"]["privateKey"]["algorithm"] = "DSA"
    assert any("privateKey/algorithm" in e for e in upstream_schemas.errors(root))


def test_crd_validation_rejects_a_bad_fleet(own_schemas: gs.CrdSchemas) -> None:
    fleet = copy.deepcopy(gb.find(gb.build(gb.GITOPS / "examples"), "SensorFleet", "garden"))
    fleet["spec"]["broker"]["kind"] = "rabbitmq"
    assert any("broker/kind" in e for e in own_schemas.errors(fleet))
