"""The operator as it runs in its container: `weatherfleet operator` (the real CLI), JSON logs, Prometheus
metrics, kopf's liveness endpoint, and a graceful stop on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request

import pytest
from helpers import wait_for

from weatherfleet.services.process import free_port

pytestmark = pytest.mark.slow


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def test_cli_serves_metrics_liveness_json_logs_and_stops_gracefully(kube, cluster, namespace):
    ns = namespace
    metrics_port, liveness_port = free_port(), free_port()
    env = {**os.environ, "WEATHERFLEET_NAMESPACE": ns, "WEATHERFLEET_METRICS_PORT": str(metrics_port)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "weatherfleet.cli",
            "operator",
            "--namespace",
            ns,
            "--standalone",
            "--liveness",
            f"http://127.0.0.1:{liveness_port}/healthz",
            "--log-format",
            "json",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        cluster.broker_deployment(ns)
        cluster.create("SensorFleet", ns, "mf", {"selector": {"matchLabels": {"fleet": "mf"}}})
        cluster.create(
            "WeatherSensor",
            ns,
            "m-1",
            {"deviceId": "m-1", "location": "x", "sensors": [{"type": "bme280"}]},
            {"fleet": "mf"},
        )
        wait_for(lambda: cluster.get("WeatherSensor", ns, "m-1").get("status"), 90, "m-1 reconciled")
        text = wait_for(lambda: get(f"http://127.0.0.1:{metrics_port}/metrics"), 30, "metrics")
        assert 'weatherfleet_reconciles_total{kind="WeatherSensor",outcome="ok"}' in text
        assert "weatherfleet_api_writes_total" in text
        assert wait_for(lambda: get(f"http://127.0.0.1:{liveness_port}/healthz"), 30, "liveness") is not None
    except AssertionError:
        proc.send_signal(signal.SIGTERM)
        print(proc.communicate(timeout=60)[0][-5000:])
        raise
    proc.send_signal(signal.SIGTERM)
    try:
        output, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 0, output[-3000:]
    lines = [line for line in output.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert records and len(records) >= len(lines) * 0.9, lines[:5]  # structured: one JSON object per line
    messages = [r.get("message", "") for r in records]
    assert any("weatherfleet operator started" in m for m in messages)
    assert any("weatherfleet operator stopped" in m for m in messages)  # cleanup ran: graceful
