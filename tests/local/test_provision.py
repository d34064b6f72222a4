"""`weatherfleet provision`: the file set a board gets and the exact commands, without a board."""

from __future__ import annotations

import json
import shlex
import stat

from cryptography import x509

from weatherfleet.cli import main
from weatherfleet.local.provisioning import plan_provision, stage_files


def test_dry_run_prints_files_and_mpremote_commands(cr_dir, tmp_path, capsys):
    workdir = tmp_path / "wd"
    code = main(
        ["provision", "dev-02", "--port", "/dev/ttyUSB0", "--dir", str(cr_dir), "--workdir", str(workdir),
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
    # the client certificate is the device's identity (CN = deviceId), signed by the local CA
    cert = x509.load_pem_x509_certificate((staged / "certs/device.pem").read_bytes())
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "dev-02"
    config = json.loads((staged / "config.json").read_text())
    assert config["device"] == "dev-02" and config["location"] == "roof"
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
    plan = plan_provision("dev-01", "/dev/ttyUSB1", files, flash_image=image)
    assert plan.commands[0] == ["esptool", "--chip", "esp32", "--port", "/dev/ttyUSB1", "erase_flash"]
    assert plan.commands[1][-3:] == ["-z", "0x1000", str(image)]
    # config.json goes last: a board interrupted half-way idles without config instead of half-booting
    assert plan.commands[-2][-1] == ":config.json"


def test_unknown_device_and_missing_image_are_clear_errors(cr_dir, tmp_path, capsys):
    assert (
        main(
            [
                "provision",
                "nope",
                "--port",
                "p",
                "--dir",
                str(cr_dir),
                "--workdir",
                str(tmp_path),
                "--dry-run",
            ]
        )
        == 2
    )
    assert "no WeatherSensor with deviceId nope" in capsys.readouterr().err
    code = main(
        ["provision", "dev-01", "--port", "p", "--dir", str(cr_dir), "--workdir", str(tmp_path),
         "--flash-image", str(tmp_path / "missing.bin"), "--dry-run"]
    )  # fmt: skip
    assert code == 2 and "no such file" in capsys.readouterr().err


def test_wifi_password_comes_from_the_environment_only(cr_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("WEATHERFLEET_WIFI_PASSWORD", raising=False)
    args = ["provision", "dev-01", "--port", "p", "--dir", str(cr_dir), "--workdir", str(tmp_path), "--dry-run",
            "--wifi-ssid", "home"]  # fmt: skip
    assert main(args) == 2 and "WEATHERFLEET_WIFI_PASSWORD" in capsys.readouterr().err
    monkeypatch.setenv("WEATHERFLEET_WIFI_PASSWORD", "s3cret-wifi")
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "s3cret-wifi" not in out
    config_path = tmp_path / "provision" / "dev-01" / "config.json"
    assert json.loads(config_path.read_text())["wifi"] == {"ssid": "home", "password": "s3cret-wifi"}
    assert stat.S_IMODE(config_path.stat().st_mode) == 0o600


def test_a_built_bundle_goes_flat_into_the_root_with_its_version(cr_dir, tmp_path, capsys):
    from weatherfleet.firmware.build import build

    bundle = tmp_path / "bundle"
    manifest = build(["bme280", "influx", "tls", "mtls", "ota"], "1.4.2", bundle)
    workdir = tmp_path / "wd"
    code = main(["provision", "dev-01", "--port", "/dev/ttyACM0", "--dir", str(cr_dir), "--workdir", str(workdir),
                 "--firmware", str(bundle), "--dry-run"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    staged = workdir / "provision" / "dev-01"
    for entry in manifest.files:
        assert (staged / entry.path).read_bytes() == (bundle / entry.path).read_bytes()
        assert f"fs cp {staged / entry.path} :{entry.path}" in out
    assert any(e.path.endswith(".mpy") for e in manifest.files)  # a real board gets compiled modules
    assert json.loads((staged / "config.json").read_text())["firmwareVersion"] == "1.4.2"


def test_a_tampered_bundle_is_refused(cr_dir, tmp_path, capsys):
    from weatherfleet.firmware.build import build

    bundle = tmp_path / "bundle"
    build(["bme280", "influx", "tls", "ota"], "1.4.2", bundle)
    (bundle / "main.py").write_text((bundle / "main.py").read_text() + "\n# changed\n")
    code = main(["provision", "dev-01", "--port", "p", "--dir", str(cr_dir), "--workdir", str(tmp_path / "wd"),
                 "--firmware", str(bundle), "--dry-run"])  # fmt: skip
    assert code == 2
    assert "main.py does not match manifest.json" in capsys.readouterr().err
    assert not (tmp_path / "wd" / "provision").exists()
