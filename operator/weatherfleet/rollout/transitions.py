"""The one table of rollout status changes a person is told about.

`transitions(old, new)` turns a status change into what `kubectl describe sensorfleet` shows as events
(the operator emits them; the local mode runs the same operator code). Nothing else decides these texts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..models.fleet import RolloutStatus


@dataclass(frozen=True)
class Transition:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


# phase entered -> (event type, reason, message); {release}, {reason}, {percent}, {opened}, {stable} filled in
ENTERED: dict[str, tuple[Literal["Normal", "Warning"], str, str]] = {
    "Halted": ("Warning", "RolloutHalted", "{release} halted, the candidate is closed: {reason}"),
    "Aborted": ("Warning", "RolloutAborted", "{release}: {reason}"),
    "RolledBack": ("Warning", "RolloutRolledBack", "{release}: {reason}"),
    "Complete": ("Normal", "RolloutComplete", "{release} complete: {reason}"),
    "Paused": (
        "Normal",
        "RolloutPaused",
        "{release} paused at {percent:g}% ({opened} devices): clocks stopped",
    ),
}
STARTED = (
    "Normal",
    "RolloutStarted",
    "{release}: wave 1 open to {percent:g}% ({opened} of {eligible} devices); the others are offered {stable}",
)
ADVANCED = (
    "Normal",
    "RolloutAdvanced",
    "{release}: wave {wave} open to {percent:g}% ({opened} of {eligible} devices)",
)
RESUMED = ("Normal", "RolloutResumed", "{release} resumed at {percent:g}%: clocks running again")
FAILED = ("Warning", "DevicesFailed", "{release}: {failures}")


def _fill(
    entry: tuple[Literal["Normal", "Warning"], str, str], new: RolloutStatus, **extra: str
) -> Transition:
    type_, reason, template = entry
    values = {
        "release": f"release {new.release} ({new.version})",
        "reason": new.reason,
        "percent": new.percent,
        "opened": new.opened,
        "stable": new.stable_version or "nothing (no stable version known: they keep what they run)",
        "eligible": new.eligible,
        "wave": new.wave + 1,
        **extra,
    }
    return Transition(type=type_, reason=reason, message=template.format(**values))


def transitions(old: RolloutStatus, new: RolloutStatus) -> list[Transition]:
    """The events for a status change from `old` to `new` (none when nothing a person cares about moved)."""
    if new.phase == "Idle" or new.version is None:
        return []
    restarted = (old.release, old.version) != (new.release, new.version) or (
        new.phase == "Progressing" and new.wave == 0 and old.phase in ("Aborted", "RolledBack")
    )
    out: list[Transition] = []
    if restarted and new.phase in ("Progressing", "Paused", "Halted", "Aborted"):
        out.append(_fill(STARTED, new))
    elif new.wave > old.wave and new.phase == "Progressing":
        out.append(_fill(ADVANCED, new))
    fresh = {f.device_id for f in new.failed_devices} - {f.device_id for f in old.failed_devices}
    if fresh and new.phase != "Halted":
        shown = [f"{f.device_id} ({f.reason})" for f in new.failed_devices if f.device_id in fresh]
        out.append(_fill(FAILED, new, failures=", ".join(shown[:10])))
    if new.phase == old.phase and not restarted:
        return out
    if new.phase in ENTERED:
        out.append(_fill(ENTERED[new.phase], new))
    elif new.phase == "Progressing" and old.phase == "Paused" and not restarted:
        out.append(_fill(RESUMED, new))
    return out
