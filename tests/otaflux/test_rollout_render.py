"""`weatherfleet render` of the shipped examples, its plan mounted into OtaFlux the way kubelet mounts the
ConfigMap, with a registry that holds both releases: OtaFlux never answers the candidate outside the open
share (first rollout, paused, aborted, halted, no release), and the first wave holds exactly
ceil(p·N/100) devices for fleets of 3, 7, 20 and 40 and waves 5/25/100 and 20/50/100."""

from __future__ import annotations

import copy
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from weatherfleet.local.kubelet import Volume, _files, write_atomically
from weatherfleet.reconcilers.plan import plan_from_configmap

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "gitops" / "examples"
PLAN = "weatherfleet-rollout-plan"


def _docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((EXAMPLES / name).read_text()) if d]


def render(folder: Path) -> dict:
    """The rollout plan ConfigMap, from `weatherfleet render` as a user runs it."""
    out = subprocess.run(
        [sys.executable, "-m", "weatherfleet", "render", str(folder)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    plans = [
        d
        for d in yaml.safe_load_all(out.stdout)
        if d and d["kind"] == "ConfigMap" and d["metadata"]["name"] == PLAN
    ]
    assert len(plans) == 1, out.stderr
    return plans[0]


def mount(configmap: dict, directory: Path) -> Path:
    """The ConfigMap as kubelet mounts it (the local mode's kubelet code): timestamped directory, `..data`
    symlink, one link per key; `data` as text, `binaryData` (each fleet's members) decoded to bytes."""
    files = _files(Volume("ConfigMap", "weatherfleet", PLAN, directory), configmap)
    write_atomically(directory, files, 0o644)
    return directory


def write_crs(folder: Path, docs: list[dict]) -> Path:
    folder.mkdir(parents=True)
    (folder / "crs.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return folder


def versions(server, devices: list[str]) -> dict[str, str | None]:
    """What OtaFlux answers each device on /version: the version, or None for 404 (no update)."""
    answers = {}
    for device in devices:
        status, _, body = server.get(f"/version?device={device}")
        assert status in (200, 404), (device, status, body)
        answers[device] = body.decode().split("\n")[0] if status == 200 else None
        if status == 404:
            assert body.startswith(b"No update for device"), body
    return answers


@pytest.fixture
def otaflux_for(registry, prefix, push_image, otaflux_factory, tmp_path):
    """OtaFlux over a mounted plan, with 1.0.0 and 1.1.0 in every device's repository (so a fallback to
    the highest tag would be caught serving 1.1.0)."""
    pushed: set[str] = set()

    def start(configmap: dict, devices: list[str], name: str):
        for device in devices:
            if device not in pushed:
                for tag in ("1.0.0", "1.1.0"):
                    push_image(f"{prefix}{device}", tag, f"{device}@{tag}".encode())
                pushed.add(device)
        directory = mount(configmap, tmp_path / f"plan-{name}")
        return otaflux_factory(
            {"REGISTRY_URL": registry.url, "REPOSITORY_PREFIX": prefix, "ROLLOUT_PLAN_PATH": str(directory)}
        )

    return start


EXAMPLE_DEVICES = ["balcony-01", "greenhouse-01", "street-01"]


def test_the_shipped_examples_open_exactly_their_first_wave(otaflux_for):
    """gitops/examples as shipped: 3 sensors (street-01 pinned to 1.0.0), a first rollout of 1.1.0 in
    waves 5/25/100, no stable version known. One device gets 1.1.0; the pinned one its pin; the other one
    no update (the issue: 1.1.0 to all of them, from the highest tag)."""
    configmap = render(EXAMPLES)
    plan = plan_from_configmap(configmap, "weatherfleet.garden.json")
    assert plan.stable is None and plan.candidate == "1.1.0"
    server = otaflux_for(configmap, EXAMPLE_DEVICES, "shipped")
    answers = versions(server, EXAMPLE_DEVICES)
    assert answers["street-01"] == "1.0.0"
    assert sorted(answers[d] or "none" for d in ("balcony-01", "greenhouse-01")) == ["1.1.0", "none"]


@pytest.mark.parametrize(
    ("case", "change"),
    [
        ("paused", lambda fleet: fleet["spec"]["rollout"].update(paused=True)),
        ("aborted", lambda fleet: fleet["spec"]["rollout"].update(abort=True)),
        (
            "halted",
            lambda fleet: fleet.update(
                status={
                    "rollout": {
                        "release": "firmware-1-1-0",
                        "version": "1.1.0",
                        "phase": "Halted",
                        "percent": 5,
                        "threshold": "f" * 64,
                        "reason": "failure threshold reached in wave 1",
                    }
                }
            ),
        ),
        ("no release (0 %)", lambda fleet: fleet["spec"]["rollout"].update(release="firmware-9-9-9")),
    ],
)
def test_no_device_is_offered_the_candidate_while_the_rollout_is_closed(case, change, otaflux_for, tmp_path):
    docs = _docs("fleet.yaml") + _docs("releases.yaml") + _docs("sensors.yaml")
    fleet = next(d for d in docs if d["kind"] == "SensorFleet")
    change(fleet)
    configmap = render(write_crs(tmp_path / "crs", docs))
    plan = plan_from_configmap(configmap, "weatherfleet.garden.json")
    expected = {"paused": "hold", "aborted": "hold", "halted": "halted"}.get(case)
    assert (plan.hold, plan.halted, plan.candidate) == {
        "hold": (True, False, "1.1.0"),
        "halted": (False, True, "1.1.0"),
        None: (False, False, None),
    }[expected]
    assert all(plan.version_for(d) != "1.1.0" for d in EXAMPLE_DEVICES)
    server = otaflux_for(configmap, EXAMPLE_DEVICES, case.split()[0])
    answers = versions(server, EXAMPLE_DEVICES)
    assert answers["street-01"] == "1.0.0"  # the pin holds whatever the rollout does
    assert answers["balcony-01"] is None and answers["greenhouse-01"] is None  # no update: keep what runs


SIZES = [3, 7, 20, 40]
WAVES = {"5-25-100": [5, 25, 100], "20-50-100": [20, 50, 100]}


def _fleets_of_every_size() -> tuple[list[dict], dict[str, list[str]], dict[str, int]]:
    """One namespace per (size, waves): the example's fleet, releases and sensors, renamed and resized."""
    fleet_t = _docs("fleet.yaml")[0]
    releases_t = _docs("releases.yaml")
    sensor_t = next(d for d in _docs("sensors.yaml") if d["spec"]["deviceId"] == "balcony-01")
    docs, members, first = [], {}, {}
    for size in SIZES:
        for name, percents in WAVES.items():
            ns = f"n{size}-w{name}"
            fleet = copy.deepcopy(fleet_t)
            fleet["metadata"]["namespace"] = ns
            fleet["spec"]["rollout"]["waves"] = [{"percent": p, "bakeTime": "30m"} for p in percents]
            docs.append(fleet)
            for release in releases_t:
                release = copy.deepcopy(release)
                release["metadata"]["namespace"] = ns
                docs.append(release)
            members[ns] = []
            for i in range(size):
                sensor = copy.deepcopy(sensor_t)
                device = f"{ns}-d{i:02d}"
                sensor["metadata"].update(name=device, namespace=ns)
                sensor["spec"]["deviceId"] = device
                docs.append(sensor)
                members[ns].append(device)
            first[ns] = max(1, math.ceil(percents[0] * size / 100))
    return docs, members, first


def test_the_first_wave_is_exactly_ceil_p_n_over_100_for_small_fleets(otaflux_for, tmp_path):
    docs, members, first = _fleets_of_every_size()
    configmap = render(write_crs(tmp_path / "crs", docs))
    assert len(configmap["data"]) == len(configmap["binaryData"]) == len(members)
    everyone = [d for devices in members.values() for d in devices]
    server = otaflux_for(configmap, everyone, "sizes")
    answers = versions(server, everyone)
    got = {ns: sum(answers[d] == "1.1.0" for d in devices) for ns, devices in members.items()}
    assert got == first  # 3: 1 and 1; 7: 1 and 2; 20: 1 and 4; 40: 2 and 8
    assert {answers[d] for d in everyone} == {"1.1.0", None}  # outside the wave: no update, never 1.1.0
