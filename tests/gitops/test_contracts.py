"""The manifests agree with the other components: names and ports from contracts.md, the certificate
hierarchy, the service identities, the programs' own configuration loaders (OtaFlux, ingest) fed the
exact environment the Deployments give them, the example fleet's broker, Grafana and registry settings."""

from __future__ import annotations

import argparse
import base64
import re
from pathlib import Path
from urllib.parse import urlsplit

import gitops_build as gb
import pytest
import yaml

from weatherfleet import identities
from weatherfleet.models.fleet import SensorFleet
from weatherfleet.reconcilers import grafana as grafana_reconciler

PROJECT_IMAGE = "ghcr.io/weatherfleet/weatherfleet"


def _container(objects: list[dict], kind: str, name: str) -> dict:
    return gb.find(objects, kind, name)["spec"]["template"]["spec"]["containers"][0]


def _services(objects: list[dict]) -> dict[str, dict[str, int]]:
    return {
        o["metadata"]["name"]: {p["name"]: p["port"] for p in o["spec"]["ports"]}
        for o in objects
        if o["kind"] == "Service"
    }


def test_services_and_ports_per_contract(infrastructure: list[dict]) -> None:
    services = _services(infrastructure)
    assert services["nanomq"] == {"mqtts": 8883}
    assert services["otaflux"]["http"] == 8080
    assert services["otaflux-metrics"]["metrics"] == 9090
    assert services["influxdb3"]["http"] == 8181
    assert "grafana" in services
    namespaced = [o for o in infrastructure if o["kind"] != "Namespace"]
    assert {o["metadata"].get("namespace") for o in namespaced} == {"weatherfleet"}


def test_certificate_hierarchy(example: list[dict]) -> None:
    issuers = {o["metadata"]["name"]: o for o in example if o["kind"] == "ClusterIssuer"}
    assert "selfSigned" in issuers["weatherfleet-selfsigned"]["spec"]
    root = gb.find(example, "Certificate", "weatherfleet-root-ca")
    assert root["metadata"]["namespace"] == "cert-manager"  # the CA key stays out of the app namespace
    assert root["spec"]["isCA"] is True
    assert root["spec"]["privateKey"]["algorithm"] == "ECDSA" and root["spec"]["privateKey"]["size"] == 256
    assert root["spec"]["issuerRef"]["name"] == "weatherfleet-selfsigned"
    assert issuers["weatherfleet-ca"]["spec"]["ca"]["secretName"] == root["spec"]["secretName"]
    others = [o for o in example if o["kind"] == "Certificate" and o is not root]
    assert len(others) >= 5
    for cert in others:
        assert cert["spec"]["issuerRef"] == {
            "name": "weatherfleet-ca",
            "kind": "ClusterIssuer",
            "group": "cert-manager.io",
        }
        assert cert["spec"]["privateKey"]["algorithm"] == "ECDSA"
    for fleet in (o for o in example if o["kind"] == "SensorFleet"):
        ref = fleet["spec"].get("certificates", {}).get("issuerRef", {"name": "weatherfleet-ca"})
        assert ref["name"] in issuers


@pytest.mark.parametrize("identity", identities.SERVICES)
def test_service_identity_certificates(infrastructure: list[dict], identity: str) -> None:
    cert = gb.find(infrastructure, "Certificate", identity)
    assert cert["spec"]["commonName"] == identity
    assert cert["spec"]["secretName"] == f"{identity}-tls"
    assert "client auth" in cert["spec"]["usages"]


@pytest.mark.parametrize(
    ("deployment", "identity"), [("otaflux", identities.OTAFLUX), ("ingest", identities.INGEST)]
)
def test_services_connect_with_their_own_identity(
    infrastructure: list[dict], deployment: str, identity: str
) -> None:
    pod = gb.find(infrastructure, "Deployment", deployment)["spec"]["template"]["spec"]
    secrets = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert f"{identity}-tls" in secrets
    settings = _resolved_env(infrastructure, gb.find(infrastructure, "Deployment", deployment))
    assert settings["MQTT_USERNAME"] == identity
    container = _container(infrastructure, "Deployment", deployment)
    (password,) = [e for e in container["env"] if e["name"] == "MQTT_PASSWORD"]
    assert password["valueFrom"]["secretKeyRef"] == {
        "name": f"{identity}-mqtt-credentials",
        "key": "password",
    }
    assert f"{identity}-mqtt-credentials" in _made_in_cluster(infrastructure)


