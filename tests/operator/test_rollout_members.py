"""The plan's member list, exact and compact (issue 18): the blob round-trips every list (N from 1 to
100,000, odd ids), a packed plan decides exactly as the plan it came from, a blob that is not the plan's is
refused, and the plan ConfigMap of 100,000 devices stays well under the 1 MiB object limit."""

from __future__ import annotations

import base64
import gzip
import json
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from weatherfleet.reconcilers.plan import (
    plan_entries,
    plan_from_configmap,
    plan_key,
    rollout_plan_configmap,
)
from weatherfleet.rollout import FleetPlan, open_share
from weatherfleet.rollout.members import decode_lists, encode_lists, members_name

LIMIT = 1 << 20
RID = "weatherfleet/garden/firmware-1-1-0@1.1.0"


def ids_of(shape: str, count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    if shape == "sequential":
        return [f"sensor-{i:06d}" for i in range(count)]
    if shape == "mac":
        return [f"esp32-{rng.getrandbits(48):012x}" for _ in range(count)]
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789-"
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 63))) for _ in range(count)]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    count=st.one_of(st.integers(1, 50), st.integers(1, 100_000), st.just(100_000)),
    shape=st.sampled_from(["sequential", "mac", "labels"]),
    seed=st.integers(0, 2**32),
)
def test_member_lists_round_trip_exactly_for_fleets_of_1_to_100000(count, shape, seed):
    members = ids_of(shape, count, seed)
    excluded = random.Random(seed).sample(members, min(len(members), 7))
    assert decode_lists(encode_lists([members, excluded])) == [sorted(set(members)), sorted(set(excluded))]


odd_ids = st.lists(
    st.one_of(
        st.text(max_size=80),  # any Unicode but lone surrogates (an id is UTF-8 in the API)
        st.sampled_from(["", "a", "ab", "a-b", "a" * 63, "a" * 300, "é", "e\u0301", "\x00", "😀", "a\nb"]),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(first=odd_ids, second=odd_ids)
def test_odd_ids_round_trip(first, second):
    """Prefixes of one another, repeats, empty ids, combining marks, NUL, multi-byte characters whose
    shared prefix ends inside a character: each list comes back sorted, without repeats, nothing else."""
    assert decode_lists(encode_lists([first, second])) == [sorted(set(first)), sorted(set(second))]


def test_the_blob_is_the_same_for_the_same_members_in_any_order():
    members = ids_of("mac", 500, 3)
    shuffled = members[::-1]
    assert encode_lists([members, []]) == encode_lists([shuffled, []])  # render output is reproducible


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"not gzip at all",
        gzip.compress(b"weatherfleet-members/2\n", mtime=0),  # a format this reader does not know
        gzip.compress(b"weatherfleet-members/1\n\x05\x00\x03abc", mtime=0),  # says 5 ids, holds 1
        gzip.compress(b"weatherfleet-members/1\n\x02\x00\x01a\x05\x01b", mtime=0),  # shares 5 of 1 byte
        gzip.compress(b"weatherfleet-members/1\n\x01\x00\x02\xff\xfe", mtime=0),  # not UTF-8
        encode_lists([["a", "b"]])[:-6],  # truncated
    ],
)
def test_a_blob_that_is_not_a_member_list_is_refused(blob):
    with pytest.raises(ValueError):
        decode_lists(blob)


def plans(draw_members: list[str], rng: random.Random) -> list[FleetPlan]:
    """The plans a rollout goes through for these members: open, paused, halted, rolled back, first."""
    pins = {d: "0.9.0" for d in rng.sample(draw_members, min(2, len(draw_members)))}
    excluded = sorted(rng.sample(draw_members, min(3, len(draw_members))))  # as fleet_plan sorts them
    threshold = open_share(RID, draw_members, rng.choice([5, 25, 50, 100]))
    common = {"rolloutId": RID, "pins": pins, "exclusions": excluded, "devices": draw_members}
    return [
        FleetPlan(stable="1.0.0", candidate="1.1.0", threshold=threshold, **common),
        FleetPlan(stable="1.0.0", candidate="1.1.0", threshold=threshold, hold=True, **common),
        FleetPlan(stable="1.0.0", candidate="1.1.0", threshold=threshold, halted=True, **common),
        FleetPlan(stable=None, candidate="1.1.0", threshold=threshold, **common),
        FleetPlan(stable="1.0.0", **common),
    ]


