"""Types shared by every weatherfleet resource: metadata, conditions, references."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from ..durations import DURATION_PATTERN

# What a pattern means, for messages: "must be a duration like '90s'" beats a regular expression. A
# pattern and its meaning are declared together (`matching`), so editing a pattern cannot drop its message.
PATTERN_MEANINGS: dict[str, str] = {}


def matching(pattern: str, meaning: str, **constraints: Any) -> StringConstraints:
    """A string constraint for a model field, and what its pattern means in validation messages."""
    PATTERN_MEANINGS[pattern] = meaning
    return StringConstraints(pattern=pattern, **constraints)


DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
OBJECT_NAME = DNS1123_LABEL.replace("^[a-z0-9]", "^[a-z0-9.]")
LABEL_MEANING = (
    "a DNS-1123 label: lowercase letters, digits and '-', starting and ending with a letter or digit"
)


def label(**constraints: Any) -> StringConstraints:
    """A DNS-1123 label (a device id, a resource name)."""
    return matching(DNS1123_LABEL, LABEL_MEANING, **constraints)


DeviceId = Annotated[str, label(min_length=1, max_length=63)]
Duration = Annotated[str, matching(DURATION_PATTERN, "a duration like '90s', '10m' or '1h30m'")]
DnsName = Annotated[
    str,
    matching(
        DNS1123_SUBDOMAIN,
        "a DNS name: lowercase labels of letters, digits and '-', separated by dots",
        max_length=253,
    ),
]
DataKey = Annotated[
    str, matching(r"^[-._a-zA-Z0-9]+$", "a key: letters, digits, '-', '_' and '.'", max_length=253)
]
Channel = Annotated[
    str, matching(r"^[a-z][a-z0-9-]{0,30}$", "a channel name: a lowercase word like 'stable' or 'beta'")
]
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


class Resource(Model):
    """What the three kinds have in common: apiVersion and metadata. Each kind narrows `kind` to its
    name and adds its spec and status."""

    api_version: Literal["weatherfleet.io/v1alpha1"] = Field(
        default="weatherfleet.io/v1alpha1", alias="apiVersion"
    )
    kind: str
    metadata: ObjectMeta


class Condition(Model):
    """metav1.Condition."""

    type: str = Field(description="what the condition is about, in CamelCase (Ready, Online, ...)")
    status: ConditionStatus = Field(description="True, False or Unknown")
    reason: Annotated[str, StringConstraints(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")] = Field(
        description="why, in one CamelCase word a program can match"
    )
    message: str = Field(default="", description="why, for a person")
    last_transition_time: datetime | None = Field(
        default=None, alias="lastTransitionTime", description="when status last changed"
    )
    observed_generation: int | None = Field(
        default=None, alias="observedGeneration", description="the spec generation the condition was set for"
    )


class SecretKeyRef(Model):
    """A key in a Secret of the resource's namespace: how anything secret enters a spec."""

    name: Annotated[
        str,
        matching(
            OBJECT_NAME, "a Kubernetes object name: lowercase letters, digits, '-' and '.'", max_length=253
        ),
    ] = Field(description="the Secret, in the resource's namespace")
    key: DataKey = Field(description="the key in its data")


class ConfigMapKeyRef(Model):
    """A key in a ConfigMap of the resource's namespace."""

    name: Annotated[str, label(max_length=253)] = Field(
        description="the ConfigMap, in the resource's namespace"
    )
    key: DataKey = Field(description="the key in its data")


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


# --- validation errors as a user reads them -------------------------------------------------------------


def field_path(loc: tuple[int | str, ...]) -> str:
    """('spec', 'sensors', 1, 'type') -> 'spec.sensors[1].type'."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part in ("function-after", "function-before") or "[" in str(part):
            continue  # pydantic's names for validator wrappers and union branches are no field names
        else:
            text += ("." if text else "") + str(part)
    return text or "(document)"


def describe_error(error: dict) -> str:
    """One pydantic error as a sentence a user can act on."""
    kind = error.get("type", "")
    ctx = error.get("ctx") or {}
    given = error.get("input")
    if kind == "string_pattern_mismatch":
        meaning = PATTERN_MEANINGS.get(ctx.get("pattern", ""))
        if meaning:
            return f"{given!r} is not {meaning}"
        return f"{given!r} does not match the pattern {ctx.get('pattern')}"
    if kind == "extra_forbidden":
        return "unknown field (check the spelling; fields are camelCase)"
    if kind == "missing":
        return "required field is missing"
    if kind == "literal_error":
        return f"{given!r} is not one of {ctx.get('expected')}"
    if kind == "value_error":
        return str(ctx.get("error") or error.get("msg", "")).removeprefix("Value error, ")
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        return f"{given!r}: {error.get('msg', '').lower()}"
    return error.get("msg", kind)


def validation_messages(exc: Exception) -> list[tuple[str, str]]:
    """(field path, message) for every error of a pydantic ValidationError."""
    errors = getattr(exc, "errors", None)
    if errors is None:
        return [("(document)", str(exc))]
    return [(field_path(tuple(e.get("loc", ()))), describe_error(e)) for e in errors()]