def _made_in_cluster(objects: list[dict]) -> set[str]:
    """Secrets that Jobs of the build create at run time (so they are rightly absent from git)."""
    made = set()
    for job in (o for o in objects if o["kind"] == "Job"):
        env = {
            e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0].get("env", [])
        }
        made |= {f"{i}-mqtt-credentials" for i in (env.get("IDENTITIES") or "").split(",") if i}
        if env.get("TOKEN_SECRET_NAME"):
            made.add(env["TOKEN_SECRET_NAME"])
    return made


def _resolved_env(objects: list[dict], workload: dict) -> dict[str, str]:
    """The environment the kubelet would give the first container: envFrom ConfigMaps, then env with
    ConfigMap/Secret references resolved from the build (placeholder Secrets included)."""
    container = workload["spec"]["template"]["spec"]["containers"][0]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env |= gb.find(objects, "ConfigMap", source["configMapRef"]["name"])["data"]
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
            continue
        ref = item["valueFrom"]
        if "secretKeyRef" in ref and ref["secretKeyRef"]["name"] in _made_in_cluster(objects):
            env[item["name"]] = "stand-in-for-a-value-made-in-the-cluster"
        elif "secretKeyRef" in ref:
            secret = gb.find(objects, "Secret", ref["secretKeyRef"]["name"])
            value = (secret.get("stringData") or {}).get(ref["secretKeyRef"]["key"])
            if value is None:
                value = base64.b64decode(secret["data"][ref["secretKeyRef"]["key"]]).decode()
            env[item["name"]] = value
        elif "configMapKeyRef" in ref:
            env[item["name"]] = gb.find(objects, "ConfigMap", ref["configMapKeyRef"]["name"])["data"][
                ref["configMapKeyRef"]["key"]
            ]
    return env


def _materialise_mounts(objects: list[dict], workload: dict, root: Path) -> dict[str, Path]:
    """Write each mounted ConfigMap's files (and stand-in files for Secrets cert-manager or the init Job
    would create) under `root`; returns mountPath -> local directory."""
    pod = workload["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    local: dict[str, Path] = {}
    for mount in pod["containers"][0].get("volumeMounts", []):
        directory = root / mount["mountPath"].strip("/")
        directory.mkdir(parents=True, exist_ok=True)
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            try:
                data = gb.find(objects, "ConfigMap", volume["configMap"]["name"])["data"]
            except LookupError:
                assert volume["configMap"].get("optional"), f"ConfigMap {volume['configMap']['name']} missing"
                data = {}
            items = volume["configMap"].get("items") or [{"key": k, "path": k} for k in data]
            for item in items:
                (directory / item["path"]).write_text(data[item["key"]])
        elif "secret" in volume:
            for item in volume["secret"].get("items") or [
                {"path": p} for p in ("ca.crt", "tls.crt", "tls.key")
            ]:
                (directory / item["path"]).write_text("stand-in for a Secret created in the cluster\n")
        local[mount["mountPath"]] = directory
    return local


def _localise(env: dict[str, str], mounts: dict[str, Path]) -> dict[str, str]:
    out = {}
    for name, value in env.items():
        for mount_path, directory in sorted(mounts.items(), key=lambda m: -len(m[0])):
            if value == mount_path or value.startswith(mount_path + "/"):
                value = str(directory) + value[len(mount_path) :]
                break
        out[name] = value
    return out


def test_otaflux_accepts_the_deployments_configuration(infrastructure: list[dict], tmp_path: Path) -> None:
    otaflux_config = pytest.importorskip("otaflux.config")
    deployment = gb.find(infrastructure, "Deployment", "otaflux")
    env = _resolved_env(infrastructure, deployment)
    known = {variable for variable, _ in otaflux_config.OPTIONS.values()}
    assert sorted(set(env) - known) == [], "variables OtaFlux does not read (typo?)"
    mounts = _materialise_mounts(infrastructure, deployment, tmp_path)
    settings = otaflux_config.load(None, _localise(env, mounts))
    assert settings.mqtt_url == "mqtts://nanomq.weatherfleet.svc:8883"
    assert len(settings.signature_public_keys) == 1
    # The rollout plan is the operator's ConfigMap, mounted as a directory (one FleetPlan per key).
    pod = deployment["spec"]["template"]["spec"]
    (plan_mount,) = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "rollout-plan"]
    (plan_volume,) = [v for v in pod["volumes"] if v["name"] == "rollout-plan"]
    assert plan_volume["configMap"]["name"] == "weatherfleet-rollout-plan"
    assert "subPath" not in plan_mount, "a subPath mount never sees the kubelet's updates"
    assert env["ROLLOUT_PLAN_PATH"] == plan_mount["mountPath"]
    assert deployment["spec"]["replicas"] >= 2
    hpa = gb.find(infrastructure, "HorizontalPodAutoscaler", "otaflux")
    assert hpa["spec"]["minReplicas"] >= 2 and hpa["spec"]["scaleTargetRef"]["name"] == "otaflux"
    assert pod["containers"][0]["args"] == ["otaflux"]


