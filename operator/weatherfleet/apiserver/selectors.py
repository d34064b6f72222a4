"""Label and field selectors of list and watch requests (`labelSelector`, `fieldSelector`), as predicates."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from . import apply as ssa
from .errors import ApiError

_SET_RE = re.compile(r"^\s*(!?)([\w./-]+)\s*(?:(notin|in)\s*\(([^)]*)\)|(==|=|!=)\s*([\w./-]*))?\s*$")


def _split_selector(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += ch == "("
        depth -= ch == ")"
        cur += ch
    if cur.strip():
        parts.append(cur)
    return parts


def label_matcher(text: str | None) -> Callable[[dict[str, str]], bool]:
    if not text:
        return lambda _labels: True
    tests = []
    for term in _split_selector(text):
        m = _SET_RE.match(term)
        if not m:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {term!r}")
        neg, key, set_op, values, eq_op, value = m.groups()
        if set_op:
            vals = {v.strip() for v in values.split(",") if v.strip()}
            tests.append(
                (lambda k, vs: lambda lb: lb.get(k) in vs)(key, vals)
                if set_op == "in"
                else (lambda k, vs: lambda lb: lb.get(k) not in vs)(key, vals)
            )
        elif eq_op in ("=", "=="):
            tests.append((lambda k, v: lambda lb: lb.get(k) == v)(key, value))  # noqa: B023
        elif eq_op == "!=":
            tests.append((lambda k, v: lambda lb: lb.get(k) != v)(key, value))  # noqa: B023
        elif neg:
            tests.append((lambda k: lambda lb: k not in lb)(key))
        else:
            tests.append((lambda k: lambda lb: k in lb)(key))
    return lambda labels: all(t(labels) for t in tests)


def field_matcher(text: str | None) -> Callable[[dict[str, Any]], bool]:
    if not text:
        return lambda _obj: True
    tests = []
    for term in text.split(","):
        neg = "!=" in term
        key, value = re.split(r"!=|==|=", term, maxsplit=1)
        tests.append((key.strip(), value.strip(), neg))

    def match(obj: dict[str, Any]) -> bool:
        for key, value, neg in tests:
            actual = ssa.get_path(obj, tuple(key.split(".")))
            if (actual == value) == neg:
                return False
        return True

    return match