@settings(max_examples=40, deadline=None)
@given(count=st.integers(1, 300), seed=st.integers(0, 2**32))
def test_a_packed_plan_decides_exactly_as_the_plan_it_came_from(count, seed):
    rng = random.Random(seed)
    members = sorted(set(ids_of("labels", count, seed)))
    outsiders = [f"{m}x" for m in members[:20]] + ["", "not-a-member", members[0].upper() + "-"]
    outsiders = [d for d in outsiders if d not in members]
    for plan in plans(members, rng):
        packed, blob = plan.packed()
        assert packed.devices == [] and packed.exclusions == []
        assert all(packed.decide(d).why in ("pinned", "not-a-member") for d in members + outsiders)
        back = packed.unpacked(blob)
        assert back == plan
        for device in members + outsiders:
            assert back.decide(device) == plan.decide(device), device
        for device in outsiders:
            assert back.version_for(device) is None  # in no fleet: no update


def test_a_plan_never_pairs_with_another_plans_members():
    members = ids_of("mac", 100, 1)
    first, blob = FleetPlan(rolloutId=RID, stable="1.0.0", devices=members).packed()
    _, other = FleetPlan(rolloutId=RID, stable="1.0.0", devices=[*members, "esp32-intruder"]).packed()
    with pytest.raises(ValueError, match="sha256"):
        first.unpacked(other)
    with pytest.raises(ValueError, match="missing"):
        first.unpacked(None)
    assert first.unpacked(blob).is_member(members[0])


def test_the_configmap_holds_the_json_in_data_and_the_members_in_binary_data():
    plan = FleetPlan(rolloutId=RID, stable="1.0.0", candidate="1.1.0", devices=["b", "a"], exclusions=["b"])
    key = plan_key("weatherfleet", "garden")
    cm = rollout_plan_configmap({key: plan}, "weatherfleet")
    assert list(cm["data"]) == [key] and list(cm["binaryData"]) == [members_name(key)]
    described = json.loads(cm["data"][key])
    assert "devices" not in described or described["devices"] == []
    assert described["members"]["count"] == 2 and described["members"]["excluded"] == 1
    blob = base64.b64decode(cm["binaryData"][members_name(key)], validate=True)
    assert decode_lists(blob) == [["a", "b"], ["b"]]
    assert plan_from_configmap(cm, key) == FleetPlan.model_validate(
        plan.model_dump() | {"devices": ["a", "b"]}
    )
    assert plan_from_configmap(cm, plan_key("weatherfleet", "other")) is None
    torn = {"data": cm["data"], "binaryData": {}}
    with pytest.raises(ValueError):
        plan_from_configmap(torn, key)


def configmap_bytes(count: int, shape: str) -> tuple[int, int]:
    """(the object as JSON, as the API serves and the stand-in stores it; the bytes Kubernetes' 1 MiB
    validation counts: data values plus decoded binaryData)."""
    members = ids_of(shape, count, 1)
    plan = FleetPlan(
        rolloutId=RID,
        stable="1.0.0",
        candidate="1.1.0",
        percent=25.0,
        threshold=open_share(RID, members, 25),
        devices=members,
    )
    key = plan_key("weatherfleet", "garden")
    data, binary = plan_entries(key, plan)
    cm = rollout_plan_configmap({key: plan}, "weatherfleet")
    counted = sum(len(v.encode()) for v in data.values()) + sum(
        len(base64.b64decode(v)) for v in binary.values()
    )
    return len(json.dumps(cm, separators=(",", ":")).encode()), counted


@pytest.mark.parametrize(("shape", "share"), [("sequential", 0.01), ("mac", 0.75)])
def test_the_plan_of_100000_devices_fits_a_configmap(shape, share):
    """Sequential ids cost next to nothing; random 48-bit ids (MAC-derived) are bounded by their
    entropy, still well under the limit (the old JSON list: 2 MiB)."""
    stored, counted = configmap_bytes(100_000, shape)
    assert counted <= stored < share * LIMIT
