"""Rollouts driven by devices reporting over a real Mosquitto (mutual TLS, per-device identities)."""

from __future__ import annotations

import time

import pytest
from devices import FakeFleet
from helpers import wait_for

from weatherfleet.reconcilers.plan import plan_from_configmap
from weatherfleet.rollout import FleetPlan

pytestmark = pytest.mark.slow
DEVICES = [f"dev-{i:02d}" for i in range(1, 21)]
SENSOR = {"location": "field", "sensors": [{"type": "bme280"}]}


def release(cluster, ns: str, name: str, version: str) -> None:
    cluster.create(
        "FirmwareRelease",
        ns,
        name,
        {
            "version": version,
            "artifact": {"repository": "registry.invalid/fleet/{deviceId}", "tag": version},
            "signature": {"required": False},
        },
    )


def setup_fleet(cluster, ns: str, rollout: dict) -> None:
    cluster.broker_deployment(ns)
    cluster.create(
        "SensorFleet", ns, "field", {"selector": {"matchLabels": {"fleet": "field"}}, "rollout": rollout}
    )
    for device in DEVICES:
        cluster.create("WeatherSensor", ns, device, {"deviceId": device, **SENSOR}, {"fleet": "field"})


def plan_reader(cluster, ns: str):
    def read() -> FleetPlan | None:
        """The fleet's plan as the API holds it: its JSON in data, its members in binaryData."""
        cm = cluster.configmap("weatherfleet", "weatherfleet-rollout-plan")
        if cm is None:
            return None
        return plan_from_configmap({"data": cm.data, "binaryData": cm.binary_data}, f"{ns}.field.json")

    return read


def rollout(cluster, ns: str) -> dict:
    return ((cluster.get("SensorFleet", ns, "field") or {}).get("status") or {}).get("rollout") or {}


def reasons(cluster, ns: str) -> list[str]:
    return [
        e.reason for e in sorted(cluster.events(ns, "field"), key=lambda e: e.metadata.creation_timestamp)
    ]


def test_rollout_advances_on_healthy_reports_and_halts_on_failures(
    cluster, namespace, start_operator, fleet_broker
):
    ns = namespace
    _broker, env, settings_for = fleet_broker
    release(cluster, ns, "fw-2", "2.0.0")
    release(cluster, ns, "fw-3", "3.0.0")
    fleet = FakeFleet(DEVICES, settings_for, "1.0.0", plan_reader(cluster, ns), bad={"3.0.0"})
    try:
        start_operator(env)
        setup_fleet(
            cluster,
            ns,
            {
                "release": "fw-2",
                "waves": [{"percent": 25, "bakeTime": "3s"}, {"percent": 100, "bakeTime": "3s"}],
                "failureThreshold": {"count": 2},
            },
        )
        wait_for(lambda: rollout(cluster, ns).get("phase") == "Progressing", 60, "rollout started")
        first = rollout(cluster, ns)
        assert first["wave"] == 0 and first["percent"] == 25
        wait_for(lambda: rollout(cluster, ns).get("phase") == "Complete", 120, "rollout complete")
        done = rollout(cluster, ns)
        assert done["updated"] == 20 and done["failed"] == 0 and done["percent"] == 100
        assert {d.firmware for d in fleet.devices.values()} == {"2.0.0"}
        plan = plan_reader(cluster, ns)()
        assert plan.stable == "2.0.0" and plan.candidate is None
        assert reasons(cluster, ns).count("RolloutAdvanced") == 1
        wait_for(lambda: "RolloutComplete" in reasons(cluster, ns), 30, "a RolloutComplete event")
        # Every sensor shows what it runs and what it should run (kubectl get ws columns).
        ws = wait_for(
            lambda: (
                (s := cluster.get("WeatherSensor", ns, "dev-07"))["status"]["firmware"].get("reported")
                == "2.0.0"
                and s
            ),
            60,
            "dev-07 reporting 2.0.0",
        )
        assert ws["status"]["firmware"]["desired"] == "2.0.0" and ws["status"]["lastSeen"]
        assert cluster.condition(ws, "Online")["status"] == "True"

        # A device that drops off (its last will, published by the broker) is reported offline at once.
        dropped = fleet.devices["dev-20"]
        dropped.client.publish(
            "sensors/dev-20/status", '{"online": false}', qos=1, retain=True
        ).wait_for_publish(10)

        def offline():
            cond = cluster.condition(cluster.get("WeatherSensor", ns, "dev-20"), "Online")
            return cond if cond and cond["status"] == "False" else None

        assert wait_for(offline, 60, "dev-20 offline")["reason"] == "Disconnected"
        wait_for(
            lambda: any(e.reason == "SensorOffline" for e in cluster.events(ns, "dev-20")),
            30,
            "SensorOffline",
        )
        dropped.publish_status()
        wait_for(lambda: cluster.is_true("WeatherSensor", ns, "dev-20", "Online"), 60, "dev-20 back online")

        # A bad release: devices in the first wave roll back; the threshold (2) halts the rollout.
        cluster.patch("SensorFleet", ns, "field", {"spec": {"rollout": {"release": "fw-3"}}})
        wait_for(lambda: rollout(cluster, ns).get("phase") == "Halted", 120, "rollout halted")
        halted = rollout(cluster, ns)
        assert halted["version"] == "3.0.0" and halted["failed"] >= 2 and halted["wave"] == 0
        failed = {f["deviceId"]: f["reason"] for f in halted["failedDevices"]}
        assert all("health check failed" in r for r in failed.values())
        assert "failure threshold" in halted["reason"]
        plan = wait_for(lambda: (p := plan_reader(cluster, ns)()) and p.halted and p, 30, "the plan closed")
        assert plan.percent == 0 and plan.stable == "2.0.0"
        assert all(plan.version_for(d) == "2.0.0" for d in DEVICES)  # nobody else is offered 3.0.0
        wait_for(lambda: "RolloutHalted" in reasons(cluster, ns), 30, "a RolloutHalted event")
        tried = {d for d, v, _ in fleet.updates if v == "3.0.0"}
        assert set(failed) <= tried and len(tried) < len(DEVICES) / 2  # only the first wave ever tried it
        fleet_status = cluster.get("SensorFleet", ns, "field")
        assert cluster.condition(fleet_status, "RolloutHealthy")["status"] == "False"
        # The failed device runs the stable release again (desired after the halt) and says what happened.
        dev = next(iter(failed))

        def rolled_back():
            fw = cluster.get("WeatherSensor", ns, dev)["status"]["firmware"]
            return fw if fw.get("state") == "rolled_back" else None

        fw = wait_for(rolled_back, 60, f"{dev} firmware state rolled_back")
        assert fw["reported"] == "2.0.0" and fw["desired"] == "2.0.0"
        assert "health check failed" in fw["lastError"]
    finally:
        fleet.stop()


