"""The API double behaves like kube-apiserver where kopf and our operator depend on it."""

from __future__ import annotations

import json

import pytest
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

pytestmark = pytest.mark.usefixtures("kube")

NS = "weatherfleet"
GROUP, VERSION = "weatherfleet.io", "v1alpha1"


def sensor(name: str, device: str | None = None, **spec) -> dict:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "WeatherSensor",
        "metadata": {"name": name, "labels": {"fleet": "test"}},
        "spec": {"deviceId": device or name, "location": "roof", "sensors": [{"type": "bme280"}], **spec},
    }


@pytest.fixture
def api(kube) -> client.ApiClient:
    if kube is None:
        pytest.skip("double-only behaviour")
    config.load_kube_config()
    return client.ApiClient()


@pytest.fixture
def crs(api) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


def test_discovery_lists_our_kinds_with_status_subresources(api):
    resources = client.CustomObjectsApi(api).get_api_resources(GROUP, VERSION).resources
    names = {r.name for r in resources}
    assert {"weathersensors", "weathersensors/status", "sensorfleets/status", "firmwarereleases"} <= names
    ws = next(r for r in resources if r.name == "weathersensors")
    assert ws.short_names == ["ws"] and ws.namespaced


def test_create_fills_metadata_defaults_and_prunes_unknown_fields(kube, crs):
    body = sensor("meta-1")
    body["spec"]["notInSchema"] = 1
    body["metadata"]["name"] = None
    body["metadata"]["generateName"] = "meta-"
    created = crs.create_namespaced_custom_object(GROUP, VERSION, NS, "weathersensors", body)
    meta = created["metadata"]
    assert meta["name"].startswith("meta-") and len(meta["name"]) == len("meta-") + 5
    assert meta["uid"] and meta["generation"] == 1 and meta["creationTimestamp"].endswith("Z")
    assert "notInSchema" not in created["spec"]
    assert created["spec"]["board"] == "esp32-devkit-v1"  # schema default applied by the server
    assert any("spec.notInSchema" in p for p in kube.store.pruned)


def test_invalid_resource_is_rejected_with_the_field(crs):
    with pytest.raises(ApiException) as err:
        crs.create_namespaced_custom_object(GROUP, VERSION, NS, "weathersensors", sensor("bad-1", "Bad_ID"))
    assert err.value.status == 422
    causes = json.loads(err.value.body)["details"]["causes"]
    assert causes[0]["field"] == "spec.deviceId"


def test_immutable_device_id(crs):
    crs.create_namespaced_custom_object(GROUP, VERSION, NS, "weathersensors", sensor("immut-1"))
    with pytest.raises(ApiException) as err:
        crs.patch_namespaced_custom_object(
            GROUP, VERSION, NS, "weathersensors", "immut-1", {"spec": {"deviceId": "other"}}
        )
    assert err.value.status == 422 and "immutable" in err.value.body


def test_status_split_between_main_and_status_endpoints(crs):
    crs.create_namespaced_custom_object(GROUP, VERSION, NS, "weathersensors", sensor("split-1"))
    patched = crs.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        NS,
        "weathersensors",
        "split-1",
        {"spec": {"location": "cellar"}, "status": {"online": True}},
    )
    assert patched["spec"]["location"] == "cellar" and "online" not in patched.get("status", {})
    assert patched["metadata"]["generation"] == 2
    status = crs.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        NS,
        "weathersensors",
        "split-1",
        {"spec": {"location": "x"}, "status": {"online": True}},
    )
    assert status["status"]["online"] is True and status["spec"]["location"] == "cellar"
    assert status["metadata"]["generation"] == 2  # status writes do not bump the generation


def test_json_patch_test_failure_is_422(crs):
    obj = crs.create_namespaced_custom_object(GROUP, VERSION, NS, "weathersensors", sensor("jp-1"))
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "0"},
        {"op": "replace", "path": "/spec/location", "value": "garden"},
    ]
    with pytest.raises(ApiException) as err:
        crs.patch_namespaced_custom_object(
            GROUP, VERSION, NS, "weathersensors", "jp-1", ops, _content_type="application/json-patch+json"
        )
    assert err.value.status == 422
    ops[0]["value"] = obj["metadata"]["resourceVersion"]
    done = crs.patch_namespaced_custom_object(
        GROUP, VERSION, NS, "weathersensors", "jp-1", ops, _content_type="application/json-patch+json"
    )
    assert done["spec"]["location"] == "garden"


