"""The rollout plan: the contract between the operator (writer) and OtaFlux (reader).

One `FleetPlan` per fleet says what each of its devices is offered. It is safe by construction:

- the candidate is offered only inside the open share (rank at most `threshold`, see `ranks`), never to a
  device that is pinned, excluded or not a member, and never while the plan is `halted` or on `hold`;
- a device that is offered nothing gets "no update": OtaFlux answers 404 and the device keeps the version
  it runs. That is the answer outside the share while no stable version is known (the fleet's first
  rollout: a device that was never told a stable version is not handed anything), to every device inside
  the share while the rollout is paused or aborted (`hold`: who took the candidate keeps it, who did not
  does not get it), and to every device of a plan OtaFlux cannot read or that no fleet lists;
- `halted` closes the candidate: every device is offered the stable version (or nothing without one).

The member list (and the exclusions) grow with the fleet: in the plan ConfigMap they travel `packed`, as a
compact exact blob beside the JSON (`members`), which `unpacked` checks against the JSON's digest.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from .authorisation import Authorisation
from .members import ENCODING, decode_lists, digest, encode_lists
from .ranks import in_share

Why = Literal["pinned", "not-a-member", "excluded", "candidate", "stable", "hold", "no-stable", "halted"]


class PlanModel(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Decision(NamedTuple):
    """What one device is offered and why; `version` None means "no update" (keep what it runs)."""

    version: str | None
    why: Why


class MemberDigest(PlanModel):
    """A packed plan's member lists, stored beside its JSON (members.members_name), and how to check them."""

    encoding: Literal["front-coded+gzip/1"] = ENCODING
    count: int = Field(description="members in the blob")
    excluded: int = Field(description="exclusions in the blob")
    sha256: str = Field(description="of the blob: one that does not match belongs to another plan")


class FleetPlan(PlanModel):
    """What one fleet's devices are offered. Versions are tags in each device's own repository."""

    rollout_id: str = Field(default="", alias="rolloutId", description="orders the fleet (ranks.rank)")
    stable: str | None = Field(
        default=None,
        description="offered outside the candidate's share; None: nothing (each device keeps its version)",
    )
    candidate: str | None = Field(default=None, description="the release being rolled out")
    percent: float = Field(
        default=0.0, description="the open wave's percentage (for people; `threshold` decides)"
    )
    threshold: str | None = Field(
        default=None,
        description="rank of the last device inside the open share; None: the share is empty",
    )
    halted: bool = Field(default=False, description="the candidate is closed: everyone is offered `stable`")
    hold: bool = Field(
        default=False, description="paused or aborted: devices inside the share are offered nothing new"
    )
    pins: dict[str, str] = Field(default_factory=dict, description="deviceId -> pinned version")
    exclusions: list[str] = Field(
        default_factory=list, description="never offered the candidate (OTA off, another channel)"
    )
    devices: list[str] = Field(
        default_factory=list,
        description="the fleet's members: which fleet a device belongs to cannot be told from its id "
        "(selectors match labels OtaFlux never sees), and a device that is in no fleet gets no update",
    )
    members: MemberDigest | None = Field(
        default=None,
        description="packed: `devices` and `exclusions` are in the member blob this describes; a plan not "
        "unpacked yet has no members, so it offers no device anything",
    )
    authorisation: Authorisation | None = Field(
        default=None,
        description="halted or rolled back: the operator's signed permission for devices on the candidate "
        "to go back to `stable` (rollout.authorisation); OtaFlux passes it on with that version",
    )
    announce_window: float = Field(
        default=0.0,
        alias="announceWindow",
        description="seconds over which OtaFlux spreads the notifications of one change of this plan",
    )
    announce: bool = Field(default=True, description="notify devices newly offered a version over MQTT")
    # sets for the per-request decision, made on first use and again when the lists are replaced
    _index: tuple | None = PrivateAttr(default=None)

    def __eq__(self, other: object) -> bool:
        # by content: the index is a cache, not part of the plan
        return isinstance(other, FleetPlan) and self.__dict__ == other.__dict__

    __hash__ = None  # type: ignore[assignment]

    def _sets(self) -> tuple[frozenset[str], frozenset[str]]:
        index = self.__pydantic_private__.get("_index")
        if index is None or index[0] is not self.devices or index[1] is not self.exclusions:
            index = (self.devices, self.exclusions, frozenset(self.devices), frozenset(self.exclusions))
            self.__pydantic_private__["_index"] = index
        return index[2], index[3]

    def is_member(self, device_id: str) -> bool:
        return device_id in self._sets()[0]

    def in_share(self, device_id: str) -> bool:
        """Inside the candidate's open share (whatever the plan then offers it)."""
        return self.candidate is not None and in_share(self.rollout_id, device_id, self.threshold)

    def decide(self, device_id: str) -> Decision:
        """What the device is offered, and why. Pins win; then non-members and exclusions; then the
        share (candidate, or nothing while on hold, or stable when halted); then stable."""
        if device_id in self.pins:
            return Decision(self.pins[device_id], "pinned")
        members, exclusions = self._sets()
        if device_id not in members:
            return Decision(None, "not-a-member")
        excluded = device_id in exclusions
        if not excluded and self.in_share(device_id):
            if self.halted:
                return Decision(self.stable, "halted")
            if self.hold:
                return Decision(None, "hold")
            return Decision(self.candidate, "candidate")
        if excluded:
            return Decision(self.stable, "excluded")
        return Decision(self.stable, "stable" if self.stable else "no-stable")

    def version_for(self, device_id: str) -> str | None:
        """The version this device is offered; None: no update (it keeps the version it runs)."""
        return self.decide(device_id).version

    def authorisation_for(self, device_id: str, offered: str) -> Authorisation | None:
        """The downgrade authorisation to hand the device with `offered`, when the plan has one for it."""
        auth = self.authorisation
        if auth is None or auth.to != offered or self.decide(device_id).version != offered:
            return None
        return auth

    def desired_for(self, device_id: str, running: str | None) -> str | None:
        """The version the device should run: the one offered, else (no update) the one it runs."""
        offered = self.version_for(device_id)
        return offered if offered is not None else running

    def packed(self) -> tuple[FleetPlan, bytes]:
        """(this plan without its device lists but with their digest, the member blob): what the plan
        ConfigMap stores, the JSON as text and the blob as binary data."""
        blob = encode_lists([self.devices, self.exclusions])
        described = MemberDigest(
            count=len(set(self.devices)), excluded=len(set(self.exclusions)), sha256=digest(blob)
        )
        return self.model_copy(update={"devices": [], "exclusions": [], "members": described}), blob

    def unpacked(self, blob: bytes | None) -> FleetPlan:
        """The plan with its device lists back from `blob` (a plan that is not packed is returned as it is).
        ValueError when the blob is missing or is not the one the JSON describes."""
        described = self.members
        if described is None:
            return self
        if blob is None:
            raise ValueError("the plan's member list is missing")
        if digest(blob) != described.sha256:
            raise ValueError("the member list does not match the plan (sha256 differs)")
        lists = decode_lists(blob)
        if [len(x) for x in lists] != [described.count, described.excluded]:
            raise ValueError("the member list does not hold the counts the plan states")
        devices, exclusions = lists
        return self.model_copy(update={"devices": devices, "exclusions": exclusions, "members": None})


