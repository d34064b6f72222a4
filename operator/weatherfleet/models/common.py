"""Types shared by every weatherfleet resource: metadata, conditions, references."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from ..durations import DURATION_PATTERN

DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"

DeviceId = Annotated[str, StringConstraints(pattern=DNS1123_LABEL, min_length=1, max_length=63)]
Duration = Annotated[str, StringConstraints(pattern=DURATION_PATTERN)]
ConditionStatus = Literal["True", "False", "Unknown"]


class Model(BaseModel):
    """Base for API types: camelCase on the wire, unknown fields rejected, as a structural schema would."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_assignment=True)


class ObjectMeta(BaseModel):
    """The part of metav1.ObjectMeta the reconcilers read; the rest is carried through untouched."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    name: str
    namespace: str = "default"
    uid: str = ""
    generation: int = 0
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class Condition(Model):
    """metav1.Condition."""

    type: str
    status: ConditionStatus
    reason: Annotated[str, StringConstraints(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")]
    message: str = ""
    last_transition_time: datetime | None = Field(default=None, alias="lastTransitionTime")
    observed_generation: int | None = Field(default=None, alias="observedGeneration")


class SecretKeyRef(Model):
    """A key in a Secret of the resource's namespace: how anything secret enters a spec."""

    name: Annotated[
        str, StringConstraints(pattern=DNS1123_LABEL.replace("^[a-z0-9]", "^[a-z0-9.]"), max_length=253)
    ]
    key: Annotated[str, StringConstraints(pattern=r"^[-._a-zA-Z0-9]+$", max_length=253)]


class ConfigMapKeyRef(Model):
    name: Annotated[str, StringConstraints(pattern=DNS1123_LABEL, max_length=253)]
    key: Annotated[str, StringConstraints(pattern=r"^[-._a-zA-Z0-9]+$", max_length=253)]


def set_condition(
    conditions: list[Condition],
    type_: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    now: datetime,
    generation: int | None = None,
) -> list[Condition]:
    """Conditions with one replaced; lastTransitionTime moves only when the status changes."""
    previous = next((c for c in conditions if c.type == type_), None)
    changed_at = previous.last_transition_time if previous and previous.status == status else now
    updated = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        lastTransitionTime=changed_at,
        observedGeneration=generation,
    )
    return sorted([c for c in conditions if c.type != type_] + [updated], key=lambda c: c.type)