def test_operator_restart_mid_rollout_continues_without_advancing_twice(
    cluster, namespace, start_operator, fleet_broker
):
    ns = namespace
    _broker, env, settings_for = fleet_broker
    release(cluster, ns, "fw-2", "2.0.0")
    fleet = FakeFleet(DEVICES, settings_for, "1.0.0", plan_reader(cluster, ns))
    try:
        first = start_operator(env)
        setup_fleet(
            cluster,
            ns,
            {
                "release": "fw-2",
                "waves": [{"percent": 50, "bakeTime": "8s"}, {"percent": 100, "bakeTime": "1h"}],
                "failureThreshold": {"count": 3},
            },
        )
        wait_for(lambda: rollout(cluster, ns).get("phase") == "Progressing", 60, "rollout started")
        started = rollout(cluster, ns)
        wait_for(lambda: rollout(cluster, ns).get("updated", 0) > 0, 60, "some devices updated in wave 1")
        first.stop()  # mid-wave: the bake time has not passed yet
        assert rollout(cluster, ns)["wave"] == 0

        start_operator(env)
        wait_for(lambda: rollout(cluster, ns).get("wave") == 1, 60, "wave 2 opened after the restart")
        after = rollout(cluster, ns)
        # The restarted operator continued the same rollout from its status: same start, one advance.
        assert after["percent"] == 100 and after["phase"] == "Progressing"
        assert after["waveStartedAt"] > started["waveStartedAt"]
        from weatherfleet.controller import metrics

        count = metrics.RECONCILES.labels(kind="SensorFleet", outcome="ok")._value.get()
        wait_for(
            lambda: metrics.RECONCILES.labels(kind="SensorFleet", outcome="ok")._value.get() >= count + 3,
            30,
            "three more rollout evaluations",
        )
        assert (
            rollout(cluster, ns)["wave"] == 1
            and rollout(cluster, ns)["waveStartedAt"] == after["waveStartedAt"]
        )
        assert reasons(cluster, ns).count("RolloutStarted") == 1
        assert reasons(cluster, ns).count("RolloutAdvanced") == 1

        # Pause and resume by editing the spec, as a person would in git.
        cluster.patch("SensorFleet", ns, "field", {"spec": {"rollout": {"paused": True}}})
        wait_for(lambda: rollout(cluster, ns).get("phase") == "Paused", 60, "rollout paused")
        assert rollout(cluster, ns)["wave"] == 1 and rollout(cluster, ns)["percent"] == 100
        wait_for(lambda: "RolloutPaused" in reasons(cluster, ns), 30, "a RolloutPaused event")
        cluster.patch("SensorFleet", ns, "field", {"spec": {"rollout": {"paused": False}}})
        wait_for(lambda: rollout(cluster, ns).get("phase") == "Progressing", 60, "rollout resumed")
        wait_for(lambda: "RolloutResumed" in reasons(cluster, ns), 30, "a RolloutResumed event")
        assert rollout(cluster, ns)["waveStartedAt"] == after["waveStartedAt"]
    finally:
        fleet.stop()


