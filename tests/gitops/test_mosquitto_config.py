"""The Mosquitto the operator configures for a `broker.kind: mosquitto` fleet: gitops/base/mosquitto mounts
the operator's files exactly where its rendered mosquitto.conf reads them, and that configuration, run by
the real Mosquitto, binds a board's client id to its certificate and admits only service logins on the
services' port (issue 14)."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import gitops_build as gb
import paho.mqtt.client as mqtt

from weatherfleet import identities
from weatherfleet.models import SensorFleet, WeatherSensor
from weatherfleet.mqtt import MqttSettings, make_client
from weatherfleet.pki import LocalCA
from weatherfleet.reconcilers import broker
from weatherfleet.reconcilers.fleet import FleetObservation, reconcile_fleet
from weatherfleet.services.mosquitto import start_mosquitto
from weatherfleet.services.process import free_port

BASE = gb.GITOPS / "base" / "mosquitto"
FLEET = {"apiVersion": "weatherfleet.io/v1alpha1", "kind": "SensorFleet",
         "metadata": {"name": "garden", "namespace": "weatherfleet", "uid": "u-1"},
         "spec": {"selector": {"matchLabels": {"weatherfleet.io/fleet": "garden"}},
                  "broker": {"kind": "mosquitto", "host": "mosquitto", "aclConfigMap": "mosquitto-acl",
                             "credentialsSecret": "mosquitto-passwords", "deployment": "mosquitto",
                             "manageServerCertificate": True}}}  # fmt: skip
SERVICE_LOGINS = {identity: f"pw-{identity}" for identity in identities.SERVICES}


def _operator_output() -> tuple[dict[str, str], dict[str, str]]:
    """(ACL ConfigMap data, credentials Secret data) the operator writes for the fleet."""
    fleet = SensorFleet.model_validate(FLEET)
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    examples = gb.build(gb.GITOPS / "examples")  # balcony-01, greenhouse-01, street-01
    sensors = [WeatherSensor.model_validate(d) for d in examples if d["kind"] == "WeatherSensor"]
    result = reconcile_fleet(
        fleet, FleetObservation(now=now, sensors=sensors, passwords=dict(SERVICE_LOGINS))
    )
    config = next(
        c for c in result.children if c["kind"] == "ConfigMap" and c["metadata"]["name"] == "mosquitto-acl"
    )
    secret = next(c for c in result.children if c["kind"] == "Secret")
    assert secret["metadata"]["name"] == "mosquitto-passwords"
    return config["data"], secret["stringData"]


def test_the_deployment_mounts_the_operators_files_where_the_configuration_reads_them() -> None:
    objects = gb.build(BASE)
    deployment = gb.find(objects, "Deployment", "mosquitto")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    volumes = {v["name"]: v for v in pod["volumes"]}
    files = set()
    for mount in container["volumeMounts"]:
        source = volumes[mount["name"]].get("configMap") or volumes[mount["name"]].get("secret") or {}
        files |= {f"{mount['mountPath']}/{item['path']}" for item in source.get("items", [])}
    paths = broker.CLUSTER_MOSQUITTO_PATHS
    assert {paths.acl, paths.service_logins, "/mosquitto/config/mosquitto.conf"} <= files
    assert "/mosquitto/config/mosquitto.conf" in container["command"]
    names = {(m["mountPath"], v.get("configMap", {}).get("name") or v.get("secret", {}).get("secretName"))
             for m in container["volumeMounts"] for v in [volumes[m["name"]]]}  # fmt: skip
    fleet = FLEET["spec"]["broker"]
    assert {("/mosquitto/config", fleet["aclConfigMap"]), ("/mosquitto/logins", fleet["credentialsSecret"]),
            ("/mosquitto/tls", "mosquitto-tls")} <= names  # fmt: skip
    assert any(m["mountPath"] == paths.data for m in container["volumeMounts"])
    service = gb.find(objects, "Service", "mosquitto")
    ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    assert ports == {"mqtts": broker.MOSQUITTO_DEVICE_PORT, "services": broker.MOSQUITTO_SERVICES_PORT}


class _Client:
    def __init__(self, settings: MqttSettings, client_id: str) -> None:
        self.reasons: list[str] = []
        self.disconnects = 0
        self.answered = threading.Event()
        self.client = make_client(settings, client_id)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *_args: setattr(self, "disconnects", self.disconnects + 1)
        self.client.connect(settings.host, settings.port)
        self.client.loop_start()
        assert self.answered.wait(10), "no CONNACK"

    def _on_connect(self, _client, _userdata, _flags, reason, _properties=None) -> None:
        self.reasons.append(str(reason))
        self.answered.set()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_the_rendered_configuration_binds_boards_and_admits_only_service_logins(tmp_path: Path) -> None:
    """The operator's files, mounted under a folder as the kubelet would mount them under /mosquitto."""
    data, secret = _operator_output()
    root, ca = tmp_path / "mosquitto", LocalCA(tmp_path / "pki")
    server = ca.issue("mosquitto", server_names=["127.0.0.1"], client=False)
    for folder, files in {"config": data, "logins": secret,
                          "tls": {"ca.crt": ca.cert_path.read_text(), "tls.crt": server.cert.read_text(),
                                  "tls.key": server.key.read_text()}}.items():  # fmt: skip
        (root / folder).mkdir(parents=True)
        for name, text in files.items():
            (root / folder / name).write_text(text)
    device_port, services_port = free_port(), free_port()
    text = data[broker.MOSQUITTO_CONFIG_KEY].replace("/mosquitto/", f"{root}/")
    text = text.replace(f"listener {broker.MOSQUITTO_DEVICE_PORT}\n", f"listener {device_port} 127.0.0.1\n")
    text = text.replace(
        f"listener {broker.MOSQUITTO_SERVICES_PORT}\n", f"listener {services_port} 127.0.0.1\n"
    )
    process = start_mosquitto(
        tmp_path / "run", "user root\n" + text, device_port, services_port
    )  # as root here
    clients: list[_Client] = []

    def connect(identity: str, port: int, client_id: str, password: str | None = None) -> _Client:
        issued = ca.issue(identity)
        settings = MqttSettings(host="127.0.0.1", port=port, ca=issued.ca, cert=issued.cert, key=issued.key,
                                username=identity if password else None, password=password)  # fmt: skip
        clients.append(_Client(settings, client_id))
        return clients[-1]

    try:
        ingest = connect(
            identities.INGEST, services_port, "weatherfleet-ingest-a", SERVICE_LOGINS[identities.INGEST]
        )
        replica = connect(
            identities.INGEST, services_port, "weatherfleet-ingest-b", SERVICE_LOGINS[identities.INGEST]
        )
        assert ingest.reasons == replica.reasons == ["Success"]
        refused = connect("street-01", services_port, "weatherfleet-ingest-a", "guessed")
        assert "Not authorized" in refused.reasons[0]
        device = connect("balcony-01", device_port, "balcony-01")
        attackers = [
            connect("street-01", device_port, "weatherfleet-ingest-a"),
            connect("street-01", device_port, "balcony-01"),
        ]
        assert all(a.reasons[0] == "Success" for a in attackers)
        # the two attackers hold one session, dev-02's; a QoS 1 round trip shows nobody else lost one
        for client in (ingest, replica, device):
            client.client.publish("probe", b"", qos=1).wait_for_publish(5)
        assert (ingest.disconnects, replica.disconnects, device.disconnects) == (0, 0, 0)
    finally:
        for client in clients:
            client.close()
        process.stop()
    assert mqtt  # paho, underneath make_client
