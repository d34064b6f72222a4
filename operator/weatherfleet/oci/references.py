"""Names that reach a URL or a path, validated first: the repository grammar of the distribution spec, the
tag grammar, `sha256:<64 hex>` digests. Whole-string matches, so nothing read from a device or a webhook
(a trailing newline included) can walk the tree or reach the registry."""

from __future__ import annotations

import hashlib
import json
import re

_REPOSITORY = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")


def is_digest(value: str) -> bool:
    return _DIGEST.fullmatch(value) is not None


def check_repository(name: str) -> str:
    if len(name) > 255 or not _REPOSITORY.fullmatch(name):
        raise ValueError(f"{name[:80]!r} is not a valid repository name")
    return name


def check_reference(reference: str) -> str:
    if not (_TAG.fullmatch(reference) or _DIGEST.fullmatch(reference)):
        raise ValueError(f"{reference[:80]!r} is neither a tag nor a sha256 digest")
    return reference


def check_digest(digest: str) -> str:
    if not _DIGEST.fullmatch(digest):
        raise ValueError(f"{digest[:80]!r} is not a sha256 digest")
    return digest


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
