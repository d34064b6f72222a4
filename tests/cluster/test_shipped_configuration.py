"""The shipped configuration, run whole on the cluster path.

What runs: the embedded Kubernetes API server (CRDs from crds/, cert-manager's CRDs from
../shared/schemas) with the cert-manager stand-in; what gitops/ puts on a cluster, taken from the files
(`kubectl kustomize` of gitops/base/pki, certificates, nanomq's seed, operator's peering; the credentials
Job's own script; gitops/examples unchanged: per-device repositories, signatures required); the operator
as a process configured by gitops/base/operator/deployment.yaml (arguments and environment read from the
manifest; only what a cluster resolves differently is substituted: Service names, mount paths, ports, and
the Secret values the kubelet would inject), with rollout time compressed by its setting
WEATHERFLEET_ROLLOUT_TIME_SCALE (the example's 30m/2h/6h bakes last 5/20/60 s); a real Mosquitto
configured from the operator's NanoMQ ACL and password Secret, mounted as volumes; OtaFlux as
gitops/base/otaflux configures it, mounting the plan ConfigMap the operator writes; firmware built, signed
and pushed with `weatherfleet firmware build|push`; emulated boards provisioned from the Secrets.

The story: every board comes up online with readings; 1.1.0 rolls out wave by wave (5 %, 25 %, 100 %) and
no board updates outside the open share; a crashing 1.2.0 halts in its first wave, the board that took
it rolls back, and no board outside the first wave ever fetches it.

"Never offered, never fetched" is checked three ways: from OtaFlux's access log (its ACCESS_LOG setting
pointed at a file: every answer naming a candidate version, per device, against the history of the plan
OtaFlux had mounted), from the plan itself, and from what the boards report over MQTT (the OTA events
`downloading`/`verifying`/`installed`)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config

from weatherfleet import identities
from weatherfleet.apiserver import ApiServer, ServingCertificate
from weatherfleet.certmanager import CertManager
from weatherfleet.cli import main as cli
from weatherfleet.firmware import signing
from weatherfleet.local.broker import BrokerInputs, LocalBroker
from weatherfleet.local.devices import DeviceFleet
from weatherfleet.local.kubelet import Volume, VolumeSync
from weatherfleet.local.platform import Api
from weatherfleet.local.supervisor import Supervisor
from weatherfleet.local.workdir import Workdir
from weatherfleet.models import FirmwareRelease, SensorFleet, WeatherSensor
from weatherfleet.mqtt import MqttSettings
from weatherfleet.observe import FleetView, MqttObserver
from weatherfleet.pki import LocalCA
from weatherfleet.provisioning.credentials import NotIssued, device_credentials, signing_keys
from weatherfleet.provisioning.deviceconfig import Endpoints, Timing, device_config, device_files
from weatherfleet.reconcilers.fleet import fleet_for_sensor
from weatherfleet.rollout import rollout_id, share_of
from weatherfleet.services.process import free_port, port_open, wait_until
from weatherfleet.services.registry import DistributionRegistry

REPO = Path(__file__).resolve().parents[2]
GITOPS = REPO / "gitops"
SCHEMAS = REPO.parent / "shared" / "schemas"
NS = "weatherfleet"
HOST = "127.0.0.1"
TIME_SCALE = 360  # 30m -> 5 s, 2h -> 20 s, 6h -> 60 s
BOARDS = 10  # the example's three, and clones of them labelled into the same fleet
SERVED = {"ConfigMap", "Secret", "Deployment", "Service", "ServiceAccount", "Certificate", "ClusterIssuer",
          "KopfPeering", "Namespace", "SensorFleet", "WeatherSensor", "FirmwareRelease"}  # fmt: skip
pytestmark = pytest.mark.timeout(420)


def kustomize(path: Path) -> list[dict]:
    out = subprocess.run(["kubectl", "kustomize", str(path)], capture_output=True, text=True, check=True)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def container_of(docs: list[dict], name: str) -> tuple[dict, dict]:
    deployment = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == name)
    spec = deployment["spec"]["template"]["spec"]
    return spec["containers"][0], {v["name"]: v for v in spec.get("volumes", [])}


class Cluster:
    """What a cluster would run, assembled from the package's stand-ins (see the module docstring)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.workdir = Workdir(root / "wd")
        self.supervisor = Supervisor(self.workdir)
        self.ports = {
            name: free_port() for name in ("mqtt", "otaflux", "otaflux_metrics", "metrics", "liveness")
        }
        self.parts: list = []

    # -- the API server and what gitops/ puts on it -----------------------------------------------------
    def start_api(self) -> None:
        pki = LocalCA(self.root / "kube-pki")
        serving = pki.issue("kube-apiserver", server_names=[HOST], client=False)
        self.server = ApiServer(tls=ServingCertificate(serving.cert, serving.key, serving.ca)).start()
        self.parts.append(self.server)
        self.kubeconfig = self.server.write_kubeconfig(self.root / "kubeconfig", namespace=NS)
        self.api = config.new_client_from_config(str(self.kubeconfig))
        self.core = client.CoreV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.cluster = Api(self.api)
        for path in sorted((REPO / "crds").glob("*.yaml")):
            self.cluster.apply(yaml.safe_load(path.read_text()))
        self.cluster.install_crds(SCHEMAS)  # cert-manager's CRDs as upstream ships them
        for ns in (NS, "cert-manager"):
            self.cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        peering = [d for d in yaml.safe_load_all((GITOPS / "base/operator/peering.yaml").read_text()) if d]
        self.apply(
            [
                {**d, "metadata": {**d["metadata"], "namespace": NS}}
                for d in peering
                if d["kind"] != "CustomResourceDefinition"
            ]
        )
        self.apply(kustomize(GITOPS / "base/pki"))
        certificates = kustomize(GITOPS / "base/certificates")
        for doc in certificates:
            if doc["metadata"]["name"] == "nanomq-server":
                # this test cluster's overlay: boards reach the broker at 127.0.0.1, as
                # gitops/overlays/example adds the broker's external name
                doc["spec"]["dnsNames"] = [*doc["spec"]["dnsNames"], "localhost"]
                doc["spec"]["ipAddresses"] = [HOST]
        self.apply(certificates)
        self.nanomq = kustomize(GITOPS / "base/nanomq")
        self.apply(self.nanomq)
        self.otaflux = kustomize(GITOPS / "base/otaflux")
        self.apply(self.otaflux)
        self.operator = kustomize(GITOPS / "base/operator")
        # the cluster overlay supplies the release signing key (public: a ConfigMap)
        private, public = self.root / "signing.key", self.root / "signing.pub"
        signing.generate_key("ed25519", private, public)
        self.signing_key = private
        self.cluster.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "firmware-signing-key", "namespace": NS},
                            "data": {"ed25519.pub": public.read_text()}})  # fmt: skip
        self.run_credentials_job()
        self.examples = kustomize(GITOPS / "examples")

    def apply(self, docs: list[dict]) -> None:
        for doc in docs:
            if doc["kind"] not in SERVED:
                continue  # RBAC, HPA, PDB, network policies: nothing here enforces them
            meta = doc["metadata"]
            if doc["kind"] not in ("ClusterIssuer", "Namespace"):
                meta.setdefault("namespace", NS)
            self.cluster.apply(doc)

    def run_credentials_job(self) -> None:
        """gitops/base/credentials: the Job's own script, with the Job's environment, against this API."""
        job = next(d for d in kustomize(GITOPS / "base/credentials") if d["kind"] == "Job")
        container = job["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
        env.update(KUBE_API_URL=self.server.url, KUBE_TOKEN=self.server.token, POD_NAMESPACE=NS,
                   SERVICE_ACCOUNT_DIR=str(self.root / "no-sa"))  # fmt: skip
        ca = base64.b64decode(
            yaml.safe_load(self.kubeconfig.read_text())["clusters"][0]["cluster"][
                "certificate-authority-data"
            ]
        )
        sa = self.root / "no-sa"
        sa.mkdir(exist_ok=True)
        (sa / "ca.crt").write_bytes(ca)
        script = GITOPS / "base/credentials/init/mqtt_credentials.py"
        result = subprocess.run(
            [sys.executable, str(script)],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert "IDENTITIES" in env and set(env["IDENTITIES"].split(",")) == set(identities.SERVICES)

    def secret_value(self, name: str, key: str) -> str | None:
        try:
            data = self.core.read_namespaced_secret(name, NS).data or {}
        except client.ApiException:
            return None
        return base64.b64decode(data[key]).decode() if key in data else None

    # -- pods ---------------------------------------------------------------------------------------------
    def volumes(self, pod: str, container: dict, volumes: dict) -> dict[str, Path]:
        """Each volumeMount of a ConfigMap or Secret as a synced folder; mountPath -> local folder."""
        mounts = {}
        for mount in container.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            local = self.root / "mounts" / pod / mount["name"]
            kind, source = (
                ("Secret", volume["secret"]) if "secret" in volume else ("ConfigMap", volume.get("configMap"))
            )
            if source is None:
                local.mkdir(parents=True, exist_ok=True)  # emptyDir
            else:
                name = source.get("secretName") or source.get("name")
                items = {i["key"]: i["path"] for i in source["items"]} if source.get("items") else None
                vol = self.kubelet.add(
                    Volume(kind, NS, name, local, items=items, optional=bool(source.get("optional")))
                )
                assert self.kubelet.wait(vol, 60), f"{kind} {name} for {pod} was not there"
            mounts[mount["mountPath"]] = local
        return mounts

    def environment(
        self, container: dict, docs: list[dict], mounts: dict[str, Path], replace: dict[str, str]
    ) -> dict[str, str]:
        """The container's environment as the kubelet builds it (value, fieldRef, secretKeyRef, envFrom
        ConfigMaps), then the cluster's addresses and paths replaced by the local ones. Every variable
        whose value is replaced must be named in `replace`, so a new manifest variable is noticed here."""
        env: dict[str, str] = {}
        for source in container.get("envFrom", []):
            name = source["configMapRef"]["name"]
            cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == name)
            env.update(cm["data"])
        for entry in container.get("env", []):
            if "value" in entry:
                env[entry["name"]] = entry["value"]
                continue
            ref = entry["valueFrom"]
            if "fieldRef" in ref:
                assert ref["fieldRef"]["fieldPath"] == "metadata.namespace"
                env[entry["name"]] = NS
            elif "secretKeyRef" in ref:
                value = self.secret_value(ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"])
                if value is not None:
                    env[entry["name"]] = value
                else:
                    assert ref["secretKeyRef"].get("optional") or entry["name"] in replace, entry
        for name, value in list(env.items()):
            for path, local in sorted(mounts.items(), key=lambda m: -len(m[0])):
                if value.startswith(path):
                    env[name] = str(local) + value[len(path) :]
                    break
        unknown = set(replace) - set(env)
        assert not unknown or unknown <= {"REGISTRY_USERNAME", "REGISTRY_PASSWORD", "WEBHOOK_SECRET"}, unknown
        env.update({k: v for k, v in replace.items() if v is not None})
        for k, v in replace.items():
            if v is None:
                env.pop(k, None)
        return env

    def start_operator(self) -> None:
        container, volumes = container_of(self.operator, "weatherfleet-operator")
        mounts = self.volumes("operator", container, volumes)
        env = self.environment(
            container,
            self.operator,
            mounts,
            {
                "WEATHERFLEET_MQTT_HOST": HOST,  # the Service `nanomq`
                "WEATHERFLEET_MQTT_PORT": str(self.ports["mqtt"]),
                "WEATHERFLEET_METRICS_PORT": str(self.ports["metrics"]),
            },
        )
        env.update(
            {
                "KUBECONFIG": str(self.kubeconfig),
                # settings a cluster does not need: compressed time, the registry behind the releases'
                # cluster address, reaction times for a short test
                "WEATHERFLEET_ROLLOUT_TIME_SCALE": str(TIME_SCALE),
                "WEATHERFLEET_REGISTRY_MIRRORS": f"registry.weatherfleet.svc:5000={self.registry.url}",
                "WEATHERFLEET_ROLLOUT_SECONDS": "1",
                "WEATHERFLEET_LEADER_SETTLE_SECONDS": "1",
                "WEATHERFLEET_STATUS_SETTLE_SECONDS": "1",
                "WEATHERFLEET_RELEASE_RESYNC_SECONDS": "5",
                "WEATHERFLEET_BACKOFF_MAX_SECONDS": "4",
                "WEATHERFLEET_STATUS_REFRESH_SECONDS": "5",
            }
        )
        args = container["args"]
        argv = [
            sys.executable,
            "-m",
            "weatherfleet.cli",
            *args,
            "--liveness",
            f"http://{HOST}:{self.ports['liveness']}/healthz",
        ]
        self.supervisor.start(
            "operator",
            argv,
            lambda: port_open(self.ports["liveness"]),
            env=env,
            timeout=60,
        )

    def start_broker(self) -> None:
        """NanoMQ's Deployment mounts the ACL ConfigMap, the password Secret and its server certificate:
        the same objects, mounted the same way, configure the local Mosquitto."""
        container, volumes = container_of(self.nanomq, "nanomq")
        del container
        folders = {}
        for name, volume in volumes.items():
            source = volume.get("secret") or volume.get("configMap")
            if source is None:
                continue
            kind = "Secret" if "secret" in volume else "ConfigMap"
            obj = source.get("secretName") or source.get("name")
            if obj in ("nanomq-acl", "nanomq-passwords", "nanomq-tls"):
                items = {i["key"]: i["path"] for i in source["items"]} if source.get("items") else None
                folders[obj] = self.kubelet.add(
                    Volume(kind, NS, obj, self.root / "mounts" / "nanomq" / name, items=items)
                )
        assert set(folders) == {"nanomq-acl", "nanomq-passwords", "nanomq-tls"}, folders.keys()
        for volume in folders.values():
            assert self.kubelet.wait(volume, 60)
        tls = self.root / "mounts" / "nanomq" / "broker-tls"
        tls_volume = self.kubelet.add(Volume("Secret", NS, "nanomq-tls", tls))  # ca.crt, tls.crt, tls.key
        assert self.kubelet.wait(tls_volume, 60)
        inputs = BrokerInputs(
            tls=tls,
            acls=[("nanomq", folders["nanomq-acl"].directory)],
            passwords=[folders["nanomq-passwords"].directory],
        )
        self.broker = LocalBroker(self.workdir.mosquitto, self.ports["mqtt"], inputs)
        wait_until(lambda: "weatherfleet-operator" in (inputs.passwords[0] / "nanomq_pwd.conf").read_text(), 60,
                   "the operator's password file", 0.2)  # fmt: skip
        folders["nanomq-acl"].on_change = self.broker.reload
        folders["nanomq-passwords"].on_change = self.broker.reload
        self.broker.reload()
        self.broker.start()
        self.supervisor.adopt("mosquitto", self.broker.process)

    def start_otaflux(self) -> None:
        container, volumes = container_of(self.otaflux, "otaflux")
        mounts = self.volumes("otaflux", container, volumes)
        env = self.environment(
            container,
            self.otaflux,
            mounts,
            {
                "REGISTRY_URL": self.registry.url,  # the overlay's registry
                "REGISTRY_INSECURE": "true",
                "REGISTRY_USERNAME": None,
                "REGISTRY_PASSWORD": None,
                "WEBHOOK_SECRET": None,
                "LISTEN_ADDR": f"{HOST}:{self.ports['otaflux']}",
                "METRICS_LISTEN_ADDR": f"{HOST}:{self.ports['otaflux_metrics']}",
                "MQTT_URL": f"mqtts://{HOST}:{self.ports['mqtt']}",  # the Service nanomq.weatherfleet.svc
            },
        )
        # on a cluster the access log goes to stdout (the default); here to a file the test reads
        self.access_log = self.root / "otaflux-access.log"
        env["ACCESS_LOG"] = str(self.access_log)
        self.supervisor.start(
            "otaflux", [sys.executable, "-m", "weatherfleet.cli", *container["args"]],
            lambda: port_open(self.ports["otaflux"]), env=env, timeout=60,
        )  # fmt: skip

    # -- firmware and boards --------------------------------------------------------------------------
    def push(self, sensors: list[WeatherSensor], version: str, source: Path | None = None) -> None:
        """`weatherfleet firmware build` per feature set and `firmware push` per device, signed."""
        built: dict[tuple[str, ...], Path] = {}
        for sensor in sensors:
            features = tuple(sensor.spec.firmware_features())
            if features not in built:
                out = self.root / "firmware" / f"{version}-{'-'.join(features)}"
                args = [
                    "firmware",
                    "build",
                    "--features",
                    ",".join(features),
                    "--version",
                    version,
                    "--out",
                    str(out),
                ]
                if source:
                    args += ["--source", str(source)]
                assert cli(args) == 0
                built[features] = out
            ref = f"{self.registry.address}/firmware/{sensor.spec.device_id}:{version}"
            assert cli(["firmware", "push", ref, "--bundle", str(built[features]), "--key", str(self.signing_key),
                        "--plain-http", "--quiet"]) == 0  # fmt: skip

    def provision(
        self, sensors: list[WeatherSensor], fleet: SensorFleet, releases: list[FirmwareRelease]
    ) -> None:
        self.boards = DeviceFleet(self.supervisor, self.workdir, day_seconds=600)
        keys = signing_keys(self.core, releases)
        endpoints = Endpoints(
            broker_host=HOST, broker_port=self.ports["mqtt"], ota_host=HOST, ota_port=self.ports["otaflux"]
        )
        timing = Timing(measurement_interval=5, check_interval=15, jitter=2, keepalive=20)
        factory = {}
        for sensor in sensors:
            features = tuple(sensor.spec.firmware_features())
            factory[sensor.spec.device_id] = self.root / "firmware" / f"1.0.0-{'-'.join(features)}"
        for sensor in sensors:
            deadline = time.monotonic() + 60
            while True:
                try:
                    credentials = device_credentials(self.core, sensor, fleet_for_sensor(sensor, [fleet]))
                    break
                except NotIssued:
                    assert time.monotonic() < deadline, f"{sensor.spec.device_id}: no credentials"
                    time.sleep(0.2)
            cfg = device_config(
                sensor, fleet, endpoints, keys, timing, firmware_version="1.0.0", login=credentials.login
            )
            from weatherfleet.provisioning.bundles import bundle_files

            self.boards.install(
                sensor, device_files(cfg, credentials), bundle_files(factory[sensor.spec.device_id])
            )
        self.boards.start(sensors)

    def stop(self) -> None:
        self.supervisor.stop_all()
        for part in reversed(self.parts):
            part.stop()


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    if not SCHEMAS.is_dir():
        pytest.skip("../shared/schemas (cert-manager's CRDs) is not there")
    cluster = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        cluster.registry = DistributionRegistry(directory=cluster.root / "registry", port=free_port()).start()
        cluster.supervisor.adopt("registry", cluster.registry.process)
        cluster.start_api()
        cluster.parts.append(
            CertManager(config.new_client_from_config(str(cluster.kubeconfig)), resync_seconds=5).start()
        )
        cluster.kubelet = VolumeSync(
            config.new_client_from_config(str(cluster.kubeconfig)), poll_seconds=0.3
        ).start()
        cluster.parts.append(cluster.kubelet)
        # gitops/examples, unchanged, and more boards of the same kinds in the same fleet
        cluster.apply(cluster.examples)
        fleet = SensorFleet.model_validate(next(d for d in cluster.examples if d["kind"] == "SensorFleet"))
        examples = [WeatherSensor.model_validate(d) for d in cluster.examples if d["kind"] == "WeatherSensor"]
        sensors = list(examples)
        for i in range(len(examples), BOARDS):
            template = examples[i % 2]  # balcony and greenhouse (the street board is pinned)
            doc = template.model_dump(by_alias=True, mode="json", exclude_none=True, exclude={"status"})
            doc["metadata"] = {
                "name": f"{template.metadata.name}-{i}",
                "namespace": NS,
                "labels": template.metadata.labels,
            }
            doc["spec"]["deviceId"] = f"{template.spec.device_id[:-3]}-{i:02d}"
            cluster.cluster.apply(doc)
            sensors.append(WeatherSensor.model_validate(doc))
        releases = [
            FirmwareRelease.model_validate(d) for d in cluster.examples if d["kind"] == "FirmwareRelease"
        ]
        cluster.fleet, cluster.sensors, cluster.releases = fleet, sensors, releases
        cluster.push(sensors, "1.0.0")  # what the boards come with
        cluster.start_operator()
        cluster.start_broker()
        cluster.start_otaflux()
        # our own view of what the boards report (the operator's identity, a client id of our own)
        mqtt = cluster.root / "mounts" / "operator" / "mqtt-client"
        view_settings = MqttSettings(
            host=HOST,
            port=cluster.ports["mqtt"],
            ca=mqtt / "ca.crt",
            cert=mqtt / "tls.crt",
            key=mqtt / "tls.key",
        )
        cluster.history = []

        def seen(device: str) -> None:
            obs = cluster.view.get(device).observation
            cluster.history.append((device, obs.ota_state, obs.ota_version))

        cluster.view = FleetView(on_change=seen)
        cluster.view_observer = MqttObserver(view_settings, cluster.view, client_id="e2e-view")
        cluster.view_observer.client.username_pw_set(
            identities.OPERATOR, cluster.secret_value(f"{identities.OPERATOR}-mqtt-credentials", "password")
        )
        cluster.view_observer.start()
        cluster.provision(sensors, fleet, releases)
        yield cluster
    finally:
        if getattr(cluster, "view_observer", None):
            cluster.view_observer.stop()
        cluster.stop()


def fleet_status(cluster: Cluster) -> dict:
    return (
        cluster.custom.get_namespaced_custom_object(
            "weatherfleet.io", "v1alpha1", NS, "sensorfleets", "garden"
        ).get("status")
        or {}
    )


def sensor_statuses(cluster: Cluster) -> dict[str, dict]:
    items = cluster.custom.list_namespaced_custom_object("weatherfleet.io", "v1alpha1", NS, "weathersensors")[
        "items"
    ]
    return {i["spec"]["deviceId"]: i.get("status") or {} for i in items}


def reported(cluster: Cluster) -> dict[str, str | None]:
    return {
        d: (s.observation.reported_version if s else None)
        for d, s in ((d.spec.device_id, cluster.view.get(d.spec.device_id)) for d in cluster.sensors)
    }


def mounted_plan(cluster: Cluster):
    from otaflux.plan import read_fleet_plan  # the plan file and its member file, as OtaFlux reads them

    path = cluster.root / "mounts" / "otaflux" / "rollout-plan" / f"{NS}.garden.json"
    try:
        return read_fleet_plan(path)
    except (OSError, ValueError):
        return None


class PlanHistory:
    """The plan OtaFlux has mounted, sampled every 0.2 s from the start: [(wall time, plan)], one entry per
    change. OtaFlux reads the same files once a second, so it never sees a plan this has not."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster, self.entries, self.stop = cluster, [], threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            plan = mounted_plan(self.cluster)
            if plan is not None and (not self.entries or self.entries[-1][1] != plan):
                self.entries.append((time.time(), plan))
            self.stop.wait(0.2)

    def first_offered(self, device: str, version: str) -> float | None:
        """When a mounted plan first offered `version` to `device`; None: never."""
        return next((t for t, plan in self.entries if plan.version_for(device) == version), None)


def access_log(cluster: Cluster) -> list[dict]:
    """OtaFlux's access log (written at least once a second), one dict per answered request."""
    if not cluster.access_log.exists():
        return []
    return [json.loads(line) for line in cluster.access_log.read_text().splitlines() if line.strip()]


def served(cluster: Cluster, version: str) -> list[tuple[float, str, str]]:
    """(time, device, path) of every successful answer that named `version`: told it (/v1/manifest,
    /version) or sent it (/v1/blobs, /firmware)."""
    return [
        (datetime.fromisoformat(e["time"].replace("Z", "+00:00")).timestamp(), e["device"], e["path"])
        for e in access_log(cluster)
        if e.get("version") == version and 200 <= e["status"] < 300
    ]


def served_outside(cluster: Cluster, history: PlanHistory, version: str) -> list[tuple[str, str, float]]:
    """Answers naming `version` to a device no mounted plan had offered it yet (1.5 s of slack: the
    sampler may see a new plan up to 0.2 s after OtaFlux does, and the clocks round to milliseconds)."""
    wrong = []
    for at, device, path in served(cluster, version):
        since = history.first_offered(device, version)
        if since is None or since > at + 1.5:
            wrong.append((device, path, at))
    return wrong


def online(status: dict) -> bool:
    return any(c["type"] == "Online" and c["status"] == "True" for c in status.get("conditions", []))


def test_the_shipped_configuration_end_to_end(shipped):
    cluster = shipped
    devices = [s.spec.device_id for s in cluster.sensors]
    history = PlanHistory(cluster)
    pinned = {s.spec.device_id for s in cluster.sensors if s.spec.firmware.pinned_version}

    # 1. every board online, with readings, as the operator reports it
    def board_states() -> dict[str, tuple[bool, bool]]:
        return {d: (online(s), bool(s.get("lastReading"))) for d, s in sensor_statuses(cluster).items()}

    # boards measure at the CRs' intervals (60 s balcony, 120 s greenhouse, 300 s street), the first time
    # right after boot: every board's reading must be in the status by now
    try:
        wait_until(lambda: len(board_states()) == BOARDS and all(o and r for o, r in board_states().values()),
                   120, "every board Online, readings", 1)  # fmt: skip
    except TimeoutError as error:
        raise AssertionError(f"{error}: (online, reading) per board: {board_states()}") from None
    release = cluster.custom.get_namespaced_custom_object(
        "weatherfleet.io", "v1alpha1", NS, "firmwarereleases", "firmware-1-0-0"
    )
    assert release["status"]["devices"]["verified"] == BOARDS  # per-device, signature required, verified

    # 2. 1.1.0 (the fleet names it from the start) is pushed; the operator verifies it per device and rolls
    #    it out wave by wave, each board updating only once its wave is open
    rid = rollout_id(f"{NS}/garden", "firmware-1-1-0", "1.1.0")
    cluster.push(cluster.sensors, "1.1.0")
    eligible = [d for d in devices if d not in pinned]
    waves_seen, outside, offered = [], [], set()
    deadline = time.monotonic() + 200
    while time.monotonic() < deadline:
        rollout = fleet_status(cluster).get("rollout") or {}
        # what OtaFlux has mounted: the plan the operator wrote, as the boards are served it
        plan = mounted_plan(cluster)
        if plan is not None:
            offered |= {d for d in devices if plan.version_for(d) == "1.1.0"}
        if rollout.get("version") == "1.1.0" and rollout.get("phase") in ("Progressing", "Complete"):
            percent = 100.0 if rollout["phase"] == "Complete" else rollout["percent"]
            if not waves_seen or waves_seen[-1] != percent:
                waves_seen.append(percent)
            if rollout["phase"] == "Complete":
                break
        outside += [d for d, v in reported(cluster).items() if v == "1.1.0" and d not in offered]
        time.sleep(0.5)
    assert waves_seen[:3] == [5.0, 25.0, 100.0], waves_seen
    assert fleet_status(cluster)["rollout"]["phase"] == "Complete", fleet_status(cluster)["rollout"]
    assert not outside, f"updated before the plan offered it: {sorted(set(outside))}"
    # OtaFlux's own record: no answer named 1.1.0 to a device before a plan it had mounted offered it
    time.sleep(1.5)  # the access log is written once a second
    assert not served_outside(cluster, history, "1.1.0"), served_outside(cluster, history, "1.1.0")
    share_1 = share_of(rid, eligible, 5)
    assert len(share_1) == 1 and len(share_of(rid, eligible, 25)) == 3  # 5 % and 25 % of the nine
    wait_until(lambda: {reported(cluster)[d] for d in eligible} == {"1.1.0"}, 60, "every board on 1.1.0", 1)
    assert all(reported(cluster)[d] == "1.0.0" for d in pinned)  # the pinned board stays where it is

    # 3. a crashing 1.2.0: a release CR and the fleet's rollout naming it, as a commit would
    bad_source = cluster.root / "bad-src"
    shutil.copytree(REPO / "firmware" / "device", bad_source, ignore=shutil.ignore_patterns("__pycache__"))
    app = bad_source / "app.py"
    app.write_text('raise RuntimeError("1.2.0 crashes on boot")\n' + app.read_text())
    cluster.push(cluster.sensors, "1.2.0", source=bad_source)
    bad = next(
        d
        for d in cluster.examples
        if d["kind"] == "FirmwareRelease" and d["metadata"]["name"] == "firmware-1-1-0"
    )
    bad = {**bad, "metadata": {"name": "firmware-1-2-0", "namespace": NS}, "spec": {**bad["spec"], "version": "1.2.0",
           "artifact": {**bad["spec"]["artifact"], "tag": "1.2.0"}}}  # fmt: skip
    cluster.cluster.apply(bad)
    fleet = next(d for d in cluster.examples if d["kind"] == "SensorFleet")
    cluster.cluster.apply(
        {
            **fleet,
            "spec": {**fleet["spec"], "rollout": {**fleet["spec"]["rollout"], "release": "firmware-1-2-0"}},
        }
    )
    bad_rid = rollout_id(f"{NS}/garden", "firmware-1-2-0", "1.2.0")
    first_wave = share_of(bad_rid, eligible, 5)
    history_start = len(cluster.history)
    offered_bad: set[str] = set()

    def halted() -> bool:
        plan = mounted_plan(cluster)
        if plan is not None:
            offered_bad.update(d for d in devices if plan.version_for(d) == "1.2.0")
        rollout = fleet_status(cluster).get("rollout") or {}
        return rollout.get("version") == "1.2.0" and rollout.get("phase") == "Halted"

    wait_until(halted, 120, "1.2.0 halted", 0.3)
    # the plan offered it to the first wave only (5 %: one board), and the operator's share is ours
    assert offered_bad == first_wave, (offered_bad, first_wave)
    rollout = fleet_status(cluster)["rollout"]
    assert rollout["wave"] == 0, rollout
    failed = {f["deviceId"] for f in rollout.get("failedDevices", [])}
    assert failed and failed <= first_wave, (failed, first_wave)
    wait_until(
        lambda: all(reported(cluster)[d] == "1.1.0" for d in first_wave), 90, "rolled back to 1.1.0", 1
    )
    time.sleep(5)  # a few more checks of every board: nobody else is offered 1.2.0
    touched = {
        d
        for d, state, version in cluster.history[history_start:]
        if version == "1.2.0" and state != "checking"
    }
    assert touched <= first_wave, f"fetched 1.2.0 outside the first wave: {sorted(touched - first_wave)}"
    # and from OtaFlux's access log: 1.2.0 was told and sent to the first wave only, never before the plan
    # offered it; the first wave did download it (the log is not just empty)
    time.sleep(1.5)
    told = {device for _at, device, _path in served(cluster, "1.2.0")}
    assert told <= first_wave, f"OtaFlux answered 1.2.0 outside the first wave: {sorted(told - first_wave)}"
    assert not served_outside(cluster, history, "1.2.0"), served_outside(cluster, history, "1.2.0")
    downloaded = {d for _at, d, path in served(cluster, "1.2.0") if path.startswith("/v1/blobs/")}
    assert downloaded <= first_wave, (
        f"OtaFlux sent 1.2.0 outside the first wave: {sorted(downloaded - first_wave)}"
    )
    # the board that failed took 1.2.0 (it crashed on boot and went back), not merely timed out
    assert failed <= downloaded, (failed, downloaded, rollout.get("failedDevices"))
    assert {d for _at, d, _path in served(cluster, "1.1.0")} == set(eligible)  # the pinned board: never
    history.stop.set()
    assert {reported(cluster)[d] for d in eligible} == {"1.1.0"}
    assert all(online(s) for s in sensor_statuses(cluster).values())
