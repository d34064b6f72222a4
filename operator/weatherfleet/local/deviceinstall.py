"""The emulated boards of the local system: provisioned from the Secrets cert-manager and the operator made
(config.json, certificates, the release signing keys) and, when new, the factory firmware, pushed signed to
their repositories as a release pipeline would. A part of LocalSystem (the mixin keeps `self`)."""

from __future__ import annotations

import time
from pathlib import Path

from kubernetes import client

from ..models import SensorFleet, WeatherSensor
from ..provisioning import credentials as api_credentials
from ..provisioning.bundles import build_bundles, bundle_files, push_release
from ..provisioning.deviceconfig import device_config, device_files
from ..provisioning.signing import ROLLOUT, device_key, ensure_signing_key
from ..reconcilers.fleet import fleet_for_sensor
from .options import REPOSITORY_PREFIX


class DeviceInstall:
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
                rollout_keys=[device_key(ensure_signing_key(self.workdir.signing, ROLLOUT)[1])],
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
