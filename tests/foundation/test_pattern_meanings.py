"""Every pattern a resource's field must match has its meaning for messages, declared with it
(`models.common.matching`): editing a pattern cannot silently drop its friendly message."""

from __future__ import annotations

from typing import Any

from weatherfleet.crds import all_crds
from weatherfleet.models.common import PATTERN_MEANINGS

# Condition.reason is written by the operator, never by a user: its message may stay the plain pattern.
UNEXPLAINED = {r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"}


def patterns(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["pattern"]} if isinstance(node.get("pattern"), str) else set()
        return found.union(*(patterns(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(patterns(v) for v in node))
    return set()


def test_every_pattern_of_the_crds_has_a_meaning() -> None:
    used = set().union(*(patterns(crd) for crd in all_crds()))
    assert used, "no patterns found: the walk is broken"
    assert used - UNEXPLAINED <= set(PATTERN_MEANINGS), sorted(used - UNEXPLAINED - set(PATTERN_MEANINGS))
