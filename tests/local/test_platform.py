"""What the local mode puts on its API server before the CR folder is what gitops/base puts on a cluster:
the same PKI, service certificates, broker certificate, peering object and service logins (the local
broker certificate only adds the loopback names it is reached at); and the operator runs with the
Deployment's environment."""

from __future__ import annotations

from pathlib import Path

import yaml

from weatherfleet.local import platform
from weatherfleet.local.options import LOCAL_OPERATOR_SETTINGS, UpOptions
from weatherfleet.local.system import LocalSystem
from weatherfleet.models import SensorFleet

REPO = Path(__file__).resolve().parents[2]
BASE = REPO / "gitops" / "base"


def documents(*paths: str) -> list[dict]:
    return [d for p in paths for d in yaml.safe_load_all((BASE / p).read_text()) if d]


def by_name(docs: list[dict]) -> dict[tuple[str, str], dict]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def test_pki_is_gitops_base_pki():
    ours = by_name(platform.pki({"weatherfleet-ca"}))
    theirs = by_name(documents("pki/selfsigned-issuer.yaml", "pki/root-ca.yaml", "pki/ca-issuer.yaml"))
    assert ours.keys() == theirs.keys()
    for key, doc in theirs.items():
        assert ours[key]["spec"] == doc["spec"], key
    assert ours[("Certificate", "weatherfleet-root-ca")]["metadata"]["namespace"] == "cert-manager"


def test_service_certificates_are_gitops_base_certificates():
    ours = by_name(platform.service_certificates("weatherfleet"))
    theirs = by_name(documents("certificates/service-clients.yaml"))
    assert ours.keys() == theirs.keys()
    for key, doc in theirs.items():
        assert ours[key]["spec"] == doc["spec"], key


def test_broker_certificate_is_the_gitops_one_plus_the_loopback_names():
    fleet = SensorFleet.model_validate(
        yaml.safe_load((REPO / "gitops" / "examples" / "fleet.yaml").read_text())
    )
    ours = platform.broker_certificate(fleet)
    (theirs,) = documents("certificates/nanomq-server.yaml")
    assert ours["metadata"]["name"] == theirs["metadata"]["name"]
    spec = dict(ours["spec"])
    assert spec.pop("ipAddresses") == ["127.0.0.1"]
    assert spec.pop("dnsNames") == [*theirs["spec"]["dnsNames"], "localhost"]
    expected = {k: v for k, v in theirs["spec"].items() if k != "dnsNames"}
    assert spec == expected


def test_peering_object_is_the_operator_manifest_s():
    (_crd, peering) = documents("operator/peering.yaml")
    ours = platform.peering("weatherfleet")
    assert (ours["apiVersion"], ours["kind"], ours["metadata"]["name"]) == (
        peering["apiVersion"],
        peering["kind"],
        peering["metadata"]["name"],
    )


def container(path: str) -> dict:
    (deployment,) = [d for d in documents(path) if d["kind"] == "Deployment"]
    return deployment["spec"]["template"]["spec"]["containers"][0]


def test_operator_runs_with_the_deployment_s_arguments_and_environment(tmp_path, cr_dir):
    system = LocalSystem(UpOptions(directory=cr_dir, workdir=tmp_path / "wd"))
    system.resources = __import__("weatherfleet.local.resources", fromlist=["x"]).load_resources(cr_dir)
    system._allocate_ports()
    system.registry_url = "http://127.0.0.1:5000"
    manifest = container("operator/deployment.yaml")
    env = system.operator_environment()
    shipped = {e["name"] for e in manifest["env"]}
    # every variable the Deployment sets is set locally (the password once its Secret exists)
    assert shipped - {"WEATHERFLEET_MQTT_PASSWORD"} <= set(env)
    local_only = set(env) - shipped
    assert local_only == {
        "KUBECONFIG",
        "WEATHERFLEET_READINGS_SQLITE",
        "WEATHERFLEET_REGISTRY_MIRRORS",
        # the local broker is Mosquitto, which checks the CRL; gitops sets it with the mosquitto-crl
        # component only (NanoMQ checks none)
        "WEATHERFLEET_CRL_CA_SECRET",
        *LOCAL_OPERATOR_SETTINGS,
    }
    # the same command line; only the liveness port is chosen (a pod has its own network namespace)
    argv = system.operator_command()
    start = argv.index("operator")
    assert argv[start : start + len(manifest["args"])] == manifest["args"]
    assert "--liveness" in argv


def test_otaflux_runs_with_the_deployment_s_environment(tmp_path, cr_dir):
    system = LocalSystem(UpOptions(directory=cr_dir, workdir=tmp_path / "wd"))
    system._allocate_ports()
    system.registry_url = "http://127.0.0.1:5000"
    manifest = container("otaflux/deployment.yaml")
    kustomization = yaml.safe_load((BASE / "otaflux" / "kustomization.yaml").read_text())
    settings = {
        line.split("=", 1)[0]
        for generator in kustomization["configMapGenerator"]
        for line in generator["literals"]
    }
    env = system.otaflux_environment()
    shipped = {e["name"] for e in manifest["env"]} | settings
    # registry credentials and the webhook secret have no local counterpart (plain local registry);
    # the cache size knobs keep their defaults
    assert shipped - {"REGISTRY_USERNAME", "REGISTRY_PASSWORD", "WEBHOOK_SECRET", "MQTT_PASSWORD",
                      "CACHE_SIZE", "CACHE_BYTES"} <= set(env)  # fmt: skip
    assert env["ROLLOUT_PLAN_PATH"].endswith("mounts/otaflux/rollout-plan")
