"""`weatherfleet provision`: the file set a board gets and the exact commands, without a board. What goes
on the board comes from the cluster (here the embedded API server): the WeatherSensor, the Secret the
cert-manager stand-in issued for the Certificate the operator would make, the NanoMQ login, the public
key the releases name."""

from __future__ import annotations

import base64
import json
import shlex
import stat

import pytest
from cryptography import x509
from kubernetes import client, config

from weatherfleet.apiserver import ApiServer
from weatherfleet.certmanager import CertManager
from weatherfleet.cli import main
from weatherfleet.firmware import signing
from weatherfleet.local import platform
from weatherfleet.models import SensorFleet
from weatherfleet.provisioning.board import provisioning_steps, stage_files
from weatherfleet.reconcilers.certificates import device_certificate
from weatherfleet.services.process import wait_until

from .conftest import FLEET, release, sensor


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """dev-01 and dev-02 as the operator and cert-manager leave them: certificates issued; the NanoMQ
    fleet's dev-03 also with its broker login."""
    tmp = tmp_path_factory.mktemp("cluster")
    server = ApiServer().start()
    kubeconfig = server.write_kubeconfig(tmp / "kubeconfig", namespace="weatherfleet")
    api = config.new_client_from_config(str(kubeconfig))
    applier = platform.Api(api)
    applier.install_crds()
    for ns in ("weatherfleet", "cert-manager"):
        applier.apply(platform.namespace(ns))
    for doc in platform.pki({"weatherfleet-ca"}):
        applier.apply(doc)
    nano = {**FLEET, "metadata": {"name": "nano", "namespace": "weatherfleet"},
            "spec": {**FLEET["spec"], "selector": {"matchLabels": {"weatherfleet.io/fleet": "nano"}}, "broker": {"kind": "nanomq", "host": "nanomq"}}}  # fmt: skip
    dev3 = sensor("dev-03", "shed")
    dev3["metadata"]["labels"] = {"weatherfleet.io/fleet": "nano"}
    for doc in [
        FLEET,
        nano,
        sensor("dev-01", "garden"),
        sensor("dev-02", "roof", ("bme280", "scd30")),
        dev3,
        release("1.1.0"),
    ]:
        applier.apply(doc)
    policy = SensorFleet.model_validate(FLEET).spec.certificates
    for device in ("dev-01", "dev-02", "dev-03"):
        applier.apply(device_certificate(device, "weatherfleet", policy, {}, []))
    private, public = tmp / "signing.key", tmp / "signing.pub"
    signing.generate_key("ed25519", private, public)
    applier.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "firmware-signing-key", "namespace": "weatherfleet"},
                   "data": {"ed25519.pub": public.read_text()}})  # fmt: skip
    client.CoreV1Api(api).create_namespaced_secret(
        "weatherfleet",
        {"metadata": {"name": "dev-03-mqtt-credentials"}, "type": "kubernetes.io/basic-auth",
         "stringData": {"username": "dev-03", "password": "board-password"}},
    )  # fmt: skip
    manager = CertManager(
        config.new_client_from_config(str(kubeconfig)), resync_seconds=1, retry_seconds=0.3
    ).start()
    core = client.CoreV1Api(api)

    def issued() -> bool:
        try:
            return all(
                core.read_namespaced_secret(f"{d}-device-tls", "weatherfleet")
                for d in ("dev-01", "dev-02", "dev-03")
            )
        except client.ApiException:
            return False

    wait_until(issued, 30, "the device certificates")
    yield kubeconfig, core
    manager.stop()
    server.stop()


