"""A fleet's member list, exact and compact: what the plan ConfigMap carries instead of a JSON list.

OtaFlux sees only a device id, and fleet membership comes from label selectors it never sees, so the plan
must list the members: a device in no fleet gets no update, and a probabilistic set (a Bloom filter) would
hand updates to devices that are in no fleet. The list stays exact; it is stored small:

- sorted (code point order, which is UTF-8 byte order) and without repeats;
- front-coded: each id as (bytes shared with the previous id, the rest), both lengths as varints;
- gzip-compressed (mtime 0, so the same list gives the same bytes: `render` output is reproducible).

Several lists (the members, the exclusions) go one after another into one blob, after a format tag. The
blob's sha256 and list sizes travel in the plan's JSON (`MemberDigest`), so a reader that finds a blob
that does not belong to the JSON it read (torn read, hand edit) refuses it rather than guess.

Sizes (bench/rollout.py): sequential ids (`sensor-000123`) cost well under a byte a device; random
MAC-derived ids (`esp32-` and 12 hex digits) about 5.8 bytes; the ids' own entropy is the floor.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from collections.abc import Iterable

FORMAT = b"weatherfleet-members/1\n"
ENCODING = "front-coded+gzip/1"
# A decoded blob larger than this is refused (a ConfigMap holds 1 MiB; sorted DNS labels front-code to far
# less than 64 MiB for any list that fits one).
MAX_DECODED_BYTES = 64 << 20


def encode_lists(lists: Iterable[Iterable[str]]) -> bytes:
    """The blob of one or more id lists (each sorted and de-duplicated here)."""
    out = bytearray(FORMAT)
    for ids in lists:
        unique = sorted(set(ids))
        _varint(out, len(unique))
        previous = b""
        for text in unique:
            raw = text.encode("utf-8")
            shared = _common_prefix(previous, raw)
            _varint(out, shared)
            _varint(out, len(raw) - shared)
            out += raw[shared:]
            previous = raw
    return gzip.compress(bytes(out), compresslevel=9, mtime=0)


def decode_lists(blob: bytes) -> list[list[str]]:
    """The lists `encode_lists` stored, each sorted. ValueError when the blob is not one."""
    try:
        inflate = zlib.decompressobj(wbits=31)  # gzip framing
        raw = inflate.decompress(blob, MAX_DECODED_BYTES)
    except zlib.error as exc:
        raise ValueError(f"member list is not gzip: {exc}") from None
    if inflate.unconsumed_tail:
        raise ValueError(f"member list decodes to more than {MAX_DECODED_BYTES} bytes")
    if not inflate.eof:
        raise ValueError("member list is truncated")
    if not raw.startswith(FORMAT):
        raise ValueError("member list has an unknown format")
    view = memoryview(raw)
    pos = len(FORMAT)
    lists: list[list[str]] = []
    while pos < len(raw):
        count, pos = _read_varint(view, pos)
        ids: list[str] = []
        previous = b""
        for _ in range(count):
            shared, pos = _read_varint(view, pos)
            rest, pos = _read_varint(view, pos)
            if shared > len(previous) or pos + rest > len(raw):
                raise ValueError("member list is corrupt")
            current = previous[:shared] + bytes(view[pos : pos + rest])
            pos += rest
            try:
                ids.append(current.decode("utf-8"))
            except UnicodeDecodeError:
                raise ValueError("member list holds an id that is not UTF-8") from None
            previous = current
        lists.append(ids)
    return lists


def digest(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def members_name(plan_name: str) -> str:
    """The ConfigMap key (mounted file) of a plan's member lists, beside its JSON: `<ns>.<fleet>.members`."""
    stem = plan_name[: -len(".json")] if plan_name.endswith(".json") else plan_name
    return f"{stem}.members"


def _common_prefix(a: bytes, b: bytes) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _varint(out: bytearray, value: int) -> None:
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _read_varint(view: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(view) or shift > 63:
            raise ValueError("member list is corrupt")
        byte = view[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
