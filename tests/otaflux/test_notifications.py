"""Webhooks (the real registry's notifications, Harbor's payload), MQTT notifications over mutual TLS to
the real Mosquitto, digest-checked re-pushes, and serving on while the registry is away."""

from __future__ import annotations

import json
import os
import zlib

import pytest

from weatherfleet import identities
from weatherfleet.services.process import free_port, wait_until
from weatherfleet.services.registry import DistributionRegistry

SECRET = "hook-secret-for-tests"


def _mqtt_env(mosquitto, mqtt_settings) -> dict[str, str]:
    settings = mqtt_settings(mosquitto, identities.OTAFLUX)  # the services listener, with its login
    return {
        "MQTT_URL": f"mqtts://{settings.host}:{settings.port}",
        "MQTT_USERNAME": settings.username,
        "MQTT_PASSWORD": settings.password.get_secret_value(),
        "MQTT_CA_CERT_PATH": str(settings.ca),
        "MQTT_CLIENT_CERT_PATH": str(settings.cert),
        "MQTT_CLIENT_KEY_PATH": str(settings.key),
    }


def _payloads(collector, topic: str) -> list[dict]:
    return [json.loads(m.payload) for m in collector.messages if m.topic == topic]


@pytest.fixture
def notifying_registry(tmp_path_factory) -> tuple[DistributionRegistry, int]:
    """A registry of its own whose push events go to an OtaFlux port chosen in advance."""
    otaflux_port = free_port()
    registry = DistributionRegistry(
        directory=tmp_path_factory.mktemp("notifying-registry"),
        port=free_port(),
        notify_urls=[f"http://127.0.0.1:{otaflux_port}/webhooks/registry"],
        notify_headers={"Authorization": f"Bearer {SECRET}"},
    ).start()
    yield registry, otaflux_port
    registry.stop()


def test_repush_of_a_tag_is_picked_up_by_digest_and_announced(
    notifying_registry, prefix, mosquitto, mqtt_settings, mqtt_subscriber, otaflux_factory, tmp_path
) -> None:
    from weatherfleet import oci

    registry, port = notifying_registry
    store = oci.connect(registry.url)
    device = "dev-14"
    inbox = mqtt_subscriber(mosquitto, f"ota/{device}/#", identity=device)  # as the device itself (ACL)
    server = otaflux_factory(
        {
            "REGISTRY_URL": registry.url,
            "REPOSITORY_PREFIX": prefix,
            "WEBHOOK_SECRET": SECRET,
            "REFRESH_INTERVAL": "3600",  # only the webhook can make it look again
            **_mqtt_env(mosquitto, mqtt_settings),
        },
        port=port,
    )
    first = os.urandom(10_000)
    (tmp_path / "a.bin").write_bytes(first)
    store.push_image(f"{prefix}{device}", "1.0.0", tmp_path / "a.bin", version="1.0.0")
    topic = f"ota/{device}"
    inbox.wait_for(lambda _m: {"version": "1.0.0", "size": 10_000} in _payloads(inbox, topic), 30)
    assert server.get(f"/version?device={device}")[2] == f"1.0.0\n{zlib.crc32(first)}\n10000".encode()

    second = os.urandom(12_345)
    (tmp_path / "b.bin").write_bytes(second)
    store.push_image(f"{prefix}{device}", "1.0.0", tmp_path / "b.bin", version="1.0.0")
    inbox.wait_for(lambda _m: {"version": "1.0.0", "size": 12_345} in _payloads(inbox, topic), 30)
    assert server.get(f"/version?device={device}")[2] == f"1.0.0\n{zlib.crc32(second)}\n12345".encode()
    assert server.get(f"/firmware?device={device}")[2] == second
    message = next(m for m in inbox.messages if json.loads(m.payload)["size"] == 12_345)
    assert message.qos == 1
    assert server.metric("otaflux_notifications_total") >= 2


