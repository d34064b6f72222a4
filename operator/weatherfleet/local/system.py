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
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from kubernetes import client, config

from ..apiserver import ApiServer, ServingCertificate
from ..certmanager import CertManager
from ..models.fleet import RolloutStatus
from ..observe import FleetView, MqttObserver
from ..pki import LocalCA
from ..provisioning.deviceconfig import Endpoints
from ..provisioning.signing import ensure_signing_key
from ..rollout import DeviceObservation
from ..services.process import free_port, port_open
from . import platform
from .broker import LocalBroker
from .deviceinstall import DeviceInstall
from .kubelet import VolumeSync
from .options import HOST, OPERATOR_NAMESPACE, PEERING, SIGNING_CONFIGMAP, UpOptions
from .processes import ServiceProcesses
from .resources import ResourceError, Resources, fingerprint, load_resources, with_sensor_count
from .supervisor import Supervisor
from .timeline import Timeline, TimelineEvent, device_events, status_events
from .views import ApiViews
from .workdir import Workdir

log = logging.getLogger(__name__)


# Each concern lives in its own module; the parts are mixins so they share the one state below, unchanged.
class LocalSystem(ServiceProcesses, DeviceInstall, ApiViews):
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
        "apiserver", "mqtt", "mqtt_services", "registry", "otaflux", "otaflux_metrics", "ingest_metrics",
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


__all__ = ["LocalSystem", "run_loop"]
