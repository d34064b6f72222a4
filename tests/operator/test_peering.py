"""Leader election: two `weatherfleet operator` processes (the real CLI) share a kopf peering; only the
one with the higher priority acts, and the other takes over when it stops. Against the API double only:
it must tell the replicas' writes apart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from helpers import wait_for

pytestmark = pytest.mark.slow


def start(ns: str, priority: int) -> subprocess.Popen:
    env = {**os.environ, "WEATHERFLEET_NAMESPACE": ns, "WEATHERFLEET_METRICS_PORT": "0"}
    args = ["operator", "--namespace", ns, "--peering", "wf-test", "--priority", str(priority)]
    return subprocess.Popen(
        [sys.executable, "-m", "weatherfleet.cli", *args, "--liveness", "", "--log-format", "plain"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def writers(kube, ns: str) -> dict[str, int]:
    def collect(store):
        out: dict[str, int] = {}
        for w in store.writes:
            if w.actor == "weatherfleet-operator" and w.namespace == ns and w.resource != "kopfpeerings":
                pid = w.agent.rsplit("/", 1)[-1].rstrip(")")
                out[pid] = out.get(pid, 0) + 1
        return out

    return kube.call(collect)


def test_only_the_leader_acts_and_the_follower_takes_over(kube, cluster, namespace):
    if kube is None:
        pytest.skip("needs the API double to attribute writes to replicas")
    ns = namespace
    cluster.crs.create_namespaced_custom_object(
        "kopf.dev",
        "v1",
        ns,
        "kopfpeerings",
        {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": "wf-test"}},
    )
    leader, follower = start(ns, 200), start(ns, 100)
    try:
        cluster.broker_deployment(ns)
        cluster.create("SensorFleet", ns, "pf", {"selector": {"matchLabels": {"fleet": "pf"}}})
        cluster.create(
            "WeatherSensor",
            ns,
            "p-1",
            {"deviceId": "p-1", "location": "x", "sensors": [{"type": "bme280"}]},
            {"fleet": "pf"},
        )
        wait_for(lambda: cluster.get("WeatherSensor", ns, "p-1").get("status"), 90, "p-1 reconciled")
        if set(writers(kube, ns)) != {str(leader.pid)}:
            for proc in (leader, follower):
                proc.send_signal(signal.SIGTERM)
                print(proc.pid, proc.communicate(timeout=30)[0][-4000:])
        assert set(writers(kube, ns)) == {str(leader.pid)}

        leader.send_signal(signal.SIGTERM)  # graceful: kopf leaves the peering, running work finishes
        assert leader.wait(60) == 0, leader.stdout.read()[-3000:]
        cluster.create(
            "WeatherSensor",
            ns,
            "p-2",
            {"deviceId": "p-2", "location": "y", "sensors": [{"type": "bme280"}]},
            {"fleet": "pf"},
        )
        wait_for(
            lambda: cluster.get("WeatherSensor", ns, "p-2").get("status"),
            120,
            "p-2 reconciled by the follower",
        )
        assert str(follower.pid) in writers(kube, ns)
    finally:
        for proc in (leader, follower):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
