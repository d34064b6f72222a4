"""Who is in a wave: a deterministic order of the fleet, and a rank threshold that cuts it.

Every device has a rank in a rollout: `sha256(rolloutId NUL deviceId)` as 64 hex digits. Ranks order the
fleet the same way in every process, on every replica and every Python, and two devices never share one
(that would be a SHA-256 collision). A wave of p % opens to the first `ceil(p·N/100)` members in that
order (at least one when p > 0 and the fleet is not empty); the plan carries the rank of the last member
inside, the *threshold*, and a device is inside when its rank is at most the threshold. So the plan stays
one string at any fleet size, OtaFlux decides with one hash and one comparison, and the count is exact.

At every look the operator cuts the order of the members it has now (`open_share` with the rank of the
highest device that started on the release as the floor, `waves.started_floor`): a device that joins
takes its place in the order, a member that leaves frees its own, and the wave is again exactly
`ceil(p·N/100)` — except that a device that started on the release (downloading it, running it, failed
on it) is never left out, so an updated device is never pulled back and a failure keeps counting. Only a
device merely offered the release may give its place to a joiner ranked before it. A wider wave cuts
further along the same order, so a device inside stays inside as the waves grow.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import math
from collections.abc import Iterable
from decimal import Decimal

RANK_DIGITS = 64


@functools.lru_cache(maxsize=1 << 17)  # a fleet's ranks are asked for at every evaluation and request
def rank(rollout_id: str, device_id: str) -> str:
    """The device's place in this rollout's order: 64 lowercase hex digits (compare as strings)."""
    return hashlib.sha256(f"{rollout_id}\x00{device_id}".encode()).hexdigest()


def share_size(percent: float, members: int) -> int:
    """How many of `members` a wave of `percent` opens to: ceil(percent·members/100), at least one when
    percent > 0 and there is anyone, never more than `members`. Computed in decimal on the percentage as
    written (33.3 is 33.3, not 33.29999…), so 20 % of 5 is exactly 1."""
    if members <= 0 or percent <= 0:
        return 0
    exact = Decimal(repr(float(percent))) * members / 100
    return min(members, max(1, math.ceil(exact)))


def nth_rank(rollout_id: str, device_ids: Iterable[str], n: int) -> str | None:
    """The n-th smallest rank (1-based) among the devices, or None when n < 1 or there are fewer."""
    if n < 1:
        return None
    ranks = [rank(rollout_id, d) for d in device_ids]
    if n > len(ranks):
        return None
    if n == len(ranks):
        return max(ranks)
    # a heap for a small wave of a large fleet; for a wide wave, sorting once is cheaper
    return heapq.nsmallest(n, ranks)[n - 1] if n * 8 < len(ranks) else sorted(ranks)[n - 1]


def open_share(
    rollout_id: str, device_ids: Iterable[str], percent: float, previous: str | None = None
) -> str | None:
    """The threshold that opens a wave of `percent` to the devices (the eligible members of the fleet):
    the rank of the ceil(percent·N/100)-th of them, or `previous` when that is higher (monotone)."""
    ids = list(device_ids)
    wanted = nth_rank(rollout_id, ids, share_size(percent, len(ids)))
    if wanted is None:
        return previous
    return wanted if previous is None or wanted > previous else previous


def inside(rank_: str, threshold: str | None) -> bool:
    return threshold is not None and rank_ <= threshold


def in_share(rollout_id: str, device_id: str, threshold: str | None) -> bool:
    """Whether the device is inside the share the threshold opens."""
    return inside(rank(rollout_id, device_id), threshold)


def share_of(rollout_id: str, device_ids: Iterable[str], percent: float) -> set[str]:
    """The devices a wave of `percent` opens to in a fleet of exactly these devices (no history): the
    first ceil(percent·N/100) by rank."""
    ids = list(device_ids)
    threshold = open_share(rollout_id, ids, percent)
    return {d for d in ids if in_share(rollout_id, d, threshold)}