def test_otaflux_refuses_a_broken_setting(infrastructure: list[dict], tmp_path: Path) -> None:
    """The check above is real: the same loader rejects a wrong value from the same manifests."""
    otaflux_config = pytest.importorskip("otaflux.config")
    deployment = gb.find(infrastructure, "Deployment", "otaflux")
    env = _localise(
        _resolved_env(infrastructure, deployment), _materialise_mounts(infrastructure, deployment, tmp_path)
    )
    with pytest.raises(otaflux_config.ConfigError):
        otaflux_config.load(None, env | {"MQTT_URL": "nanomq:8883"})


def test_ingest_accepts_the_deployments_configuration(
    infrastructure: list[dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest = pytest.importorskip("weatherfleet.commands.ingest")
    deployment = gb.find(infrastructure, "Deployment", "ingest")
    mounts = _materialise_mounts(infrastructure, deployment, tmp_path)
    env = _localise(_resolved_env(infrastructure, deployment), mounts)
    (Path(env["INFLUX_TOKEN_FILE"])).write_text("stand-in-token\n")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    parser = argparse.ArgumentParser()
    ingest.add_arguments(parser)  # defaults come from the environment, as in the container
    config = ingest.load_config(parser.parse_args([]), env)
    assert config.store == "influxdb"
    assert config.influx_host == "http://influxdb3.weatherfleet.svc:8181"
    assert (config.mqtt.host, config.mqtt.port) == ("nanomq.weatherfleet.svc", 8883)
    assert config.client_id == identities.INGEST
    assert config.topic == "sensors/#"
    assert str(config.state_dir).endswith("var/lib/weatherfleet/ingest")
    assert gb.find(infrastructure, "PersistentVolumeClaim", "ingest-state")
    assert _container(infrastructure, "Deployment", "ingest")["args"] == ["ingest"]


def test_registry_settings_agree_with_the_releases(example: list[dict]) -> None:
    env = gb.find(example, "ConfigMap", "otaflux-settings")["data"]
    url = env["REGISTRY_URL"]
    host = urlsplit(url if "://" in url else f"https://{url}").netloc
    expected = f"{host}/{env['REPOSITORY_PREFIX']}{{deviceId}}"
    releases = [o for o in example if o["kind"] == "FirmwareRelease"]
    assert releases
    for release in releases:
        assert release["spec"]["artifact"]["repository"] == expected, release["metadata"]["name"]


def test_signing_key_is_the_one_the_releases_name(example: list[dict]) -> None:
    for release in (o for o in example if o["kind"] == "FirmwareRelease"):
        ref = release["spec"]["signature"]["publicKeyRef"]
        config_map = gb.find(example, "ConfigMap", ref["name"])
        assert "-----BEGIN PUBLIC KEY-----" in config_map["data"][ref["key"]]


def test_grafana_datasource_sidecars_and_telegram(example: list[dict]) -> None:
    provisioning = gb.find(example, "ConfigMap", "grafana-provisioning")["data"]
    (datasource,) = yaml.safe_load(provisioning["datasources.yaml"])["datasources"]
    assert datasource["type"] == "influxdb" and datasource["jsonData"]["version"] == "SQL"
    assert datasource["secureJsonData"]["token"] == "$INFLUXDB3_TOKEN"
    assert urlsplit(datasource["url"]).port == 8181
    deployment = gb.find(example, "Deployment", "grafana")
    containers = {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}
    grafana_env = {e["name"]: e for e in containers["grafana"]["env"]}
    job_env = {e["name"]: e.get("value") for e in _container_of_job(example)["env"]}
    assert grafana_env["INFLUXDB3_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": job_env["TOKEN_SECRET_NAME"],
        "key": "token",
    }
    sidecars = {
        next(e["value"] for e in c["env"] if e["name"] == "LABEL"): {
            e["name"]: e.get("value") for e in c["env"]
        }
        for n, c in containers.items()
        if n != "grafana"
    }
    assert set(sidecars) == {grafana_reconciler.DASHBOARD_LABEL, grafana_reconciler.ALERT_LABEL}
    # the sidecar reads a folder annotation only under the name FOLDER_ANNOTATION gives it
    assert sidecars["grafana_dashboard"]["FOLDER_ANNOTATION"] == grafana_reconciler.FOLDER_ANNOTATION
    # rules in ConfigMaps, each fleet's contact point (it holds the bot token) in a Secret
    assert sidecars["grafana_alert"]["RESOURCE"] == "both"
    role = gb.find(example, "Role", "grafana-sidecar")
    readable = {
        r for rule in role["rules"] if {"list", "watch"} <= set(rule["verbs"]) for r in rule["resources"]
    }
    assert {"configmaps", "secrets"} <= readable
    assert not [e for e in containers["grafana"]["env"] if e["name"].startswith("WEATHERFLEET_TELEGRAM")], (
        "bot tokens reach Grafana as contact point files, never as variables a person adds per fleet"
    )
    fleets = [SensorFleet.model_validate(o) for o in example if o["kind"] == "SensorFleet"]
    assert fleets
    for fleet in fleets:
        assert fleet.spec.grafana.datasource_uid == datasource["uid"]
        if fleet.spec.alerting.telegram is not None:
            gb.find(example, "Secret", fleet.spec.alerting.telegram.bot_token_secret_ref.name)


def _container_of_job(objects: list[dict]) -> dict:
    return gb.find(objects, "Job", "influxdb3-init")["spec"]["template"]["spec"]["containers"][0]


def test_each_fleet_finds_its_broker(example: list[dict]) -> None:
    services = _services(example)
    for fleet in (SensorFleet.model_validate(o) for o in example if o["kind"] == "SensorFleet"):
        broker = fleet.spec.broker
        assert broker.kind == "nanomq"
        gb.find(example, "ConfigMap", broker.acl_config_map)
        gb.find(example, "Secret", broker.credentials_secret)
        gb.find(example, "Deployment", broker.deployment)
        assert broker.port in services[broker.host].values()


def test_one_project_image_pinned_everywhere(example: list[dict]) -> None:
    commands = {}
    for obj in example:
        for spec in (s for s in _pod_specs(obj)):
            for container in spec["containers"] + spec.get("initContainers", []):
                image = container["image"]
                if image.split(":")[0] == PROJECT_IMAGE:
                    assert re.fullmatch(re.escape(PROJECT_IMAGE) + r":\d+\.\d+\.\d+", image), image
                    commands[obj["metadata"]["name"]] = (
                        image,
                        container.get("args") or container.get("command"),
                    )
    images = {image for image, _ in commands.values()}
    assert len(images) == 1, images
    assert commands["otaflux"][1] == ["otaflux"]
    assert commands["ingest"][1] == ["ingest"]
    operators = [args for name, (_, args) in commands.items() if "operator" in name]
    assert operators and all(args and args[0] == "operator" for args in operators)


def _pod_specs(obj: dict):
    if obj["kind"] in {"Deployment", "StatefulSet", "Job", "DaemonSet"}:
        yield obj["spec"]["template"]["spec"]


def test_project_containers_run_weatherfleet_subcommands(example: list[dict]) -> None:
    """The image's entrypoint is `weatherfleet`, so a container's args name a subcommand of the CLI;
    the Jobs override the entrypoint with the image's Python."""
    from weatherfleet.cli import COMMANDS

    dockerfile = (gb.REPO / "Dockerfile").read_text()
    assert re.search(r'^ENTRYPOINT \["weatherfleet"\]', dockerfile, re.M), (
        "the image no longer starts the CLI"
    )
    seen = 0
    for obj in example:
        for spec in _pod_specs(obj):
            for container in spec["containers"]:
                if container["image"].split(":")[0] != PROJECT_IMAGE:
                    continue
                seen += 1
                if "command" in container:
                    assert container["command"][0] == "python" and obj["kind"] == "Job", gb.key(obj)
                else:
                    assert container["args"][0] in COMMANDS, gb.key(obj)
    assert seen >= 5
