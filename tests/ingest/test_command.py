"""`weatherfleet ingest` as a process: configuration, a real run against Mosquitto, metrics, clean stop."""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from weatherfleet import identities
from weatherfleet.commands import ingest as command
from weatherfleet.mqtt import make_client
from weatherfleet.services.process import free_port, wait_until

REPO = Path(__file__).resolve().parents[2]


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return parser.parse_args(argv)


def test_tls_dir_and_token_file(local_ca, tmp_path: Path) -> None:
    issued = local_ca.issue(identities.INGEST)
    tls = tmp_path / "tls"
    tls.mkdir()
    for source, name in ((issued.ca, "ca.crt"), (issued.cert, "tls.crt"), (issued.key, "tls.key")):
        (tls / name).write_bytes(source.read_bytes())
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    args = parse(
        [
            "--tls-dir",
            str(tls),
            "--store",
            "influxdb",
            "--influx-host",
            "http://influxdb3:8181",
            "--influx-token-file",
            str(token),
        ]
    )
    config = command.load_config(args, environ={})
    assert config.mqtt.cert == tls / "tls.crt" and config.mqtt.ca == tls / "ca.crt"
    assert config.influx_token == "s3cret-token"
    assert "s3cret" not in repr(config) and "s3cret" not in str(config)
    assert config.spool_dir == Path("ingest-state") / "spool"
    assert config.mqtt.username is None


def test_nanomq_username_and_password_from_env_or_file(local_ca, tmp_path: Path) -> None:
    issued = local_ca.issue(identities.INGEST)
    tls = ["--ca", str(issued.ca), "--cert", str(issued.cert), "--key", str(issued.key)]
    config = command.load_config(
        parse([*tls, "--mqtt-username", identities.INGEST]), environ={"MQTT_PASSWORD": "pw-env"}
    )
    assert config.mqtt.username == identities.INGEST
    assert config.mqtt.password.get_secret_value() == "pw-env"
    assert "pw-env" not in repr(config)
    secret = tmp_path / "password"
    secret.write_text("pw-file\n")
    argv = [*tls, "--mqtt-username", "u", "--mqtt-password-file", str(secret)]
    assert (
        command.load_config(parse(argv), environ={"MQTT_PASSWORD": "pw-env"}).mqtt.password.get_secret_value()
        == "pw-file"
    )
    with pytest.raises(command.ConfigError, match="without --mqtt-username"):
        command.load_config(parse(tls), environ={"MQTT_PASSWORD": "pw"})


@pytest.mark.parametrize(
    ("argv", "environ", "message"),
    [
        ([], {}, "missing --ca, --cert, --key"),
        (["--tls-dir", "/nonexistent"], {}, "does not exist"),
        (["--store", "influxdb"], {}, "needs --influx-host"),
        (["--store", "influxdb", "--influx-host", "http://x:8181"], {}, "no InfluxDB token"),
    ],
)
def test_configuration_errors_are_clear(local_ca, argv, environ, message) -> None:
    issued = local_ca.issue(identities.INGEST)
    if "--tls-dir" not in argv:
        argv = [*argv, "--ca", str(issued.ca), "--cert", str(issued.cert), "--key", str(issued.key)]
        if message.startswith("missing"):
            argv = []
    with pytest.raises(command.ConfigError, match=message):
        command.load_config(parse(argv), environ=environ)


def test_ingest_process_stores_serves_metrics_and_stops_cleanly(
    mosquitto, mqtt_settings, local_ca, tmp_path
) -> None:
    issued = local_ca.issue(identities.INGEST)
    metrics_port = free_port()
    database = tmp_path / "weather.db"
    env = os.environ | {
        "MQTT_HOST": mosquitto.host,
        "MQTT_PORT": str(mosquitto.port),
        "MQTT_CA": str(issued.ca),
        "MQTT_CERT": str(issued.cert),
        "MQTT_KEY": str(issued.key),
        "INGEST_SQLITE_PATH": str(database),
        "INGEST_STATE_DIR": str(tmp_path / "state"),
        "INGEST_METRICS_PORT": str(metrics_port),
        "INGEST_CLIENT_ID": f"ingest-cmd-{metrics_port}",
    }
    log = (tmp_path / "ingest.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "weatherfleet.cli", "ingest"],
        env=env,
        cwd=tmp_path,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(lambda: _get(metrics_port) is not None, 60, "the metrics endpoint")
        wait_until(
            lambda: "weatherfleet_ingest_mqtt_connected 1.0" in (_get(metrics_port) or ""), 60, "connected"
        )
        device = make_client(mqtt_settings(mosquitto, "dev-07"), "dev-07-cmd", protocol=mqtt.MQTTv311)
        device.connect(mosquitto.host, mosquitto.port)
        device.loop_start()
        stamp = time.time_ns()
        for i in range(10):
            device.publish(
                "sensors/dev-07/measurements", f"weather,device=dev-07 humidity=5{i} {stamp + i}", qos=1
            )
        device.publish(
            "sensors/dev-07/measurements", "weather,device=dev-07 humidity=oops 1", qos=1
        ).wait_for_publish(10)
        wait_until(lambda: _rows(database) == 10, 60, "rows in SQLite")
        text = _get(metrics_port) or ""
        wait_until(
            lambda: (
                'weatherfleet_ingest_dead_letters_total{source="parse"} 1.0' in (_get(metrics_port) or "")
            ),
            30,
            "dead letter metric",
        )
        assert 'weatherfleet_ingest_messages_total{kind="measurements"}' in text
        assert "weatherfleet_ingest_batch_seconds_count" in text
        device.loop_stop()
        device.disconnect()
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(30)
        log.close()
    assert code == 0, (tmp_path / "ingest.log").read_text()
    dead = (
        sqlite3.connect(tmp_path / "state" / "dead-letters.db")
        .execute("SELECT reason FROM dead_letters")
        .fetchall()
    )
    assert dead == [("field 'humidity' must be a number, got 'oops'",)]


def _get(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            return response.read().decode()
    except OSError:
        return None


def _rows(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        return sqlite3.connect(path).execute("SELECT COUNT(*) FROM weather").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