def messages(cluster, ns: str, reason: str) -> list[str]:
    return [e.message for e in cluster.events(ns, "field") if e.reason == reason]


def test_gates_pause_abort_and_rollback_as_kubectl_describe_shows_them(
    cluster, namespace, start_operator, fleet_broker
):
    """A wave waits for its devices (not the clock alone); pause stops every clock and resume continues;
    abort closes the candidate; rollback takes the fleet back to the stable release at once."""
    ns = namespace
    _broker, env, settings_for = fleet_broker
    release(cluster, ns, "fw-2", "2.0.0")
    devices = DEVICES[:8]
    fleet = FakeFleet(devices, settings_for, "1.0.0", plan_reader(cluster, ns))
    fleet.frozen = set(devices)  # nobody follows the plan yet
    try:
        start_operator(env)
        cluster.broker_deployment(ns)
        cluster.create(
            "SensorFleet",
            ns,
            "field",
            {
                "selector": {"matchLabels": {"fleet": "field"}},
                "rollout": {
                    "release": "fw-2",
                    "waves": [{"percent": 25, "bakeTime": "1s"}, {"percent": 100, "bakeTime": "1s"}],
                    "failureThreshold": {"count": 3},
                    "updateTimeout": "6s",
                },
            },
        )
        for device in devices:
            cluster.create("WeatherSensor", ns, device, {"deviceId": device, **SENSOR}, {"fleet": "field"})
        first = wait_for(
            lambda: (r := rollout(cluster, ns)).get("phase") == "Progressing" and r, 60, "started"
        )
        assert first["opened"] == 2 and first["eligible"] == 8 and first["stableVersion"] == "1.0.0"
        wait_for(lambda: "RolloutStarted" in reasons(cluster, ns), 30, "a RolloutStarted event")
        [started] = messages(cluster, ns, "RolloutStarted")
        assert (
            started
            == "release fw-2 (2.0.0): wave 1 open to 25% (2 of 8 devices); the others are offered 1.0.0"
        )
        plan = plan_reader(cluster, ns)()
        wave_1 = {d for d in devices if plan.version_for(d) == "2.0.0"}
        assert len(wave_1) == 2 and {plan.version_for(d) for d in set(devices) - wave_1} == {"1.0.0"}

        # Baked after 1 s, but nobody runs 2.0.0: the wave waits and says for what.
        waiting = wait_for(
            lambda: "0 of 2 devices needed run 2.0.0" in (r := rollout(cluster, ns)).get("reason", "") and r,
            30,
            "the success gate to hold the wave",
        )
        assert waiting["wave"] == 0 and waiting["pending"] == 2

        # Paused for longer than updateTimeout: no clock runs, so nobody times out.
        cluster.patch("SensorFleet", ns, "field", {"spec": {"rollout": {"paused": True}}})
        paused = wait_for(lambda: (r := rollout(cluster, ns)).get("phase") == "Paused" and r, 30, "paused")
        wait_for(lambda: "RolloutPaused" in reasons(cluster, ns), 30, "a RolloutPaused event")
        assert "clocks stopped" in messages(cluster, ns, "RolloutPaused")[0]
        time.sleep(8)
        assert rollout(cluster, ns)["failed"] == 0 and rollout(cluster, ns)["pausedAt"] == paused["pausedAt"]
        cluster.patch("SensorFleet", ns, "field", {"spec": {"rollout": {"paused": False}}})
        resumed = wait_for(
            lambda: (r := rollout(cluster, ns)).get("phase") == "Progressing" and r, 30, "resumed"
        )
        assert resumed["pausedSeconds"] >= 8 and resumed["failed"] == 0 and resumed["wave"] == 0
        wait_for(lambda: "RolloutResumed" in reasons(cluster, ns), 30, "a RolloutResumed event")

        # The wave's devices update: the gate opens the next wave.
        fleet.frozen -= wave_1
        advanced = wait_for(lambda: (r := rollout(cluster, ns)).get("wave") == 1 and r, 60, "wave 2 opened")
        assert advanced["opened"] == 8 and advanced["updated"] == 2
        wait_for(lambda: "RolloutAdvanced" in reasons(cluster, ns), 30, "a RolloutAdvanced event")

        # Abort: the candidate is closed at once; the two that took it keep it.
        cluster.patch("SensorFleet", ns, "field", {"spec": {"rollout": {"abort": True}}})
        aborted = wait_for(lambda: (r := rollout(cluster, ns)).get("phase") == "Aborted" and r, 30, "aborted")
        assert "spec.rollout.abort" in aborted["reason"]
        plan = wait_for(lambda: (p := plan_reader(cluster, ns)()) and p.hold and p, 30, "the plan on hold")
        assert all(plan.version_for(d) != "2.0.0" for d in devices)
        wait_for(lambda: "RolloutAborted" in reasons(cluster, ns), 30, "a RolloutAborted event")
        assert [e.type for e in cluster.events(ns, "field") if e.reason == "RolloutAborted"] == ["Warning"]

        # Rollback: every device is offered 1.0.0 at once, the two on 2.0.0 included.
        fleet.frozen.clear()
        cluster.patch("SensorFleet", ns, "field", {"spec": {"rollout": {"rollback": True}}})
        back = wait_for(
            lambda: (r := rollout(cluster, ns)).get("phase") == "RolledBack" and r, 30, "rolled back"
        )
        assert back["stableVersion"] == "1.0.0" and "rolled back to 1.0.0" in back["reason"]
        plan = wait_for(
            lambda: (p := plan_reader(cluster, ns)()) and p.candidate is None and p,
            30,
            "the plan rolled back",
        )
        assert {plan.version_for(d) for d in devices} == {"1.0.0"}
        wait_for(
            lambda: {d.firmware for d in fleet.devices.values()} == {"1.0.0"}, 60, "every device on 1.0.0"
        )
        wait_for(lambda: "RolloutRolledBack" in reasons(cluster, ns), 30, "a RolloutRolledBack event")
        healthy = cluster.condition(cluster.get("SensorFleet", ns, "field"), "RolloutHealthy")
        assert healthy["reason"] == "RolledBack"
    finally:
        fleet.stop()