def test_server_side_apply_owns_and_removes_fields(api):
    core = client.CoreV1Api(api)

    def apply(data: dict, manager: str = "weatherfleet", force: bool = True):
        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa-1"}, "data": data}
        return core.patch_namespaced_config_map(
            "ssa-1",
            NS,
            body,
            field_manager=manager,
            force=force,
            _content_type="application/apply-patch+yaml",
        )

    apply({"a": "1", "b": "2"})
    core.patch_namespaced_config_map("ssa-1", NS, {"data": {"mine": "x"}})
    apply({"a": "1"})
    cm = core.read_namespaced_config_map("ssa-1", NS)
    assert cm.data == {"a": "1", "mine": "x"}  # b dropped: we stopped applying it; 'mine' is not ours
    with pytest.raises(ApiException) as err:
        apply({"a": "2"}, manager="someone-else", force=False)
    assert err.value.status == 409


def test_finalizers_and_owner_garbage_collection(crs, api):
    core = client.CoreV1Api(api)
    owner = crs.create_namespaced_custom_object(GROUP, VERSION, NS, "weathersensors", sensor("gc-1"))
    ref = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "WeatherSensor",
        "name": "gc-1",
        "uid": owner["metadata"]["uid"],
        "controller": True,
    }
    core.create_namespaced_config_map(NS, {"metadata": {"name": "gc-1-child", "ownerReferences": [ref]}})
    crs.patch_namespaced_custom_object(
        GROUP, VERSION, NS, "weathersensors", "gc-1", {"metadata": {"finalizers": ["test/hold"]}}
    )
    crs.delete_namespaced_custom_object(GROUP, VERSION, NS, "weathersensors", "gc-1")
    held = crs.get_namespaced_custom_object(GROUP, VERSION, NS, "weathersensors", "gc-1")
    assert held["metadata"]["deletionTimestamp"]
    assert core.read_namespaced_config_map("gc-1-child", NS)
    crs.patch_namespaced_custom_object(
        GROUP, VERSION, NS, "weathersensors", "gc-1", {"metadata": {"finalizers": None}}
    )
    with pytest.raises(ApiException) as err:
        crs.get_namespaced_custom_object(GROUP, VERSION, NS, "weathersensors", "gc-1")
    assert err.value.status == 404
    with pytest.raises(ApiException):
        core.read_namespaced_config_map("gc-1-child", NS)


def test_watch_from_resource_version_then_410_after_compaction(kube, api):
    core = client.CoreV1Api(api)
    rv = core.list_namespaced_config_map(NS).metadata.resource_version
    core.create_namespaced_config_map(NS, {"metadata": {"name": "watch-1"}, "data": {"k": "v"}})
    w = watch.Watch()
    events = []
    for event in w.stream(core.list_namespaced_config_map, NS, resource_version=rv, timeout_seconds=2):
        events.append((event["type"], event["object"].metadata.name))
        if event["object"].metadata.name == "watch-1":
            w.stop()
    assert ("ADDED", "watch-1") in events
    kube.call(lambda store: store.compact())
    with pytest.raises(ApiException) as err:
        for _ in watch.Watch().stream(
            core.list_namespaced_config_map, NS, resource_version=rv, timeout_seconds=2
        ):
            pass
    assert err.value.status == 410


def test_bookmarks_are_sent_when_asked(kube, api):
    kube.bookmark_seconds = 0.2
    try:
        import urllib.request

        query = f"watch=true&allowWatchBookmarks=true&timeoutSeconds=1&resourceVersion={kube.store.rv}"
        request = urllib.request.Request(
            f"{kube.url}/api/v1/namespaces/{NS}/configmaps?{query}",
            headers={"Authorization": f"Bearer {kube.token}"},
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            lines = [json.loads(line) for line in resp.read().decode().splitlines() if line]
    finally:
        kube.bookmark_seconds = 5.0
    assert lines and all(e["type"] == "BOOKMARK" for e in lines)


def test_requires_a_token(kube):
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{kube.url}/api/v1/namespaces")
    assert err.value.code == 401
