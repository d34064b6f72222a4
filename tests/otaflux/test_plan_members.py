"""OtaFlux reads the plan ConfigMap as the kubelet mounts it (binaryData: base64 in the API object, raw
bytes in the file): each fleet's JSON and its member file, decoded once per change. It decides what the
in-memory plan decides; a members file that is missing or another plan's keeps the last good plan."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

from otaflux.plan import PlanSource
from weatherfleet.local.kubelet import Volume, _files, write_atomically
from weatherfleet.reconcilers.plan import plan_key, rollout_plan_configmap
from weatherfleet.rollout import FleetPlan, RolloutPlan, open_share

RID = "weatherfleet/garden/firmware-1-1-0@1.1.0"


def mount(configmap: dict, directory: Path) -> None:
    """What the kubelet does with the ConfigMap (the local mode's kubelet code): keys become files."""
    files = _files(Volume("ConfigMap", "weatherfleet", "weatherfleet-rollout-plan", directory), configmap)
    write_atomically(directory, files, 0o644)


def fleets(count: int, percent: float, seed: int) -> dict[str, FleetPlan]:
    rng = random.Random(seed)
    garden = [f"esp32-{rng.getrandbits(48):012x}" for _ in range(count)]
    street = [f"street-{i:05d}" for i in range(count // 3)]
    return {
        plan_key("weatherfleet", "garden"): FleetPlan(
            rolloutId=RID,
            stable="1.0.0",
            candidate="1.1.0",
            threshold=open_share(RID, garden, percent),
            pins={garden[0]: "0.9.0"},
            exclusions=sorted(garden[1:4]),
            devices=sorted(garden),
        ),
        plan_key("weatherfleet", "street"): FleetPlan(rolloutId="s", stable="2.0.0", devices=street),
    }


def in_memory(plans: dict[str, FleetPlan]) -> RolloutPlan:
    return RolloutPlan(fleets={k.removesuffix(".json").replace(".", "/", 1): p for k, p in plans.items()})


def test_otaflux_decides_from_the_mounted_configmap_as_from_the_plan(tmp_path):
    directory = tmp_path / "rollout-plan"
    plans = fleets(5_000, 25, 1)
    mount(rollout_plan_configmap(plans, "weatherfleet"), directory)
    assert sorted(p.name for p in directory.iterdir() if not p.name.startswith("..")) == [
        "weatherfleet.garden.json",
        "weatherfleet.garden.members",
        "weatherfleet.street.json",
        "weatherfleet.street.members",
    ]
    source = PlanSource(directory, poll_interval=0)
    served, expected = source.current(), in_memory(plans)
    devices = [d for p in plans.values() for d in p.devices]
    outsiders = ["esp32-000000000000x", "street-99999", "", "garden"]
    for device in devices + outsiders:
        assert served.decide(device) == expected.decide(device), device
    assert {served.version_for(d) for d in outsiders} == {None}
    whys = {served.decide(d).why for d in devices}
    assert {"candidate", "stable", "pinned", "excluded"} <= whys

    # the next wave: the kubelet swaps the folder, OtaFlux reads the new pair
    wider = fleets(5_000, 50, 1)
    mount(rollout_plan_configmap(wider, "weatherfleet"), directory)
    assert source.reload()
    for device in devices:
        assert source.current().decide(device) == in_memory(wider).decide(device)


def test_a_members_file_of_another_plan_keeps_the_last_good_plan(tmp_path):
    """A plain folder written by hand (no kubelet swap): a JSON whose members file is stale or missing is
    refused, and what devices are offered does not change until the pair matches again."""
    kubelet, plain = tmp_path / "mounted", tmp_path / "plain"
    first, second = fleets(200, 25, 2), fleets(200, 100, 3)
    mount(rollout_plan_configmap(first, "weatherfleet"), kubelet)
    shutil.copytree(kubelet / "..data", plain)
    source = PlanSource(plain, poll_interval=0)
    good = source.current()
    member = first[plan_key("weatherfleet", "garden")].devices[10]
    assert good.decide(member) == in_memory(first).decide(member)

    mount(rollout_plan_configmap(second, "weatherfleet"), kubelet)
    shutil.copy(kubelet / "weatherfleet.garden.json", plain / "weatherfleet.garden.json")  # members stale
    source.reload()
    assert source.errors == 1
    assert source.current().fleets["weatherfleet/garden"] == good.fleets["weatherfleet/garden"]
    (plain / "weatherfleet.garden.members").unlink()
    source.reload()
    assert source.errors == 2
    assert source.current().fleets["weatherfleet/garden"] == good.fleets["weatherfleet/garden"]

    shutil.copy(kubelet / "weatherfleet.garden.members", plain / "weatherfleet.garden.members")
    assert source.reload()
    new_member = second[plan_key("weatherfleet", "garden")].devices[10]
    assert source.current().decide(new_member) == in_memory(second).decide(new_member)
    assert source.errors == 2


def test_through_the_api_stand_in_and_the_kubelet_sync_the_members_arrive_as_raw_bytes(tmp_path):
    """binaryData as Kubernetes handles it: base64 in the API object (the stand-in refuses anything else,
    and a ConfigMap over 1 MiB, as kube-apiserver does), raw bytes in the file the kubelet sync writes."""
    from kubernetes import client, config
    from kubernetes.client.rest import ApiException

    from weatherfleet.apiserver import ApiServer
    from weatherfleet.local.kubelet import VolumeSync

    server = ApiServer().start()
    try:
        api = config.new_client_from_config(str(server.write_kubeconfig(tmp_path / "kubeconfig")))
        core = client.CoreV1Api(api)
        plans = fleets(3_000, 25, 4)
        configmap = rollout_plan_configmap(plans, "default")
        core.create_namespaced_config_map("default", configmap)
        directory = tmp_path / "rollout-plan"
        sync = VolumeSync(api)
        sync.add(Volume("ConfigMap", "default", "weatherfleet-rollout-plan", directory))
        members = directory / "weatherfleet.garden.members"
        assert members.read_bytes()[:2] == b"\x1f\x8b"  # gzip itself, not its base64
        served = PlanSource(directory, poll_interval=0).current()
        for device in plans[plan_key("weatherfleet", "garden")].devices:
            assert served.decide(device) == in_memory(plans).decide(device)

        garbled = {**configmap, "metadata": {"name": "garbled"}, "binaryData": {"x.members": "not base64!"}}
        too_big = {**configmap, "metadata": {"name": "too-big"}, "binaryData": {"x.members": "A" * 1_400_000}}
        for body, status in ((garbled, 400), (too_big, 422)):
            try:
                core.create_namespaced_config_map("default", body)
                raise AssertionError(f"{body['metadata']['name']} was accepted")
            except ApiException as exc:
                assert exc.status == status, exc.body
    finally:
        server.stop()