def test_a_device_that_never_updates_times_out_and_halts_the_rollout(
    cluster, namespace, start_operator, fleet_broker
):
    ns = namespace
    _broker, env, settings_for = fleet_broker
    release(cluster, ns, "fw-2", "2.0.0")
    devices = DEVICES[:4]
    fleet = FakeFleet(devices, settings_for, "1.0.0", plan_reader(cluster, ns))
    fleet.frozen = {devices[0], devices[1], devices[2]}  # online, never take the update
    try:
        start_operator(env)
        cluster.broker_deployment(ns)
        cluster.create(
            "SensorFleet",
            ns,
            "field",
            {
                "selector": {"matchLabels": {"fleet": "field"}},
                "rollout": {
                    "release": "fw-2",
                    "waves": [{"percent": 100, "bakeTime": "1s"}],
                    "failureThreshold": {"count": 3},
                    "updateTimeout": "5s",
                },
            },
        )
        for device in devices:
            cluster.create("WeatherSensor", ns, device, {"deviceId": device, **SENSOR}, {"fleet": "field"})
        halted = wait_for(lambda: (r := rollout(cluster, ns)).get("phase") == "Halted" and r, 90, "halted")
        assert {f["deviceId"]: f["reason"] for f in halted["failedDevices"]} == dict.fromkeys(
            devices[:3], "timed out"
        )
        assert halted["updated"] == 1
        wait_for(lambda: "RolloutHalted" in reasons(cluster, ns), 30, "a RolloutHalted event")
        [event] = messages(cluster, ns, "RolloutHalted")
        assert event.startswith(
            "release fw-2 (2.0.0) halted, the candidate is closed: failure threshold reached"
        )
        assert f"{devices[0]} (timed out)" in event
        healthy = cluster.condition(cluster.get("SensorFleet", ns, "field"), "RolloutHealthy")
        assert (healthy["status"], healthy["reason"]) == ("False", "FailureThresholdReached")
    finally:
        fleet.stop()