def test_retained_notification_reaches_a_device_that_connects_later(
    registry, store, prefix, push_image, mosquitto, mqtt_settings, mqtt_subscriber, otaflux_factory
) -> None:
    device = "dev-15"
    server = otaflux_factory(
        {
            "REGISTRY_URL": registry.url,
            "REPOSITORY_PREFIX": prefix,
            "WEBHOOK_SECRET": SECRET,
            **_mqtt_env(mosquitto, mqtt_settings),
        }
    )
    push_image(f"{prefix}{device}", "4.2.0", b"z" * 4200)
    harbor = {
        "type": "PUSH_ARTIFACT",
        "occur_at": 1700000000,
        "operator": "ci",
        "event_data": {
            "resources": [{"digest": "sha256:" + "a" * 64, "tag": "4.2.0", "resource_url": "x"}],
            "repository": {
                "date_created": 1,
                "name": device,
                "namespace": prefix.strip("/"),
                "repo_full_name": f"{prefix}{device}",
                "repo_type": "private",
            },
        },
    }
    assert server.post("/webhooks/harbor", json.dumps(harbor).encode())[0] == 401
    assert (
        server.post("/webhooks/harbor", json.dumps(harbor).encode(), {"Authorization": "Bearer nope"})[0]
        == 401
    )
    status, body = server.post("/webhooks/harbor", b"{not json", {"Authorization": SECRET})
    assert status == 400 and b"Malformed" in body
    assert server.post("/webhooks/harbor", b'{"type": "PUSH_ARTIFACT"}', {"Authorization": SECRET})[0] == 400
    status, body = server.post("/webhooks/harbor", b'{"type": "DELETE_ARTIFACT"}', {"Authorization": SECRET})
    assert status == 200 and b"ignored" in body
    assert server.post("/webhooks/registry", b'{"events": "nope"}', {"Authorization": SECRET})[0] == 400
    assert server.post("/webhooks/registry", b"{}", {})[0] == 401
    assert server.post("/webhooks/harbor", json.dumps(harbor).encode(), {"Authorization": SECRET})[0] == 200

    # Published before this subscriber exists: retained, so the broker hands it over on subscribe.
    wait_until(lambda: server.metric("otaflux_notifications_total") >= 1, 30, "the notification to be sent")
    inbox = mqtt_subscriber(mosquitto, f"ota/{device}/#", identity=device)
    inbox.wait_for(lambda _m: {"version": "4.2.0", "size": 4200} in _payloads(inbox, f"ota/{device}"), 30)
    assert any(m.retain for m in inbox.messages)


def test_refresh_interval_notices_a_repush_without_any_webhook(
    registry, prefix, push_image, otaflux_factory
) -> None:
    push_image(f"{prefix}dev-16", "1.0.0", b"a" * 100)
    server = otaflux_factory(
        {"REGISTRY_URL": registry.url, "REPOSITORY_PREFIX": prefix, "REFRESH_INTERVAL": "0.5"}
    )
    assert server.get("/version?device=dev-16")[2].endswith(b"\n100")
    push_image(f"{prefix}dev-16", "1.0.0", b"b" * 200)
    wait_until(
        lambda: server.get("/version?device=dev-16")[2].endswith(b"\n200"), 20, "the re-push to be seen"
    )
    assert server.get("/firmware?device=dev-16")[2] == b"b" * 200


def test_registry_outage_keeps_serving_the_cache_and_reports_degraded(
    counting_proxy, prefix, push_image, otaflux_factory
) -> None:
    firmware = os.urandom(50_000)
    push_image(f"{prefix}dev-17", "1.0.0", firmware)
    server = otaflux_factory(
        {"REGISTRY_URL": counting_proxy.url, "REPOSITORY_PREFIX": prefix, "REFRESH_INTERVAL": "0.2"}
    )
    assert server.get("/firmware?device=dev-17")[2] == firmware
    counting_proxy.down = True
    wait_until(lambda: server.get("/health")[2].startswith(b"degraded"), 20, "/health to say degraded")
    assert server.get("/health")[0] == 200
    for _ in range(3):
        assert server.get("/firmware?device=dev-17")[2] == firmware
        assert server.get("/version?device=dev-17")[0] == 200
    status, _, body = server.get("/version?device=dev-18")
    assert status == 503 and b"unreachable" in body
    assert server.metric("otaflux_registry_errors_total") >= 1
    counting_proxy.down = False
    wait_until(
        lambda: server.get("/version?device=dev-17")[0] == 200 and server.get("/health")[2] == b"ok",
        20,
        "recovery",
    )
