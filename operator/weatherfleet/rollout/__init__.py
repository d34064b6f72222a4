"""Rollouts: which devices a release is open to, and when a rollout advances, halts, pauses, aborts,
rolls back or completes. Pure (no I/O, no clock): shared by the operator, `render`, the local mode and
OtaFlux.

- `ranks`: the deterministic order of a fleet in a rollout and the rank threshold that cuts a wave;
- `plan`: the plan OtaFlux follows (`FleetPlan`, `RolloutPlan`) and what it offers each device;
- `waves`: `next_status` (gates, clocks, abort, rollback) and `fleet_plan`;
- `transitions`: the one table of status changes a person is told about (Kubernetes events);
- `authorisation`: the operator's signed permission for a downgrade (halt or fleet rollback).
"""

from .authorisation import Authorisation
from .devices import FAILED_STATES, DeviceObservation, OtaState
from .plan import Decision, FleetPlan, RolloutPlan
from .ranks import in_share, open_share, rank, share_of, share_size
from .transitions import Transition, transitions
from .waves import (
    active_seconds,
    downgrade_refusal,
    fleet_plan,
    next_status,
    rollout_id,
    settled_version,
    success_needed,
    tally,
)

__all__ = [
    "FAILED_STATES",
    "Authorisation",
    "Decision",
    "DeviceObservation",
    "FleetPlan",
    "OtaState",
    "RolloutPlan",
    "Transition",
    "active_seconds",
    "downgrade_refusal",
    "fleet_plan",
    "in_share",
    "next_status",
    "open_share",
    "rank",
    "rollout_id",
    "settled_version",
    "share_of",
    "share_size",
    "success_needed",
    "tally",
    "transitions",
]
