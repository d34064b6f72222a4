"""What kube-apiserver does with a custom resource's structural schema: default, prune, validate.

A real server prunes unknown fields silently (with a `Warning` header), fills in schema defaults, and
rejects an object that violates the schema with 422 Invalid naming the field. That is reproduced here
with jsonschema on the OpenAPI v3 subset that structural schemas allow."""

from __future__ import annotations

import copy
from typing import Any

import jsonschema

PRESERVE = "x-kubernetes-preserve-unknown-fields"


def _is_object_schema(schema: dict[str, Any]) -> bool:
    return schema.get("type") == "object" or "properties" in schema


def prune(value: Any, schema: dict[str, Any], path: str = "", pruned: list[str] | None = None) -> Any:
    """Drop every field the schema does not declare; returns the pruned value, records pruned paths."""
    pruned = [] if pruned is None else pruned
    if isinstance(value, dict) and _is_object_schema(schema):
        if schema.get(PRESERVE) and "properties" not in schema:
            return value
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        out = {}
        for key, item in value.items():
            child = f"{path}.{key}" if path else key
            if props is not None and key in props:
                out[key] = prune(item, props[key], child, pruned)
            elif isinstance(extra, dict):
                out[key] = prune(item, extra, child, pruned)
            elif extra is True or schema.get(PRESERVE):
                out[key] = item
            else:
                pruned.append(child)
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [prune(item, schema["items"], f"{path}[{i}]", pruned) for i, item in enumerate(value)]
    return value


def default(value: Any, schema: dict[str, Any]) -> Any:
    """Fill in `default`s of absent properties of objects that are present (structural defaulting)."""
    if isinstance(value, dict) and "properties" in schema:
        for key, sub in schema["properties"].items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                value[key] = default(value[key], sub)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [default(item, schema["items"]) for item in value]
    return value


def to_json_schema(schema: Any) -> Any:
    """OpenAPI v3 (nullable, int-or-string) to JSON Schema draft 4 understood by jsonschema."""
    if isinstance(schema, list):
        return [to_json_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: to_json_schema(v) for k, v in schema.items() if not k.startswith("x-kubernetes-")}
    out.pop("default", None)
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if out.get(bound) is True:
            out[bound] = out.pop(plain)
        elif out.get(bound) is False:
            out.pop(bound)
    if out.get("type") == "object" and "properties" in out and "additionalProperties" not in out:
        pass  # pruning already removed unknown fields
    return out


def _field(path: Any) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


_VALIDATORS: dict[int, tuple[dict[str, Any], jsonschema.Draft7Validator]] = {}


def _validator(schema: dict[str, Any]) -> jsonschema.Draft7Validator:
    cached = _VALIDATORS.get(id(schema))
    if cached is None or cached[0] is not schema:
        cached = (schema, jsonschema.Draft7Validator(to_json_schema(schema)))
        _VALIDATORS[id(schema)] = cached
    return cached[1]


def validate(obj: dict[str, Any], schema: dict[str, Any]) -> list[tuple[str, str]]:
    """(field, message) for every violation, in the style of kube-apiserver's field errors."""
    validator = _validator(schema)
    causes = []
    for error in sorted(validator.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path))):
        field = _field(error.absolute_path)
        if error.validator == "required":
            missing = error.message.split("'")[1]
            field = f"{field}.{missing}" if field else missing
            causes.append((field, "Required value"))
        elif error.validator == "pattern":
            causes.append(
                (
                    field,
                    f'Invalid value: "{error.instance}": {field} in body should match '
                    f"'{error.validator_value}'",
                )
            )
        elif error.validator == "enum":
            allowed = ", ".join(f'"{v}"' for v in error.validator_value)
            causes.append((field, f'Unsupported value: "{error.instance}": supported values: {allowed}'))
        else:
            causes.append((field, f"Invalid value: {error.instance!r}: {error.message}"))
    return causes


def transition_rules(new: Any, old: Any, schema: dict[str, Any], path: str = "") -> list[tuple[str, str]]:
    """The one CEL rule our CRDs use, `self == oldSelf` (immutable fields); other rules are not evaluated."""
    causes = []
    for rule in schema.get("x-kubernetes-validations", []):
        if rule.get("rule", "").replace(" ", "") == "self==oldSelf" and old is not None and new != old:
            causes.append((path, f"Invalid value: {rule.get('message', 'immutable')}"))
    if isinstance(new, dict) and isinstance(old, dict):
        for key, sub in schema.get("properties", {}).items():
            if key in new and key in old:
                causes += transition_rules(new[key], old[key], sub, f"{path}.{key}" if path else key)
    return causes