def newly_offered(before: FleetPlan | None, after: FleetPlan) -> list[tuple[str, str]]:
    """(device, version) for every member `after` offers a version it did not offer before: a wave that
    opened, a halt or a rollback sending devices back. What an announcement tells, in the fleet's order."""
    if before is not None and _offers(before)[:-1] == _offers(after)[:-1]:
        # only the members changed (or nothing): only devices that joined can be offered something new
        if before.devices == after.devices:
            return []
        known = before._sets()[0]
        candidates = [d for d in after.devices if d not in known]
    else:
        candidates = after.devices
    out = []
    for device in candidates:
        offered = after.version_for(device)
        if offered is not None and offered != (before.version_for(device) if before is not None else None):
            out.append((device, offered))
    return out


def _offers(plan: FleetPlan) -> tuple:
    return (plan.rollout_id, plan.stable, plan.candidate, plan.threshold, plan.halted, plan.hold, plan.pins,
            plan.exclusions, plan.devices)  # fmt: skip


class RolloutPlan(PlanModel):
    api_version: Literal["weatherfleet.io/v1alpha1"] = Field(
        default="weatherfleet.io/v1alpha1", alias="apiVersion"
    )
    kind: Literal["RolloutPlan"] = "RolloutPlan"
    fleets: dict[str, FleetPlan] = Field(default_factory=dict, description="keyed by namespace/name")

    def fleet_of(self, device_id: str) -> FleetPlan | None:
        for key in sorted(self.fleets):
            if self.fleets[key].is_member(device_id):
                return self.fleets[key]
        return None

    def decide(self, device_id: str) -> Decision:
        fleet = self.fleet_of(device_id)
        return fleet.decide(device_id) if fleet else Decision(None, "not-a-member")

    def version_for(self, device_id: str) -> str | None:
        """None: no update. A device that no fleet of the plan lists is offered nothing."""
        return self.decide(device_id).version

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, indent=2)
