"""Types shared by every weatherfleet resource: metadata, conditions, references."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from ..durations import DURATION_PATTERN
from ..semver import SEMVER_PATTERN

DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"

DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
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
        str, StringConstraints(pattern=DNS1123_LABEL.replace("^[a-z0-9]", "^[a-z0-9.]"), max_length=253)
    ] = Field(description="the Secret, in the resource's namespace")
    key: Annotated[str, StringConstraints(pattern=r"^[-._a-zA-Z0-9]+$", max_length=253)] = Field(
        description="the key in its data"
    )


class ConfigMapKeyRef(Model):
    """A key in a ConfigMap of the resource's namespace."""

    name: Annotated[str, StringConstraints(pattern=DNS1123_LABEL, max_length=253)] = Field(
        description="the ConfigMap, in the resource's namespace"
    )
    key: Annotated[str, StringConstraints(pattern=r"^[-._a-zA-Z0-9]+$", max_length=253)] = Field(
        description="the key in its data"
    )


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

# What a pattern means, for messages: "must be a duration like '90s'" beats a regular expression.
PATTERN_MEANINGS: dict[str, str] = {
    DNS1123_LABEL: "a DNS-1123 label: lowercase letters, digits and '-', starting and ending with a letter "
    "or digit",
    DNS1123_SUBDOMAIN: "a DNS name: lowercase labels of letters, digits and '-', separated by dots",
    DURATION_PATTERN: "a duration like '90s', '10m' or '1h30m'",
    SEMVER_PATTERN: "a semantic version like '1.2.3' or '1.3.0-rc.1'",
    DNS1123_LABEL.replace("^[a-z0-9]", "^[a-z0-9.]"): "a Kubernetes object name: lowercase letters, digits, "
    "'-' and '.'",
    r"^[-._a-zA-Z0-9]+$": "a key: letters, digits, '-', '_' and '.'",
    r"^[a-z][a-z0-9_-]{0,30}$": "a topic prefix: a lowercase word like 'sensors'",
    r"^[a-zA-Z0-9_-]{1,40}$": "a Grafana uid: up to 40 letters, digits, '-' and '_'",
    r"^-?[0-9]{1,20}$|^@[A-Za-z][A-Za-z0-9_]{4,31}$": "a Telegram chat id: a number like '-1001234567890' "
    "or a channel like '@garden_alerts'",
    r"^sha256:[a-f0-9]{64}$": "a digest: 'sha256:' and 64 lowercase hex digits",
    r"^[a-z0-9.:-]+(/([a-z0-9._-]|\{deviceId\})+)+$": "an OCI repository like "
    "'registry.example:5000/firmware/{deviceId}' (lowercase; '{deviceId}' stands for each device)",
    r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$": "an OCI tag: letters, digits, '_', '.' and '-', at most 128",
    r"^[a-z][a-z0-9-]{0,30}$": "a channel name: a lowercase word like 'stable' or 'beta'",
    r"^[^\x00-\x1f]+$": "text without control characters",
}


def register_pattern_meaning(pattern: str, meaning: str) -> None:
    PATTERN_MEANINGS[pattern] = meaning


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
