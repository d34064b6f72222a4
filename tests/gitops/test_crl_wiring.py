"""Revocation in the shipped configuration (issue 13). The default install runs NanoMQ, which cannot check
a CRL, so the operator there neither keeps one nor may read the CA issuer's private key. The component
gitops/base/operator/mosquitto-crl (for a Mosquitto broker) turns the CRL on: the setting, and `get` on
exactly the one Secret the CA issuer signs with, in cert-manager's namespace."""

from __future__ import annotations

import os

import gitops_build as gb
import pytest

from weatherfleet.controller.settings import OperatorSettings

SETTING = "WEATHERFLEET_CRL_CA_SECRET"
COMPONENT = gb.GITOPS / "base" / "operator" / "mosquitto-crl"


def _operator_env(objects: list[dict]) -> dict[str, dict]:
    deployment = next(
        o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "weatherfleet-operator"
    )
    (container,) = [
        c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "operator"
    ]
    return {e["name"]: e for e in container.get("env") or []}


def _operator_grants(objects: list[dict]) -> list[tuple[str, dict]]:
    """(namespace or '*', rule) for every rule bound to the operator's ServiceAccount."""
    bound = set()
    for o in objects:
        if o["kind"] in ("RoleBinding", "ClusterRoleBinding") and any(
            s.get("kind") == "ServiceAccount" and s.get("name") == "weatherfleet-operator"
            for s in o.get("subjects") or []
        ):
            bound.add((o["roleRef"]["kind"], o["roleRef"]["name"], o["metadata"].get("namespace", "*")))
    grants = []
    for o in objects:
        if o["kind"] not in ("Role", "ClusterRole"):
            continue
        ns = o["metadata"].get("namespace", "*")
        if (o["kind"], o["metadata"]["name"], ns if o["kind"] == "Role" else "*") in bound:
            grants += [(ns, rule) for rule in o.get("rules") or []]
    return grants


@pytest.fixture(scope="module")
def with_crl(tmp_path_factory) -> list[dict]:
    """An overlay as a Mosquitto installation would write it: the operator base plus the component."""
    overlay = tmp_path_factory.mktemp("mosquitto-overlay")
    base = os.path.relpath(gb.GITOPS / "base" / "operator", overlay)
    (overlay / "kustomization.yaml").write_text(
        f"resources: [{base}]\ncomponents: [{os.path.relpath(COMPONENT, overlay)}]\n"
    )
    return gb.build(overlay)


@pytest.fixture(scope="module")
def ca_issuer_secret() -> str:
    """<namespace>/<name> of the Secret the fleets' CA issuer signs with, from gitops/base/pki."""
    pki = gb.build(gb.GITOPS / "base" / "pki")
    issuer = next(
        o for o in pki if o["kind"] == "ClusterIssuer" and o["metadata"]["name"] == "weatherfleet-ca"
    )
    secret = issuer["spec"]["ca"]["secretName"]
    root = next(o for o in pki if o["kind"] == "Certificate" and o["spec"]["secretName"] == secret)
    return f"{root['metadata']['namespace']}/{secret}"


def test_the_default_install_keeps_no_crl_and_cannot_read_the_ca_key(example: list[dict]) -> None:
    assert SETTING not in _operator_env(example)
    for namespace, rule in _operator_grants(example):
        if "secrets" in rule.get("resources", []):
            assert namespace == "weatherfleet", (namespace, rule)  # its own children only
    nanomq = next(o for o in example if o["kind"] == "Deployment" and o["metadata"]["name"] == "nanomq")
    volumes = nanomq["spec"]["template"]["spec"]["volumes"]
    assert not [v for v in volumes if (v.get("configMap") or {}).get("name") == "weatherfleet-crl"]


def test_the_component_sets_the_setting_to_the_ca_issuers_secret(with_crl, ca_issuer_secret) -> None:
    env = _operator_env(with_crl)
    assert env[SETTING] == {"name": SETTING, "value": ca_issuer_secret}
    # the value is one the operator accepts (OperatorSettings validates <namespace>/<name>)
    assert OperatorSettings(crl_ca_secret=env[SETTING]["value"]).crl_ca_secret == ca_issuer_secret


def test_the_component_grants_get_on_that_one_secret_only(with_crl, ca_issuer_secret, example) -> None:
    namespace, name = ca_issuer_secret.split("/")
    before = {(ns, repr(rule)) for ns, rule in _operator_grants(gb.build(gb.GITOPS / "base" / "operator"))}
    added = [(ns, rule) for ns, rule in _operator_grants(with_crl) if (ns, repr(rule)) not in before]
    assert added == [
        (namespace, {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [name], "verbs": ["get"]})
    ]
    binding = next(
        o
        for o in with_crl
        if o["kind"] == "RoleBinding" and o["metadata"]["name"] == "weatherfleet-operator-crl"
    )
    assert binding["metadata"]["namespace"] == namespace
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "weatherfleet-operator", "namespace": "weatherfleet"}
    ]


def test_the_component_changes_nothing_else(with_crl) -> None:
    base = gb.build(gb.GITOPS / "base" / "operator")
    key = lambda o: (o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"])  # noqa: E731
    extra = {key(o) for o in with_crl} - {key(o) for o in base}
    assert extra == {
        ("Role", "cert-manager", "weatherfleet-operator-crl"),
        ("RoleBinding", "cert-manager", "weatherfleet-operator-crl"),
    }
    assert set(_operator_env(with_crl)) - set(_operator_env(base)) == {SETTING}
