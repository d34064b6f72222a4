"""`weatherfleet up`: the cluster's configuration run on one machine, by the same controller.

The local mode is a second host for the operator, not a second implementation of it. It starts an
embedded Kubernetes API server (`weatherfleet.apiserver`, with a kubeconfig in the workdir so kubectl
works) and puts on it what a cluster would hold (`platform`: CRDs, PKI, service certificates, the signing
key ConfigMap, kopf's peering object, the services' MQTT logins) and the CR folder; then it runs the real
`weatherfleet operator` as a process configured the way gitops/base/operator configures it, a small
cert-manager (`weatherfleet.certmanager`) that issues every Certificate, and a kubelet's part
(`kubelet`) that mounts the ConfigMaps and Secrets the processes read, as a pod's volumes would. The
broker is Mosquitto configured from the operator's ACL and credentials output (`broker`), reloaded when
they change; OtaFlux mounts the rollout plan the operator writes; the emulated boards are provisioned from
the Secrets cert-manager and the operator made. Nothing here decides a rollout, resolves or trusts a
release, or writes a plan: the operator does, exactly as in a cluster.

The CR folder is the git repository: it is re-applied (server-side apply, objects removed from the folder
are deleted) whenever a file changes; a bad edit is reported and not applied."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from kubernetes import client, config
from pydantic import BaseModel, Field

from .. import identities
from ..apiserver import ApiServer, ServingCertificate
from ..certmanager import CertManager
from ..models import SensorFleet, WeatherSensor
from ..models.fleet import RolloutStatus
from ..observe import FleetView, MqttObserver
from ..pki import LocalCA
from ..provisioning import credentials as api_credentials
from ..provisioning.bundles import build_bundles, bundle_files, push_release
from ..provisioning.deviceconfig import Endpoints, Timing, device_config, device_files
from ..provisioning.signing import device_key, ensure_signing_key
from ..reconcilers.certificates import broker_secret_name
from ..reconcilers.fleet import fleet_for_sensor
from ..reconcilers.plan import PLAN_CONFIGMAP
from ..reconcilers.revocation import CRL_CONFIGMAP
from ..reconcilers.sensor import credentials_secret_name
from ..rollout import DeviceObservation
from ..services.process import free_port, port_open, wait_until
from ..services.registry import DistributionRegistry
from . import platform
from .broker import BrokerInputs, LocalBroker
from .kubelet import Volume, VolumeSync
from .resources import ResourceError, Resources, fingerprint, load_resources, with_sensor_count
from .supervisor import Supervisor
from .table import DeviceRow, RolloutRow
from .timeline import Timeline, TimelineEvent, device_events, status_events
from .workdir import Workdir, write_atomically

log = logging.getLogger(__name__)
REPOSITORY_PREFIX = "firmware/"
HOST = "127.0.0.1"
OPERATOR_NAMESPACE = "weatherfleet"  # where the operator keeps the rollout plan, as gitops/base installs it
SIGNING_CONFIGMAP = ("firmware-signing-key", "ed25519.pub")  # what OtaFlux mounts (gitops/base/otaflux)
PEERING = "weatherfleet"

# The operator settings the local mode changes from their defaults: reaction times for one machine and a
# person watching (a cluster runs with the defaults). Everything else is the Deployment's configuration.
LOCAL_OPERATOR_SETTINGS = {
    "WEATHERFLEET_ROLLOUT_SECONDS": "2",
    "WEATHERFLEET_RESYNC_SECONDS": "60",
    "WEATHERFLEET_STATUS_REFRESH_SECONDS": "10",
    "WEATHERFLEET_STATUS_SETTLE_SECONDS": "3",
    "WEATHERFLEET_LEADER_SETTLE_SECONDS": "2",
    "WEATHERFLEET_BACKOFF_MAX_SECONDS": "15",
    "WEATHERFLEET_RELEASE_RESYNC_SECONDS": "30",
    "WEATHERFLEET_READINGS_SECONDS": "10",
}


class UpOptions(BaseModel):
    directory: Path
    workdir: Path
    sensors: int | None = None
    registry: Literal["auto", "distribution", "layout"] = "auto"
    timing: Timing | None = None
    factory_version: str = "1.0.0"
    day_seconds: float = 86400.0  # the emulated weather's day; the demo compresses it into minutes
    operator_settings: dict[str, str] = Field(
        default_factory=dict,
        description="more WEATHERFLEET_* settings for the operator (e.g. time compression)",
    )
    start_timeout: float = 120.0


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def fleet_key(fleet: SensorFleet) -> str:
    return f"{fleet.metadata.namespace}/{fleet.metadata.name}"


class LocalSystem:
    def __init__(self, options: UpOptions) -> None:
        self.options = options
        self.workdir = Workdir(options.workdir)
        self.state = self.workdir.load_state()
        self.supervisor = Supervisor(self.workdir)
        self.timeline = Timeline(self.workdir.timeline_path)
        self.view = FleetView(on_change=self._observed)
        # every (device, OTA state, OTA version) the MQTT view went through, for the demo's checks
        self.ota_history: list[tuple[str, str, str | None]] = []
        self.resources = Resources()
        self.errors: list[str] = []  # the last problem with the CR folder, shown in the table
        self.apiserver: ApiServer | None = None
        self.api: client.ApiClient | None = None
        self.cluster: platform.Api | None = None
        self.certmanager: CertManager | None = None
        self.kubelet: VolumeSync | None = None
        self.broker: LocalBroker | None = None
        self.observer: MqttObserver | None = None
        self.devices = None  # DeviceFleet, started after the services
        self.registry_url = ""
        self._fingerprint: tuple = ()
        self._lock = threading.RLock()
        self._store = None
        self._saved_state = ""
        self._rollouts: dict[str, RolloutStatus] = {}
        self._seen: dict[str, DeviceObservation] = {}
        self._bundles: dict[str, Path] = {}

    # --- ports, paths and endpoints --------------------------------------------------------------------

    PORTS = (
        "apiserver", "mqtt", "registry", "otaflux", "otaflux_metrics", "ingest_metrics",
        "operator_metrics", "operator_liveness",
    )  # fmt: skip

    def _allocate_ports(self) -> None:
        """Each service keeps the port it had last time when that is free again (devices keep their
        config), else gets a new one; decided once, before anything listens."""
        for name in self.PORTS:
            port = self.state.ports.get(name)
            if port is None or port_open(port):
                self.state.ports[name] = free_port()
        self.workdir.save_state(self.state)

    def port(self, name: str) -> int:
        return self.state.ports[name]

    @property
    def kubeconfig(self) -> Path:
        return self.workdir.root / "kubeconfig"

    def mount(self, pod: str, volume: str) -> Path:
        return self.workdir.root / "mounts" / pod / volume

    @property
    def endpoints(self) -> Endpoints:
        return Endpoints(
            broker_host=HOST,
            broker_port=self.state.ports["mqtt"],
            ota_host=HOST,
            ota_port=self.state.ports["otaflux"],
        )

    @property
    def signing_key(self) -> Path:
        return ensure_signing_key(self.workdir.signing)[0]

    @property
    def signing_public_key(self) -> Path:
        return ensure_signing_key(self.workdir.signing)[1]

    @property
    def nanomq(self) -> bool:
        return any(f.spec.broker.kind == "nanomq" for f in self.resources.fleets)

    @property
    def namespaces(self) -> list[str]:
        found = {OPERATOR_NAMESPACE}
        for obj in (*self.resources.fleets, *self.resources.sensors, *self.resources.releases):
            found.add(obj.metadata.namespace)
        return sorted(found)

    # --- start -----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start everything; on any failure stop what was started and re-raise (one clear message)."""
        reaped = self.supervisor.reap_stale()
        if reaped:
            self.note(f"stopped processes left by an earlier run: {', '.join(reaped)}")
        self.resources = with_sensor_count(load_resources(self.options.directory), self.options.sensors)
        self._fingerprint = fingerprint(self.options.directory)
        self._allocate_ports()
        try:
            ensure_signing_key(self.workdir.signing)
            self._start_apiserver()
            self._install_platform()
            self.certmanager = CertManager(self._new_api_client(), resync_seconds=30).start()
            self._apply_folder()
            self.kubelet = VolumeSync(self._new_api_client()).start()
            self._start_registry()
            self._start_operator()
            self._start_broker()
            self._start_otaflux()
            self._start_ingest()
            self._start_observer()
            self._start_devices()
        except BaseException:
            self.stop()
            raise

    def _new_api_client(self) -> client.ApiClient:
        return config.new_client_from_config(str(self.kubeconfig))

    def _start_apiserver(self) -> None:
        pki = LocalCA(self.workdir.root / "apiserver" / "pki", common_name="weatherfleet local kube CA")
        serving = pki.issue("kube-apiserver", server_names=[HOST, "localhost"], client=False)
        self.apiserver = ApiServer(
            tls=ServingCertificate(serving.cert, serving.key, serving.ca),
            state_path=self.workdir.root / "apiserver" / "state.json",
        ).start(self.port("apiserver"))
        self.apiserver.write_kubeconfig(self.kubeconfig, namespace=OPERATOR_NAMESPACE)
        self.api = self._new_api_client()
        self.cluster = platform.Api(self.api)

    def _install_platform(self) -> None:
        api = self.cluster
        assert api is not None
        api.install_crds()
        for ns in [platform.CERT_MANAGER_NAMESPACE, *self.namespaces]:
            api.apply(platform.namespace(ns))
        issuers = {f.spec.certificates.issuer_ref.name for f in self.resources.fleets} | {"weatherfleet-ca"}
        for doc in platform.pki(issuers):
            api.apply(doc)
        for doc in platform.service_certificates(OPERATOR_NAMESPACE):
            api.apply(doc)
        public_pem = self.signing_public_key.read_text()
        name, key = SIGNING_CONFIGMAP
        api.apply(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": OPERATOR_NAMESPACE},
                "data": {key: public_pem},
            }
        )
        for ns in self.namespaces:
            api.apply(platform.peering(ns, PEERING))
            api.ensure_service_logins(ns)
        self._apply_platform_for_folder()

    def _apply_platform_for_folder(self) -> None:
        """What depends on the folder: the broker's server certificate, the releases' key ConfigMaps."""
        api = self.cluster
        assert api is not None
        seen_hosts = set()
        for fleet in self.resources.fleets:
            if (fleet.metadata.namespace, fleet.spec.broker.host) not in seen_hosts:
                seen_hosts.add((fleet.metadata.namespace, fleet.spec.broker.host))
                api.apply(platform.broker_certificate(fleet))
        for doc in platform.signing_key_configmaps(
            self.resources.releases, self.signing_public_key.read_text()
        ):
            api.apply(doc)

    # --- the CR folder ---------------------------------------------------------------------------------

    def _folder_objects(self) -> list[dict]:
        return [
            obj.model_dump(by_alias=True, mode="json", exclude_none=True, exclude={"status"})
            for obj in (*self.resources.fleets, *self.resources.sensors, *self.resources.releases)
        ]

    def _apply_folder(self) -> None:
        """Server-side apply of every CR in the folder; what the last apply had and the folder lost is
        deleted (as Argo CD's prune)."""
        api = self.cluster
        assert api is not None
        applied = []
        for doc in self._folder_objects():
            meta = doc["metadata"]
            doc["metadata"] = {
                k: v for k, v in meta.items() if k in ("name", "namespace", "labels", "annotations")
            }
            api.apply(doc)
            applied.append([doc["apiVersion"], doc["kind"], meta.get("namespace"), meta["name"]])
        keep = {tuple(a) for a in applied}
        for old in self.state.applied:
            if tuple(old) not in keep:
                api.delete(*old)
                self.note(f"{old[1]} {old[2]}/{old[3]} removed from the folder: deleted")
        self.state.applied = applied
        self.workdir.save_state(self.state)

    # --- processes -------------------------------------------------------------------------------------

    def _secret_value(self, namespace: str, name: str, key: str) -> str | None:
        import base64

        secret = self.cluster.secret(namespace, name) if self.cluster else None
        value = ((secret or {}).get("data") or {}).get(key)
        return base64.b64decode(value).decode() if value else None

    def _service_password(self, identity: str) -> str | None:
        return self._secret_value(OPERATOR_NAMESPACE, credentials_secret_name(identity), "password")

    def _tls_volume(self, pod: str, secret: str, namespace: str = OPERATOR_NAMESPACE) -> Volume:
        assert self.kubelet is not None
        volume = self.kubelet.add(
            Volume(
                "Secret",
                namespace,
                secret,
                self.mount(pod, "mqtt"),
                items={"ca.crt": "ca.crt", "tls.crt": "tls.crt", "tls.key": "tls.key"},
            )
        )
        if not self.kubelet.wait(volume, self.options.start_timeout):
            raise RuntimeError(
                f"Secret {namespace}/{secret} was not issued (cert-manager stand-in: see the log)"
            )
        return volume

    def operator_environment(self) -> dict[str, str]:
        """The operator's environment: gitops/base/operator/deployment.yaml's variables with the local
        addresses and mount paths, plus the local reaction times and the registry the releases name."""
        mqtt = self.mount("operator", "mqtt")
        env = {
            "KUBECONFIG": str(self.kubeconfig),
            "WEATHERFLEET_NAMESPACE": OPERATOR_NAMESPACE,
            "WEATHERFLEET_MQTT_HOST": HOST,
            "WEATHERFLEET_MQTT_PORT": str(self.port("mqtt")),
            "WEATHERFLEET_MQTT_CA": str(mqtt / "ca.crt"),
            "WEATHERFLEET_MQTT_CERT": str(mqtt / "tls.crt"),
            "WEATHERFLEET_MQTT_KEY": str(mqtt / "tls.key"),
            "WEATHERFLEET_METRICS_PORT": str(self.port("operator_metrics")),
            # where the shipped deployment reads InfluxDB, the local one reads ingest's SQLite store
            "WEATHERFLEET_READINGS_SQLITE": str(self.workdir.store_path),
            # decommissioning revokes into weatherfleet-crl, signed with the CA issuer's key pair
            "WEATHERFLEET_CRL_CA_SECRET": f"{platform.CERT_MANAGER_NAMESPACE}/{platform.ROOT_CA}",
            **LOCAL_OPERATOR_SETTINGS,
            **self._registry_settings(),
            **self.options.operator_settings,
        }
        password = self._service_password(identities.OPERATOR)
        if password:
            env["WEATHERFLEET_MQTT_PASSWORD"] = password
        return env

    def _registry_settings(self) -> dict[str, str]:
        """Releases name registries by their cluster address: locally, every one of them is the local
        registry (OtaFlux is pointed at it by REGISTRY_URL, as in the cluster)."""
        return {"WEATHERFLEET_REGISTRY_MIRRORS": f"*={self.registry_url}"} if self.registry_url else {}

    def operator_command(self) -> list[str]:
        argv = [sys.executable, "-m", "weatherfleet.cli", "operator"]
        for ns in self.namespaces:
            argv += ["--namespace", ns]
        liveness = self.port("operator_liveness")
        return [
            *argv,
            "--peering",
            PEERING,
            "--log-format",
            "json",
            "--liveness",
            f"http://{HOST}:{liveness}/healthz",
        ]

    def _start_operator(self) -> None:
        self._tls_volume("operator", f"{identities.OPERATOR}-tls")
        liveness = self.port("operator_liveness")
        self.supervisor.start(
            "operator",
            self.operator_command(),
            lambda: _http_ok(f"http://{HOST}:{liveness}/healthz"),
            env=self.operator_environment(),
            timeout=self.options.start_timeout,
        )

    def _start_broker(self) -> None:
        assert self.kubelet is not None
        fleets = self.resources.fleets
        if not fleets:
            raise ResourceError("the CR folder has no SensorFleet: the local broker takes its ACL from one")
        first = fleets[0]
        inputs = BrokerInputs(tls=self.mount("broker", "tls"), crl=self.mount("broker", "crl"))
        volumes = [
            Volume("Secret", first.metadata.namespace, broker_secret_name(first), inputs.tls),
            # the operator's CRL (written with the first fleet's ACL): revoked devices fail the handshake
            Volume("ConfigMap", OPERATOR_NAMESPACE, CRL_CONFIGMAP, inputs.crl, items={"ca.crl": "ca.crl"}),
        ]
        for fleet in fleets:
            ns, spec = fleet.metadata.namespace, fleet.spec.broker
            folder = self.mount("broker", f"acl-{ns}-{fleet.metadata.name}")
            inputs.acls.append((spec.kind, folder))
            volumes.append(Volume("ConfigMap", ns, spec.acl_config_map, folder))
            if spec.kind == "nanomq":
                folder = self.mount("broker", f"passwords-{ns}-{fleet.metadata.name}")
                inputs.passwords.append(folder)
                volumes.append(Volume("Secret", ns, spec.credentials_secret, folder))
        for volume in volumes:
            self.kubelet.add(volume)
        for volume in volumes:
            if not self.kubelet.wait(volume, self.options.start_timeout):
                raise RuntimeError(
                    f"{volume.kind} {volume.namespace}/{volume.name} did not appear: the operator writes the "
                    f"broker configuration (log: {self.workdir.logs / 'operator.log'})"
                )
        self.broker = LocalBroker(self.workdir.mosquitto, self.port("mqtt"), inputs)
        self.broker.start()
        self.supervisor.adopt("mosquitto", self.broker.process)
        for volume in volumes:
            volume.on_change = self.broker.reload

    def _start_registry(self) -> None:
        choice = self.options.registry
        have_distribution = shutil.which("docker-registry") or Path("/usr/bin/docker-registry").exists()
        if choice == "distribution" or (choice == "auto" and have_distribution):
            registry = DistributionRegistry(directory=self.workdir.registry, port=self.port("registry"))
            registry.start()
            self.supervisor.adopt("registry", registry.process)
            self.registry_url = registry.url
        else:
            layout = self.workdir.registry / "oci-layout"
            layout.mkdir(parents=True, exist_ok=True)
            self.registry_url = f"oci-layout://{layout}"

    def otaflux_environment(self) -> dict[str, str]:
        """gitops/base/otaflux's Deployment and otaflux-settings, with local addresses and mount paths."""
        mqtt = self.mount("otaflux", "mqtt")
        env = {
            "REGISTRY_URL": self.registry_url,
            "REGISTRY_INSECURE": "true",
            "REPOSITORY_PREFIX": REPOSITORY_PREFIX,
            "LISTEN_ADDR": f"{HOST}:{self.port('otaflux')}",
            "METRICS_LISTEN_ADDR": f"{HOST}:{self.port('otaflux_metrics')}",
            "LOG_LEVEL": "info",
            "CACHE_DIR": str(self.workdir.otaflux / "cache"),
            "MQTT_URL": f"mqtts://{HOST}:{self.port('mqtt')}",
            "MQTT_USERNAME": identities.OTAFLUX,
            "MQTT_TOPIC": "ota",
            "MQTT_CA_CERT_PATH": str(mqtt / "ca.crt"),
            "MQTT_CLIENT_CERT_PATH": str(mqtt / "tls.crt"),
            "MQTT_CLIENT_KEY_PATH": str(mqtt / "tls.key"),
            "ROLLOUT_PLAN_PATH": str(self.mount("otaflux", "rollout-plan")),
            "SIGNATURE_PUBLIC_KEYS": str(self.mount("otaflux", "signing") / SIGNING_CONFIGMAP[1]),
        }
        password = self._service_password(identities.OTAFLUX)
        if password:
            env["MQTT_PASSWORD"] = password
        return env

    def _start_otaflux(self) -> None:
        assert self.kubelet is not None
        self._tls_volume("otaflux", f"{identities.OTAFLUX}-tls")
        name, key = SIGNING_CONFIGMAP
        signing = self.kubelet.add(
            Volume("ConfigMap", OPERATOR_NAMESPACE, name, self.mount("otaflux", "signing"), items={key: key})
        )
        self.kubelet.wait(signing, self.options.start_timeout)
        self.kubelet.add(
            Volume(
                "ConfigMap",
                OPERATOR_NAMESPACE,
                PLAN_CONFIGMAP,
                self.mount("otaflux", "rollout-plan"),
                optional=True,
            )
        )
        port = self.port("otaflux")
        self.supervisor.start(
            "otaflux",
            [sys.executable, "-m", "otaflux"],
            lambda: _http_ok(f"http://{HOST}:{port}/health"),
            env=self.otaflux_environment(),
        )

    def _start_ingest(self) -> None:
        from .services import ingest_command

        self._tls_volume("ingest", f"{identities.INGEST}-tls")
        mqtt = self.mount("ingest", "mqtt")
        password = self._service_password(identities.INGEST) if self.nanomq else None
        argv, ready = ingest_command(
            HOST,
            self.port("mqtt"),
            mqtt,
            self.workdir,
            self.port("ingest_metrics"),
            identities.INGEST if password else None,
        )
        self.supervisor.start("ingest", argv, ready, env={"MQTT_PASSWORD": password} if password else None)

    def _start_observer(self) -> None:
        """The local mode's own read-only view of the devices (table, timeline, demo checks): with the
        operator's identity, under a client id of its own."""
        from ..mqtt import MqttSettings

        mqtt = self.mount("operator", "mqtt")
        settings = MqttSettings(
            host=HOST, port=self.port("mqtt"), ca=mqtt / "ca.crt", cert=mqtt / "tls.crt", key=mqtt / "tls.key"
        )
        prefixes = tuple(sorted({f.spec.broker.topic_prefix for f in self.resources.fleets})) or ("sensors",)
        self.observer = MqttObserver(
            settings, self.view, prefixes, client_id=f"{identities.OPERATOR}-up-{os.getpid()}"
        )
        password = self._service_password(identities.OPERATOR)
        if self.nanomq and password:
            self.observer.client.username_pw_set(identities.OPERATOR, password)
        self.observer.start()
        if not self.observer.wait_ready(30):
            raise RuntimeError("the local view could not subscribe to the broker")

    def _start_devices(self) -> None:
        from .devices import DeviceFleet

        self.devices = DeviceFleet(self.supervisor, self.workdir, self.options.day_seconds)
        self._install_devices()
        self.devices.start(self.resources.sensors)

    def _install_devices(self) -> None:
        """Each board gets config.json and the credentials from its Secrets (every start: endpoints and
        certificates may have moved); a new board also gets the factory firmware, which is pushed, signed,
        to its repository as a release pipeline would."""
        assert self.devices is not None and self.api is not None
        core = client.CoreV1Api(self.api)
        fresh = [s for s in self.resources.sensors if not self.devices.provisioned(s.spec.device_id)]
        factory: dict[str, Path] = {}
        if fresh:
            factory = build_bundles(fresh, self.options.factory_version, self.workdir.firmware / "factory")
            push_release(
                self.registry_url,
                factory,
                self.options.factory_version,
                self.signing_key,
                self.signing_public_key,
                REPOSITORY_PREFIX,
            )
        keys = self._device_signing_keys(core)
        deadline = time.monotonic() + self.options.start_timeout
        for sensor in self.resources.sensors:
            fleet = fleet_for_sensor(sensor, self.resources.fleets)
            credentials = self._wait_credentials(core, sensor, fleet, deadline)
            config_ = device_config(
                sensor,
                fleet,
                self.endpoints,
                keys,
                self.options.timing,
                firmware_version=self.options.factory_version,
                login=credentials.login,
            )
            bundle = factory.get(sensor.spec.device_id)
            self.devices.install(
                sensor, device_files(config_, credentials), bundle_files(bundle) if bundle else None
            )

    def _device_signing_keys(self, core: client.CoreV1Api) -> list[str]:
        try:
            keys = api_credentials.signing_keys(core, self.resources.releases)
        except api_credentials.NotIssued:
            keys = []
        return keys or [device_key(self.signing_public_key)]

    def _wait_credentials(self, core, sensor: WeatherSensor, fleet: SensorFleet | None, deadline: float):
        while True:
            try:
                return api_credentials.device_credentials(core, sensor, fleet)
            except api_credentials.NotIssued as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{sensor.spec.device_id}: {exc} (the operator makes the Certificate, "
                        "cert-manager the Secret)"
                    ) from None
                time.sleep(0.2)

    # --- the loop --------------------------------------------------------------------------------------

    def _observed(self, device: str) -> None:
        sighting = self.view.get(device)
        if sighting and sighting.observation.ota_state:
            entry = (device, sighting.observation.ota_state, sighting.observation.ota_version)
            if not self.ota_history or self.ota_history[-1] != entry:
                self.ota_history.append(entry)

    def observations(self) -> dict[str, DeviceObservation]:
        return {device: sighting.observation for device, sighting in self.view.snapshot().items()}

    def tick(self) -> None:
        """One pass: re-apply the CR folder if it changed, record what moved, keep the children running."""
        with self._lock:
            self._reapply_if_changed()
            now = datetime.now(UTC)
            for key, status in self.fleet_statuses().items():
                for event in status_events(key, self._rollouts.get(key) or RolloutStatus(), status, now):
                    self.timeline.append(event)
                self._rollouts[key] = status
            observations = self.observations()
            for event in device_events(self._seen, observations, now):
                self.timeline.append(event)
            self._seen = {k: v.model_copy() for k, v in observations.items()}
            for name in self.supervisor.dead():
                self.note(f"{name} exited unexpectedly; restarting it (log: {self.workdir.logs / name}.log)")
                try:
                    self.supervisor.restart(name)
                except (RuntimeError, TimeoutError) as error:
                    self.note(f"{name} did not come back: {error}")

    def _reapply_if_changed(self) -> None:
        current = fingerprint(self.options.directory)
        if current == self._fingerprint:
            return
        self._fingerprint = current
        try:
            resources = with_sensor_count(load_resources(self.options.directory), self.options.sensors)
        except ResourceError as error:
            # not applied, as an API server (or Argo CD's sync) would refuse it: the last good state stays
            self.errors = [str(error)]
            self.note(f"CR folder not applied: {error}")
            return
        self.errors = []
        before = {s.spec.device_id for s in self.resources.sensors}
        self.resources = resources
        try:
            self._apply_platform_for_folder()
            self._apply_folder()
        except Exception as error:  # the API refused it: say so and keep going
            self.errors = [str(error)]
            self.note(f"CR folder not applied: {error}")
            return
        after = {s.spec.device_id for s in resources.sensors}
        if self.devices and after != before:
            self._install_devices()
            self.devices.start(resources.sensors)
        self.note("CR folder applied")

    def note(self, message: str) -> None:
        self.timeline.append(TimelineEvent(kind="note", message=message))

    # --- views: what the API says, as `kubectl get` would show it -------------------------------------

    def _custom(self) -> client.CustomObjectsApi:
        assert self.api is not None
        return client.CustomObjectsApi(self.api)

    def fleet_statuses(self) -> dict[str, RolloutStatus]:
        """Each fleet's rollout status as the operator wrote it."""
        out = {}
        if self.api is None:
            return out
        try:
            items = self._custom().list_cluster_custom_object("weatherfleet.io", "v1alpha1", "sensorfleets")[
                "items"
            ]
        except Exception:  # the API server is stopping
            return out
        for item in items:
            rollout = (item.get("status") or {}).get("rollout")
            if rollout:
                out[f"{item['metadata']['namespace']}/{item['metadata']['name']}"] = (
                    RolloutStatus.model_validate(rollout)
                )
        return out

    def sensor_statuses(self) -> dict[str, dict]:
        """deviceId -> the WeatherSensor's status as the operator wrote it."""
        if self.api is None:
            return {}
        try:
            items = self._custom().list_cluster_custom_object(
                "weatherfleet.io", "v1alpha1", "weathersensors"
            )["items"]
        except Exception:
            return {}
        return {i["spec"]["deviceId"]: i.get("status") or {} for i in items}

    def plan_text(self) -> dict[str, str]:
        """The rollout plan ConfigMap's data, as OtaFlux has it mounted."""
        folder = self.mount("otaflux", "rollout-plan")
        return {p.name: p.read_text() for p in sorted(folder.glob("*.json"))} if folder.exists() else {}

    def store(self):
        from ..ingest.sqlite_store import SQLiteStore

        if self._store is None and self.workdir.store_path.exists():
            self._store = SQLiteStore(self.workdir.store_path)
        return self._store

    def device_rows(self) -> list[DeviceRow]:
        view = self.view.snapshot()
        statuses = self.sensor_statuses()
        store = self.store()
        latest = store.latest_readings() if store else {}
        rows = []
        for sensor in sorted(self.resources.sensors, key=lambda s: s.spec.device_id):
            device = sensor.spec.device_id
            sighting = view.get(device)
            obs = sighting.observation if sighting else None
            reading = latest.get(device)
            status = statuses.get(device, {})
            online = next(
                (c["status"] for c in status.get("conditions", []) if c.get("type") == "Online"), None
            )
            seen = [
                t for t in (reading.time if reading else None, sighting.last_seen if sighting else None) if t
            ]
            rows.append(
                DeviceRow(
                    device=device,
                    location=sensor.spec.location,
                    online={"True": True, "False": False}.get(online)
                    if online
                    else (obs.online if obs else None),
                    last_seen=max(seen, default=None),
                    reading=reading.values if reading else {},
                    reported=(obs.reported_version if obs else None)
                    or (status.get("firmware") or {}).get("reported"),
                    desired=(status.get("firmware") or {}).get("desired"),
                    ota_state=obs.ota_state if obs else (status.get("firmware") or {}).get("state"),
                )
            )
        return rows

    def rollout_rows(self) -> list[RolloutRow]:
        statuses = self.fleet_statuses()
        return [
            RolloutRow(fleet=fleet_key(f), waves=len(f.spec.rollout.waves), status=statuses[fleet_key(f)])
            for f in self.resources.fleets
            if fleet_key(f) in statuses
        ]

    def summary(self) -> str:
        ports = self.state.ports
        return "\n".join(
            [
                f"  kubectl       KUBECONFIG={self.kubeconfig} kubectl get weatherfleet -A",
                f"  API server    {self.apiserver.url if self.apiserver else '?'}  (objects kept in {self.workdir.root / 'apiserver'})",
                f"  operator      weatherfleet operator (log: {self.workdir.logs / 'operator.log'})",
                f"  MQTT (mTLS)   {HOST}:{ports['mqtt']}  ({'NanoMQ logins' if self.nanomq else 'identity = certificate CN'})",
                f"  registry      {self.registry_url}",
                f"  OtaFlux       http://{HOST}:{ports['otaflux']}  (metrics :{ports['otaflux_metrics']})",
                f"  rollout plan  {self.mount('otaflux', 'rollout-plan')}  (ConfigMap {PLAN_CONFIGMAP}, mounted)",
                f"  store         {self.workdir.store_path}",
                f"  devices       {len(self.resources.sensors)} emulated, flash in {self.workdir.root / 'devices'}",
                f"  logs          {self.workdir.logs}",
                f"  CR folder     {self.options.directory} (applied again on change)",
            ]
        )

    # --- stop ------------------------------------------------------------------------------------------

    def stop(self) -> None:
        if self.observer:
            self.observer.stop()
            self.observer = None
        if self._store is not None:
            self._store.close()
            self._store = None
        self.supervisor.stop_all()
        if self.kubelet is not None:
            self.kubelet.stop()
            self.kubelet = None
        if self.certmanager is not None:
            self.certmanager.stop()
            self.certmanager = None
        if self.apiserver is not None:
            self.apiserver.stop()
            self.apiserver = None
        self.workdir.save_state(self.state)


def run_loop(system: LocalSystem, interval: float, until=None, on_tick=None) -> None:
    """Tick until `until()` holds (or forever); KeyboardInterrupt and Stop propagate to the caller."""
    while until is None or not until():
        started = time.monotonic()
        system.tick()
        if on_tick:
            on_tick()
        time.sleep(max(0.0, interval - (time.monotonic() - started)))


__all__ = ["LocalSystem", "UpOptions", "run_loop", "wait_until", "write_atomically"]
