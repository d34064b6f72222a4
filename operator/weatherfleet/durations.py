"""Go-style durations ("90s", "10m", "1h30m"), as Kubernetes and cert-manager write them."""

from __future__ import annotations

import re

DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds in a Go duration string; raises ValueError naming the bad text."""
    if not re.fullmatch(DURATION_PATTERN, text or ""):  # `$` alone would accept a trailing newline
        raise ValueError(f"{text!r} is not a duration like '90s', '10m' or '1h30m'")
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in _PART.findall(text))


def format_duration(seconds: float) -> str:
    """The shortest Go duration string for whole seconds (3600 -> '1h', 90 -> '1m30s')."""
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "") + (f"{secs}s" if secs else "")
    return text or "0s"