def test_dry_run_prints_files_and_mpremote_commands(cluster, tmp_path, capsys):
    workdir = tmp_path / "wd"
    code = main(
        ["provision", "dev-02", "--port", "/dev/ttyUSB0", "--kubeconfig", str(cluster[0]), "--workdir", str(workdir),
         "--ota-host", "ota.example", "--dry-run"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    staged = workdir / "provision" / "dev-02"
    assert sorted(str(p.relative_to(staged)) for p in staged.rglob("*") if p.is_file()) == [
        "certs/ca.pem",
        "certs/device.key",
        "certs/device.pem",
        "config.json",
    ]
    # the private key is staged for its owner only and never printed
    assert stat.S_IMODE((staged / "certs/device.key").stat().st_mode) == 0o600
    assert "PRIVATE KEY" not in out
    # the client certificate is the device's identity (CN = deviceId): the one cert-manager issued
    cert = x509.load_pem_x509_certificate((staged / "certs/device.pem").read_bytes())
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "dev-02"
    secret = cluster[1].read_namespaced_secret("dev-02-device-tls", "weatherfleet")
    # the CSR path (issue 13): a key made at provisioning, not the one cert-manager keeps in the Secret; the
    # certificate is for that key and signed by the fleet CA (tests/local/test_provision_csr.py)
    assert (staged / "certs/device.key").read_bytes() != base64.b64decode(secret.data["tls.key"])
    assert (staged / "certs/ca.pem").read_bytes() == base64.b64decode(secret.data["ca.crt"])
    config = json.loads((staged / "config.json").read_text())
    assert config["device"] == "dev-02" and config["location"] == "roof"
    assert config["broker"]["username"] is None  # Mosquitto: the certificate is the login
    assert config["ota"]["host"] == "ota.example"
    assert [s["type"] for s in config["sensors"]] == ["bme280", "scd30"]
    assert config["sensors"][1]["address"] == 0x61
    assert config["tls"] == {"ca": "certs/ca.pem", "cert": "certs/device.pem", "key": "certs/device.key"}
    assert len(config["signingKeys"]) == 1 and len(config["signingKeys"][0]) == 64
    commands = [shlex.split(line.strip()) for line in out.split("commands:\n")[1].splitlines()]
    assert commands[-1] == ["mpremote", "connect", "/dev/ttyUSB0", "reset"]
    copies = [c for c in commands if c[3:5] == ["fs", "cp"]]
    assert [c[-1] for c in copies] == [
        ":certs/ca.pem",
        ":certs/device.key",
        ":certs/device.pem",
        ":config.json",
    ]
    assert all(c[5].startswith(str(staged)) for c in copies)
    assert commands[0][3] == "exec" and "os.mkdir" in commands[0][4] and "'certs'" in commands[0][4]


def test_flash_image_adds_esptool_steps_first(tmp_path):
    files = stage_files(tmp_path / "s", {"config.json": b"{}", "lib/x.mpy": b"x"}, set())
    image = tmp_path / "micropython.bin"
    steps = provisioning_steps("dev-01", "/dev/ttyUSB1", files, flash_image=image)
    assert steps.commands[0] == ["esptool", "--chip", "esp32", "--port", "/dev/ttyUSB1", "erase_flash"]
    assert steps.commands[1][-3:] == ["-z", "0x1000", str(image)]
    # config.json goes last: a board interrupted half-way idles without config instead of half-booting
    assert steps.commands[-2][-1] == ":config.json"


def test_unknown_device_and_missing_image_are_clear_errors(cluster, tmp_path, capsys):
    assert (
        main(
            [
                "provision",
                "nope",
                "--port",
                "p",
                "--kubeconfig",
                str(cluster[0]),
                "--workdir",
                str(tmp_path),
                "--dry-run",
            ]
        )
        == 2
    )
    assert "no WeatherSensor with deviceId nope" in capsys.readouterr().err
    code = main(
        ["provision", "dev-01", "--port", "p", "--kubeconfig", str(cluster[0]), "--workdir", str(tmp_path),
         "--flash-image", str(tmp_path / "missing.bin"), "--dry-run"]
    )  # fmt: skip
    assert code == 2 and "no such file" in capsys.readouterr().err


def test_wifi_password_comes_from_the_environment_only(cluster, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("WEATHERFLEET_WIFI_PASSWORD", raising=False)
    args = ["provision", "dev-01", "--port", "p", "--kubeconfig", str(cluster[0]), "--workdir", str(tmp_path), "--dry-run",
            "--wifi-ssid", "home"]  # fmt: skip
    assert main(args) == 2 and "WEATHERFLEET_WIFI_PASSWORD" in capsys.readouterr().err
    monkeypatch.setenv("WEATHERFLEET_WIFI_PASSWORD", "s3cret-wifi")
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "s3cret-wifi" not in out
    config_path = tmp_path / "provision" / "dev-01" / "config.json"
    assert json.loads(config_path.read_text())["wifi"] == {"ssid": "home", "password": "s3cret-wifi"}
    assert stat.S_IMODE(config_path.stat().st_mode) == 0o600


def test_a_built_bundle_goes_flat_into_the_root_with_its_version(cluster, tmp_path, capsys):
    from weatherfleet.firmware.build import build

    bundle = tmp_path / "bundle"
    manifest = build(["bme280", "influx", "tls", "mtls", "ota"], "1.4.2", bundle)
    workdir = tmp_path / "wd"
    code = main(["provision", "dev-01", "--port", "/dev/ttyACM0", "--kubeconfig", str(cluster[0]), "--workdir", str(workdir),
                 "--firmware", str(bundle), "--dry-run"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    staged = workdir / "provision" / "dev-01"
    for entry in manifest.files:
        assert (staged / entry.path).read_bytes() == (bundle / entry.path).read_bytes()
        assert f"fs cp {staged / entry.path} :{entry.path}" in out
    assert any(e.path.endswith(".mpy") for e in manifest.files)  # a real board gets compiled modules
    assert json.loads((staged / "config.json").read_text())["firmwareVersion"] == "1.4.2"


def test_a_tampered_bundle_is_refused(cluster, tmp_path, capsys):
    from weatherfleet.firmware.build import build

    bundle = tmp_path / "bundle"
    build(["bme280", "influx", "tls", "ota"], "1.4.2", bundle)
    (bundle / "main.py").write_text((bundle / "main.py").read_text() + "\n# changed\n")
    code = main(["provision", "dev-01", "--port", "p", "--kubeconfig", str(cluster[0]), "--workdir", str(tmp_path / "wd"),
                 "--firmware", str(bundle), "--dry-run"])  # fmt: skip
    assert code == 2
    assert "main.py does not match manifest.json" in capsys.readouterr().err
    assert not (tmp_path / "wd" / "provision").exists()


def test_a_nanomq_board_gets_its_login_and_the_config_stays_private(cluster, tmp_path, capsys):
    workdir = tmp_path / "wd"
    assert main(["provision", "dev-03", "--port", "p", "--kubeconfig", str(cluster[0]), "--workdir", str(workdir),
                 "--dry-run"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    config_path = workdir / "provision" / "dev-03" / "config.json"
    config = json.loads(config_path.read_text())
    assert (config["broker"]["username"], config["broker"]["password"]) == ("dev-03", "board-password")
    assert config["broker"]["host"] == "nanomq"
    assert stat.S_IMODE(config_path.stat().st_mode) == 0o600 and "board-password" not in out


def test_without_a_cluster_provision_says_where_to_get_one(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("KUBECONFIG", raising=False)
    assert main(["provision", "dev-01", "--port", "p", "--workdir", str(tmp_path), "--dry-run"]) == 2
    assert "weatherfleet up" in capsys.readouterr().err
