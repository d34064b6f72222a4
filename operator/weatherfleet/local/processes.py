"""The processes of the local system, each started as its cluster Deployment configures it: the operator,
the broker (Mosquitto from the operator's ACL and credentials), the registry, OtaFlux, ingest, and the local
mode's own read-only MQTT observer. Their certificates and configuration are mounted from the API server by
the kubelet stand-in, as a pod's volumes would be. A part of LocalSystem (the mixin keeps `self`)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from .. import identities
from ..observe import MqttObserver
from ..provisioning.signing import ROLLOUT, ensure_signing_key
from ..reconcilers.certificates import broker_secret_name
from ..reconcilers.plan import PLAN_CONFIGMAP
from ..reconcilers.revocation import CRL_CONFIGMAP
from ..reconcilers.sensor import credentials_secret_name
from ..services.registry import DistributionRegistry
from . import platform
from .broker import BrokerInputs, LocalBroker
from .kubelet import Volume
from .options import (
    HOST,
    LOCAL_OPERATOR_SETTINGS,
    OPERATOR_NAMESPACE,
    PEERING,
    REPOSITORY_PREFIX,
    SIGNING_CONFIGMAP,
    http_ok,
)
from .resources import ResourceError


class ServiceProcesses:
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
            "WEATHERFLEET_MQTT_PORT": str(self.port("mqtt_services")),
            "WEATHERFLEET_MQTT_CA": str(mqtt / "ca.crt"),
            "WEATHERFLEET_MQTT_CERT": str(mqtt / "tls.crt"),
            "WEATHERFLEET_MQTT_KEY": str(mqtt / "tls.key"),
            "WEATHERFLEET_METRICS_PORT": str(self.port("operator_metrics")),
            # where the shipped deployment reads InfluxDB, the local one reads ingest's SQLite store
            "WEATHERFLEET_READINGS_SQLITE": str(self.workdir.store_path),
            # decommissioning revokes into weatherfleet-crl, signed with the CA issuer's key pair
            "WEATHERFLEET_CRL_CA_SECRET": f"{platform.CERT_MANAGER_NAMESPACE}/{platform.ROOT_CA}",
            # the key the cluster mounts from the Secret weatherfleet-rollout-key
            "WEATHERFLEET_ROLLOUT_KEY": str(ensure_signing_key(self.workdir.signing, ROLLOUT)[0]),
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
            lambda: http_ok(f"http://{HOST}:{liveness}/healthz"),
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
            # NanoMQ: every login; Mosquitto: the service logins its services listener admits
            folder = self.mount("broker", f"passwords-{ns}-{fleet.metadata.name}")
            (inputs.passwords if spec.kind == "nanomq" else inputs.service_logins).append(folder)
            volumes.append(Volume("Secret", ns, spec.credentials_secret, folder))
        for volume in volumes:
            self.kubelet.add(volume)
        for volume in volumes:
            if not self.kubelet.wait(volume, self.options.start_timeout):
                raise RuntimeError(
                    f"{volume.kind} {volume.namespace}/{volume.name} did not appear: the operator writes the "
                    f"broker configuration (log: {self.workdir.logs / 'operator.log'})"
                )
        self.broker = LocalBroker(
            self.workdir.mosquitto, self.port("mqtt"), inputs, self.port("mqtt_services")
        )
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
            "MQTT_URL": f"mqtts://{HOST}:{self.port('mqtt_services')}",
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
            lambda: http_ok(f"http://{HOST}:{port}/health"),
            env=self.otaflux_environment(),
        )

    def _start_ingest(self) -> None:
        from .services import ingest_command

        self._tls_volume("ingest", f"{identities.INGEST}-tls")
        mqtt = self.mount("ingest", "mqtt")
        password = self._service_password(identities.INGEST)
        argv, ready = ingest_command(
            HOST,
            self.port("mqtt_services"),
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
            host=HOST,
            port=self.port("mqtt_services"),
            ca=mqtt / "ca.crt",
            cert=mqtt / "tls.crt",
            key=mqtt / "tls.key",
        )
        prefixes = tuple(sorted({f.spec.broker.topic_prefix for f in self.resources.fleets})) or ("sensors",)
        self.observer = MqttObserver(
            settings,
            self.view,
            prefixes,
            client_id=f"{identities.OPERATOR}-up-{os.getpid()}",
            password=self._service_password(identities.OPERATOR),
        )
        self.observer.start()
        if not self.observer.wait_ready(30):
            raise RuntimeError("the local view could not subscribe to the broker")
