"""`weatherfleet up`: the whole system on 127.0.0.1, assembled from the project's own parts.

local CA (weatherfleet.pki)  ->  every certificate: broker, services, each device
Mosquitto (mTLS, ACL from the fleet reconciler)           weatherfleet.services.mosquitto
OCI registry: docker-registry, or an OCI layout folder    weatherfleet.services.registry / weatherfleet.oci
OtaFlux (subprocess) reading the single-file rollout plan  otaflux
ingest (subprocess) into SQLite                           weatherfleet.ingest
emulated devices (subprocess) running firmware/device     devicesim
in this process: the CR folder reconcile loop, the rollout loop (weatherfleet.rollout), the fleet view
(weatherfleet.observe) and the live table.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from .. import identities
from ..mqtt import MqttSettings
from ..observe import FleetView, MqttObserver
from ..pki import LocalCA
from ..reconcilers.broker import mosquitto_acl
from ..rollout import DeviceObservation, RolloutPlan
from ..services.mosquitto import MosquittoBroker
from ..services.process import free_port, port_open
from ..services.registry import DistributionRegistry
from .deviceconfig import Endpoints, Timing, device_config, device_files
from .releases import build_bundles, bundle_files
from .resources import ResourceError, Resources, fingerprint, load_resources, with_sensor_count
from .rollouts import RolloutLoop, fleet_key
from .signing import device_key, ensure_signing_key
from .supervisor import Supervisor
from .table import DeviceRow, RolloutRow
from .timeline import Timeline, TimelineEvent
from .workdir import Workdir

REPOSITORY_PREFIX = "firmware/"
HOST = "127.0.0.1"


class UpOptions(BaseModel):
    directory: Path
    workdir: Path
    sensors: int | None = None
    registry: Literal["auto", "distribution", "layout"] = "auto"
    timing: Timing | None = None
    factory_version: str = "1.0.0"
    day_seconds: float = 86400.0  # the emulated weather's day; the demo compresses it into minutes


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


class LocalSystem:
    def __init__(self, options: UpOptions) -> None:
        self.options = options
        self.workdir = Workdir(options.workdir)
        self.state = self.workdir.load_state()
        self.supervisor = Supervisor(self.workdir)
        self.timeline = Timeline(self.workdir.timeline_path)
        self.rollouts = RolloutLoop(
            self.state, self.workdir.plan_path, self.timeline, options.factory_version
        )
        self.view = FleetView(on_change=self._observed)
        # every (device, OTA state, OTA version) the fleet view went through, for the demo's checks
        self.ota_history: list[tuple[str, str, str | None]] = []
        self.ca: LocalCA | None = None
        self.broker: MosquittoBroker | None = None
        self.registry_url = ""
        self.observer: MqttObserver | None = None
        self.devices = None  # DeviceFleet, started after the services
        self.resources = Resources()
        self.plan = RolloutPlan()
        self.errors: list[str] = []  # the last problem with the CR folder, shown in the table
        self._fingerprint: tuple = ()
        self._lock = threading.RLock()
        self._store = None
        self._saved_state = ""

    # --- ports and endpoints ---------------------------------------------------------------------------

    def port(self, name: str) -> int:
        """The port a service had last time when it is free again (devices keep their config), else a new one."""
        port = self.state.ports.get(name)
        if port is None or port_open(port):
            port = free_port()
            self.state.ports[name] = port
            self.workdir.save_state(self.state)
        return port

    @property
    def endpoints(self) -> Endpoints:
        return Endpoints(
            broker_host=HOST,
            broker_port=self.state.ports["mqtt"],
            ota_host=HOST,
            ota_port=self.state.ports["otaflux"],
        )

    def mqtt_settings(self, identity: str) -> MqttSettings:
        issued = self.ca.issue(identity)
        return MqttSettings(
            host=HOST, port=self.state.ports["mqtt"], ca=issued.ca, cert=issued.cert, key=issued.key
        )

    @property
    def signing_key(self) -> Path:
        return ensure_signing_key(self.workdir.signing)[0]

    @property
    def signing_public_key(self) -> Path:
        return ensure_signing_key(self.workdir.signing)[1]

    # --- start -----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start everything; on any failure stop what was started and re-raise (one clear message)."""
        reaped = self.supervisor.reap_stale()
        if reaped:
            self.note(f"stopped processes left by an earlier run: {', '.join(reaped)}")
        self.resources = with_sensor_count(load_resources(self.options.directory), self.options.sensors)
        self._fingerprint = fingerprint(self.options.directory)
        try:
            self.ca = LocalCA(self.workdir.pki)
            for identity in identities.SERVICES:
                self.ca.issue(identity)
            ensure_signing_key(self.workdir.signing)
            self._start_broker()
            self._start_registry()
            self.rollouts.step(self.resources, {}, datetime.now(UTC))  # a plan file before OtaFlux reads it
            self._start_otaflux()
            self._start_ingest()
            self.observer = MqttObserver(self.mqtt_settings(identities.OPERATOR), self.view).start()
            if not self.observer.wait_ready(30):
                raise RuntimeError("the fleet observer could not subscribe to the broker")
            self._start_devices()
        except BaseException:
            self.stop()
            raise

    def _acl(self) -> str:
        return "\n".join(
            mosquitto_acl(
                fleet_key(f),
                [s.spec.device_id for s in self.resources.members(f)],
                f.spec.broker.topic_prefix,
            )
            for f in self.resources.fleets
        )

    def _start_broker(self) -> None:
        self.broker = MosquittoBroker(
            directory=self.workdir.mosquitto, ca=self.ca, port=self.port("mqtt"), acl_text=self._acl()
        )
        self.broker.start()
        self.supervisor.adopt("mosquitto", self.broker.process)

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

    def _start_otaflux(self) -> None:
        port, metrics = self.port("otaflux"), self.port("otaflux_metrics")
        issued = self.ca.issue(identities.OTAFLUX)
        env = {
            "REGISTRY_URL": self.registry_url,
            "REGISTRY_INSECURE": "true",
            "REPOSITORY_PREFIX": REPOSITORY_PREFIX,
            "LISTEN_ADDR": f"{HOST}:{port}",
            "METRICS_LISTEN_ADDR": f"{HOST}:{metrics}",
            "MQTT_URL": f"mqtts://{HOST}:{self.state.ports['mqtt']}",
            "MQTT_CA_CERT_PATH": str(issued.ca),
            "MQTT_CLIENT_CERT_PATH": str(issued.cert),
            "MQTT_CLIENT_KEY_PATH": str(issued.key),
            "ROLLOUT_PLAN_PATH": str(self.workdir.plan_path),
            "SIGNATURE_PUBLIC_KEYS": str(self.signing_public_key),
            "CACHE_DIR": str(self.workdir.otaflux / "cache"),
            "LOG_LEVEL": "info",
        }
        self.supervisor.start(
            "otaflux",
            [sys.executable, "-m", "otaflux"],
            lambda: _http_ok(f"http://{HOST}:{port}/health"),
            env=env,
        )

    def _start_ingest(self) -> None:
        from .services import ingest_command

        settings = self.mqtt_settings(identities.INGEST)
        argv, ready = ingest_command(settings, self.workdir, self.port("ingest_metrics"))
        self.supervisor.start("ingest", argv, ready)

    def _start_devices(self) -> None:
        from .devices import DeviceFleet

        self.devices = DeviceFleet(self.supervisor, self.workdir, self.options.day_seconds)
        self._install_devices()
        self.devices.start(self.resources.sensors)

    def _install_devices(self) -> None:
        """config.json and certificates on each device's flash; the factory firmware on a new board."""
        key = device_key(self.signing_public_key)
        fresh = [s for s in self.resources.sensors if not self.devices.provisioned(s.spec.device_id)]
        factory = (
            build_bundles(fresh, self.options.factory_version, self.workdir.firmware / "factory")
            if fresh
            else {}
        )
        for sensor in self.resources.sensors:
            fleet = next((f for f in self.resources.fleets if sensor in self.resources.members(f)), None)
            config = device_config(
                sensor,
                fleet,
                self.endpoints,
                [key],
                self.options.timing,
                firmware_version=self.options.factory_version,
            )
            bundle = factory.get(sensor.spec.device_id)
            self.devices.install(
                sensor, device_files(self.ca, config), bundle_files(bundle) if bundle else None
            )

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
        """One pass: re-read the CR folder if it changed, decide rollouts, keep the children running."""
        with self._lock:
            self._reconcile_if_changed()
            self.plan = self.rollouts.step(self.resources, self.observations(), datetime.now(UTC))
            state = self.state.model_dump_json(by_alias=True, indent=2)
            if state != self._saved_state:  # written when something moved, not twice a second
                self.workdir.save_state(self.state)
                self._saved_state = state
            for name in self.supervisor.dead():
                self.note(f"{name} exited unexpectedly; restarting it (log: {self.workdir.logs / name}.log)")
                try:
                    self.supervisor.restart(name)
                except (RuntimeError, TimeoutError) as error:
                    self.note(f"{name} did not come back: {error}")

    def _reconcile_if_changed(self) -> None:
        current = fingerprint(self.options.directory)
        if current == self._fingerprint:
            return
        self._fingerprint = current
        try:
            resources = with_sensor_count(load_resources(self.options.directory), self.options.sensors)
        except ResourceError as error:
            # keep running on the last good state, like an API server rejecting a bad object
            self.errors = [str(error)]
            self.note(f"CR folder not applied: {error}")
            return
        self.errors = []
        before = {s.spec.device_id for s in self.resources.sensors}
        self.resources = resources
        acl = self._acl()
        if self.broker and acl != self.broker.acl_text:
            self.broker.update_acl(acl)
        after = {s.spec.device_id for s in resources.sensors}
        if self.devices and after != before:
            self._install_devices()
            self.devices.start(resources.sensors)
        self.note("CR folder re-applied")

    def note(self, message: str) -> None:
        self.timeline.append(TimelineEvent(kind="note", message=message))

    # --- views -----------------------------------------------------------------------------------------

    def store(self):
        from ..ingest.sqlite_store import SQLiteStore

        if self._store is None and self.workdir.store_path.exists():
            self._store = SQLiteStore(self.workdir.store_path)
        return self._store

    def device_rows(self) -> list[DeviceRow]:
        view = self.view.snapshot()
        store = self.store()
        latest = store.latest_readings() if store else {}
        rows = []
        for sensor in sorted(self.resources.sensors, key=lambda s: s.spec.device_id):
            device = sensor.spec.device_id
            sighting = view.get(device)
            obs = sighting.observation if sighting else None
            reading = latest.get(device)
            rows.append(
                DeviceRow(
                    device=device,
                    location=sensor.spec.location,
                    online=obs.online if obs else None,
                    last_seen=max(
                        (
                            t
                            for t in (
                                reading.time if reading else None,
                                sighting.last_seen if sighting else None,
                            )
                            if t
                        ),
                        default=None,
                    ),
                    reading=reading.values if reading else {},
                    reported=obs.reported_version if obs else None,
                    desired=self.plan.version_for(device),
                    ota_state=obs.ota_state if obs else None,
                )
            )
        return rows

    def rollout_rows(self) -> list[RolloutRow]:
        return [
            RolloutRow(
                fleet=fleet_key(f), waves=len(f.spec.rollout.waves), status=self.state.rollouts[fleet_key(f)]
            )
            for f in self.resources.fleets
            if fleet_key(f) in self.state.rollouts
        ]

    def summary(self) -> str:
        ports = self.state.ports
        return "\n".join(
            [
                f"  MQTT (mTLS)   {HOST}:{ports['mqtt']}   CA {self.ca.cert_path}",
                f"  registry      {self.registry_url}",
                f"  OtaFlux       http://{HOST}:{ports['otaflux']}  (metrics :{ports['otaflux_metrics']})",
                f"  rollout plan  {self.workdir.plan_path}",
                f"  store         {self.workdir.store_path}",
                f"  devices       {len(self.resources.sensors)} emulated, flash in {self.workdir.root / 'devices'}",
                f"  logs          {self.workdir.logs}",
                f"  CR folder     {self.options.directory} (re-applied on change)",
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
        self.workdir.save_state(self.state)


def run_loop(system: LocalSystem, interval: float, until=None, on_tick=None) -> None:
    """Tick until `until()` holds (or forever); KeyboardInterrupt and Stop propagate to the caller."""
    while until is None or not until():
        started = time.monotonic()
        system.tick()
        if on_tick:
            on_tick()
        time.sleep(max(0.0, interval - (time.monotonic() - started)))
