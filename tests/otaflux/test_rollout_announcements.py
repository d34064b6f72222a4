"""Announced waves: when the rollout plan opens a wave (or halts), OtaFlux notifies exactly the devices it
newly offers a version, over the real Mosquitto, spread over the fleet's announce window."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from weatherfleet import identities
from weatherfleet.rollout import FleetPlan, RolloutPlan, open_share, share_of
from weatherfleet.services.process import wait_until

DEVICES = [f"dev-{i:02d}" for i in range(1, 13)]
RID = "weatherfleet/garden/fw-1-1-0@1.1.0"
WINDOW = 3.0


def _write(path: Path, fleet: FleetPlan) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(RolloutPlan(fleets={"weatherfleet/garden": fleet}).to_json())
    os.replace(tmp, path)


def test_opening_a_wave_notifies_its_devices_spread_over_the_window(
    registry, prefix, push_image, mosquitto_factory, mqtt_settings, mqtt_subscriber, otaflux_factory, tmp_path
):
    broker = mosquitto_factory()  # of its own: no retained notifications from other tests
    for device in DEVICES:
        for tag in ("1.0.0", "1.1.0"):
            push_image(f"{prefix}{device}", tag, f"{device}@{tag}".encode())
    inboxes = {d: mqtt_subscriber(broker, f"ota/{d}/#", identity=d) for d in DEVICES}  # as each device
    settings = mqtt_settings(broker, identities.OTAFLUX)
    plan_path = tmp_path / "plan.json"
    closed = FleetPlan(
        rolloutId=RID, stable="1.0.0", candidate="1.1.0", devices=DEVICES, announceWindow=WINDOW
    )
    _write(plan_path, closed)
    otaflux_factory(
        {
            "REGISTRY_URL": registry.url,
            "REPOSITORY_PREFIX": prefix,
            "ROLLOUT_PLAN_PATH": str(plan_path),
            "MQTT_URL": f"mqtts://{settings.host}:{settings.port}",  # the services listener
            "MQTT_USERNAME": settings.username,
            "MQTT_PASSWORD": settings.password.get_secret_value(),
            "MQTT_CA_CERT_PATH": str(settings.ca),
            "MQTT_CLIENT_CERT_PATH": str(settings.cert),
            "MQTT_CLIENT_KEY_PATH": str(settings.key),
        }
    )
    time.sleep(1.5)  # the first plan is only the baseline: nobody is told anything about it
    assert all(not inbox.messages for inbox in inboxes.values())

    wave = closed.model_copy(update={"percent": 50, "threshold": open_share(RID, DEVICES, 50)})
    inside = share_of(RID, DEVICES, 50)
    assert len(inside) == 6
    opened = time.monotonic()
    _write(plan_path, wave)
    arrivals: dict[str, float] = {}

    def all_told() -> bool:
        for device in inside:
            if device not in arrivals and inboxes[device].messages:
                arrivals[device] = time.monotonic()
        return set(arrivals) == inside

    wait_until(all_told, 30, "the wave's devices to be notified")
    for device in inside:
        [message] = inboxes[device].messages
        assert json.loads(message.payload) == {"version": "1.1.0", "size": len(f"{device}@1.1.0")}
        assert message.qos == 1  # published retained: a device that connects later still learns of it
    spread = max(arrivals.values()) - min(arrivals.values())
    assert WINDOW * 0.5 <= spread <= WINDOW + 2, spread  # spread over the window, not all at once
    assert max(arrivals.values()) - opened < WINDOW + 5  # minutes would be too late; seconds it is
    time.sleep(1)
    assert all(not inboxes[d].messages for d in set(DEVICES) - inside)  # outside the wave: nothing

    # A halt sends the wave's devices back to 1.0.0, and tells them; the others' answer did not change.
    _write(plan_path, wave.model_copy(update={"halted": True, "announce_window": 0.5}))
    wait_until(lambda: all(len(inboxes[d].messages) == 2 for d in inside), 30, "the halt to be announced")
    assert {json.loads(inboxes[d].messages[-1].payload)["version"] for d in inside} == {"1.0.0"}
    time.sleep(1)
    assert all(not inboxes[d].messages for d in set(DEVICES) - inside)
