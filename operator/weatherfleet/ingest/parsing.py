"""Turn one MQTT message into points, or reject it with a reason a person can act on.

Pure: no I/O, no clock of its own (the caller passes the receive time), so every rule is unit-tested.

Rules (issue 6): measurement and field names are known, values are finite numbers, the timestamp is
present, not in the future beyond the allowed clock skew and not from before the device clock was set,
the payload's device id equals the topic's. Values outside the physical range of the sensors
(`weatherfleet.messages.FIELDS`) are *flagged*, not dropped: they leave the value column (so graphs and
alerts are not skewed by a broken sensor) and are kept in the `flagged` field as `name=value` pairs.

Hostile input (issue 14) is rejected here, with a reason, before it can reach a store: text anywhere in a
payload (tags, string values, JSON keys) must not hold control characters, lone surrogates (`"\\ud800"`
is valid JSON and valid UTF-8 on the wire, but no store can encode it) or Unicode non-characters;
integers have at most 18 digits (they fit a signed 64-bit column), timestamps are bounded before any
arithmetic, and JSON nesting deeper than Python's recursion limit is a reason, not a crash."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from .. import messages
from .records import DEVICE_STATUS, OTA_EVENTS, WEATHER, Point

_Payload = TypeVar("_Payload", bound=BaseModel)

NS = 1_000_000_000
WEATHER_TAGS = ("device", "location", "firmware")
JSON_META = ("device", "location", "firmware", "time")
RANGES = {name: (low, high) for name, (_unit, low, high) in messages.FIELDS.items()}
MAX_INT_DIGITS = 18  # every integer of at most 18 digits fits a signed 64-bit column (SQLite, InfluxDB)
MAX_EPOCH_SECONDS = 1e12  # bounds 'time' before it is scaled to nanoseconds (the skew check says the rest)
_NONCHARACTERS = "\ufdd0-\ufdef" + "".join(
    f"{chr(plane * 0x10000 + 0xFFFE)}{chr(plane * 0x10000 + 0xFFFF)}" for plane in range(17)
)
# What no text field may hold: C0 control characters, lone surrogates, non-characters.
_BAD_TEXT = re.compile(f"[\x00-\x1f\ud800-\udfff{_NONCHARACTERS}]")
# What a whole payload may not hold (tabs and line ends separate lines and JSON tokens there).
_BAD_PAYLOAD = re.compile(f"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff{_NONCHARACTERS}]")
_LP_INTEGER = re.compile(r"-?[0-9]{1,18}[iu]")


class Rejected(ValueError):
    """The message cannot be stored; `reason` says why (kept with the message as a dead letter)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ValidationPolicy:
    max_payload_bytes: int = 64 * 1024
    max_clock_skew_s: float = 300.0
    # 2020-01-01: anything older is a device whose clock was never set (it counts from 1970 or 2000)
    min_time_ns: int = 1_577_836_800 * NS


class MessageParser:
    def __init__(self, policy: ValidationPolicy | None = None, prefix: str = "sensors") -> None:
        self.policy = policy or ValidationPolicy()
        self.prefix = prefix
        self._heads: dict[tuple[str, str], dict[str, str]] = {}

    def parse(self, topic: str, payload: bytes, received_ns: int) -> list[Point]:
        """Points of one message; raises Rejected."""
        parts = topic.split("/")
        if len(parts) != 3 or parts[0] != self.prefix or not parts[1]:
            raise Rejected(f"unexpected topic {topic!r}: expected {self.prefix}/<device>/<kind>")
        device, kind = parts[1], parts[2]
        if len(payload) > self.policy.max_payload_bytes:
            raise Rejected(f"payload of {len(payload)} bytes exceeds {self.policy.max_payload_bytes}")
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError as error:
            raise Rejected(f"payload is not UTF-8 ({error.reason} at byte {error.start})") from None
        if not device.isascii() or not device.isprintable():
            raise Rejected(f"device id {device!r} in the topic is not printable ASCII")
        bad = None if text.isascii() and text.isprintable() else _BAD_PAYLOAD.search(text)
        if bad is not None:
            raise Rejected(f"payload contains {_describe_char(bad.group())} at character {bad.start()}")
        if kind == "measurements":
            stripped = text.lstrip()
            if stripped.startswith("{"):
                return [self._json_measurement(device, stripped, received_ns)]
            return self._line_protocol(device, text, received_ns)
        if kind == "status":
            return [self._status(device, text, received_ns)]
        if kind == "ota":
            return [self._ota_event(device, text, received_ns)]
        raise Rejected(f"unknown message kind {kind!r} on {topic!r} (measurements, status or ota)")

    # -- measurements -------------------------------------------------------------------------------

    def _line_protocol(self, device: str, text: str, received_ns: int) -> list[Point]:
        if "\n" not in text and text.strip() and not text.lstrip().startswith("#"):
            return [self._lp_line(device, text, received_ns)]  # the common case: one reading
        lines = [
            line.rstrip("\r")
            for line in text.split("\n")
            if line.strip() and not line.lstrip().startswith("#")
        ]
        if not lines:
            raise Rejected("empty line protocol payload")
        points = []
        for number, line in enumerate(lines, 1):
            try:
                points.append(self._lp_line(device, line, received_ns))
            except Rejected as error:
                prefix = f"line {number}: " if len(lines) > 1 else ""
                raise Rejected(prefix + error.reason) from None
        return points

    def _lp_line(self, device: str, line: str, received_ns: int) -> Point:
        if "\\" in line or '"' in line:
            head, field_text, stamp = _split_lp_slow(line)
            parts = _split_unescaped(head, ",")
            tags = self._lp_tags(device, _unescape(parts[0]), parts[1:])
            field_parts = _split_unescaped(field_text, ",", quotes=True)
        else:
            pieces = line.strip().split(" ")
            if len(pieces) != 3:
                raise Rejected(_lp_shape_error(pieces))
            head, field_text, stamp = pieces
            # a device repeats the same measurement+tags in every reading: validate it once (the dict is
            # shared by its points, which never change their tags)
            cache_key = (device, head)
            tags = self._heads.get(cache_key)
            if tags is None:
                measurement, *tag_parts = head.split(",")
                tags = self._lp_tags(device, measurement, tag_parts)
                if len(self._heads) >= 4096:
                    self._heads.clear()
                self._heads[cache_key] = tags
            field_parts = field_text.split(",")
        fields: dict[str, float] = {}
        for part in field_parts:
            key, sep, raw = part.partition("=") if "\\" not in part else _split_pair(part)
            if not sep or not key or not raw:
                raise Rejected(f"malformed field {part!r}")
            fields[key] = _lp_number(key, raw)
        if not (stamp.isascii() and stamp.lstrip("-").isdigit()):
            raise Rejected(f"timestamp {stamp[:40]!r} is not an integer (nanoseconds)")
        if len(stamp) > 19:
            raise Rejected(
                f"timestamp of {len(stamp)} digits is out of range (nanoseconds, at most 19 digits)"
            )
        return self._weather_point(tags, fields, int(stamp), received_ns)

    def _lp_tags(self, device: str, measurement: str, tag_parts: list[str]) -> dict[str, str]:
        if measurement != WEATHER:
            raise Rejected(f"unknown measurement {measurement!r}: expected {WEATHER!r}")
        tags: dict[str, str] = {}
        for part in tag_parts:
            key, sep, value = part.partition("=") if "\\" not in part else _split_pair(part)
            if not sep or not key or not value:
                raise Rejected(f"malformed tag {part!r}")
            if key not in WEATHER_TAGS:
                raise Rejected(f"unknown tag {key!r}: expected {', '.join(WEATHER_TAGS)}")
            _check_text(f"tag {key!r}", value)
            tags[key] = value
        self._check_device(device, tags.get("device"))
        tags["device"] = device
        return tags

    def _json_measurement(self, device: str, text: str, received_ns: int) -> Point:
        data = _json_object(text)
        self._check_device(device, data.get("device"))
        if "time" not in data:
            raise Rejected("missing 'time' (epoch seconds): a timestamp makes redelivery idempotent")
        time_ns = _epoch_ns(data["time"])
        tags = {"device": device}
        for key in ("location", "firmware"):
            if key in data:
                if not isinstance(data[key], str):
                    raise Rejected(f"{key!r} must be a string, got {data[key]!r}")
                if data[key]:
                    tags[key] = data[key]
        fields: dict[str, float] = {}
        for key, value in data.items():
            if key in JSON_META:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                if key not in messages.FIELDS:
                    raise Rejected(_unknown_field(key))
                raise Rejected(f"field {key!r} must be a number, got {value!r}")
            fields[key] = float(value)
        return self._weather_point(tags, fields, time_ns, received_ns)

    def _weather_point(
        self, tags: dict[str, str], values: dict[str, float], time_ns: int, received_ns: int
    ) -> Point:
        if not values:
            raise Rejected("no fields: a measurement needs at least one value")
        self._check_time(time_ns, received_ns)
        flagged = None
        for key, value in values.items():
            bounds = RANGES.get(key)
            if bounds is None:
                raise Rejected(_unknown_field(key))
            if not bounds[0] <= value <= bounds[1]:  # also true for NaN
                if not math.isfinite(value):
                    raise Rejected(f"field {key!r} is {value} (not a finite number)")
                flagged = [*(flagged or ()), f"{key}={value!r}"]
        if flagged:
            fields: dict[str, float | str] = {
                k: v for k, v in values.items() if RANGES[k][0] <= v <= RANGES[k][1]
            }
            fields["flagged"] = ",".join(flagged)
            return Point(WEATHER, tags, fields, time_ns)
        return Point(WEATHER, tags, values, time_ns)

    # -- status and OTA events ----------------------------------------------------------------------

    def _status(self, device: str, text: str, received_ns: int) -> Point:
        data = _json_object(text)
        status = _validated(messages.DeviceStatus, data, "status")
        fields: dict[str, float | int | bool | str] = {"online": status.online}
        for key in ("firmware", "uptime", "heap", "rssi", "boot", "slot"):
            value = getattr(status, key)
            if value is not None:
                fields[key] = _int64(key, value) if isinstance(value, int) else value
        if status.sensors:
            fields["sensors"] = json.dumps(status.sensors, sort_keys=True, separators=(",", ":"))
        return Point(DEVICE_STATUS, {"device": device}, fields, self._event_time(data, received_ns))

    def _ota_event(self, device: str, text: str, received_ns: int) -> Point:
        data = _json_object(text)
        event = _validated(messages.OtaEvent, data, "OTA event")
        if event.percent is not None and not 0 <= event.percent <= 100:
            raise Rejected(f"OTA percent {event.percent} outside 0..100")
        fields: dict[str, float | int | bool | str] = {}
        for key in ("version", "percent", "reason"):
            value = getattr(event, key)
            if value is not None:
                fields[key] = value
        if not fields:
            fields["version"] = ""  # a row needs one field; the event name is the tag
        tags = {"device": device, "event": event.event}
        return Point(OTA_EVENTS, tags, fields, self._event_time(data, received_ns))

    def _event_time(self, data: dict, received_ns: int) -> int:
        """The device's own clock when it sent one (idempotent on redelivery), else the receive time."""
        stamp = data.get("time")
        if stamp is None:
            return received_ns
        time_ns = _epoch_ns(stamp)
        self._check_time(time_ns, received_ns)
        return time_ns

    # -- shared checks ------------------------------------------------------------------------------

    @staticmethod
    def _check_device(topic_device: str, payload_device: object) -> None:
        if payload_device is None:
            return
        if payload_device != topic_device:
            raise Rejected(
                f"device {payload_device!r} in the payload does not match {topic_device!r} in the topic"
            )

    def _check_time(self, time_ns: int, received_ns: int) -> None:
        if time_ns > received_ns + self.policy.max_clock_skew_s * NS:
            ahead = (time_ns - received_ns) / NS
            raise Rejected(
                f"timestamp {time_ns} is {ahead:.0f}s in the future (allowed skew {self.policy.max_clock_skew_s:g}s)"
            )
        if time_ns < self.policy.min_time_ns:
            hint = (
                " (it looks like seconds; line protocol timestamps are nanoseconds)"
                if 1e9 < time_ns < 1e10
                else ""
            )
            raise Rejected(f"timestamp {time_ns} is before 2020: the device clock is not set{hint}")


# -- line protocol helpers (device payloads only: one measurement, float fields) ---------------------


def _lp_number(key: str, raw: str) -> float:
    if raw.isascii() and "_" not in raw:  # float() also takes other scripts' digits and '1_0'
        try:
            return float(raw)  # nan and inf parse here and are refused with the range check
        except ValueError:
            pass
        if _LP_INTEGER.fullmatch(raw):
            return float(int(raw[:-1]))
        if raw[-1] in "iu" and raw[:-1].lstrip("-").isdigit():
            raise Rejected(f"field {key!r}: integer {raw[:24]!r}... has more than {MAX_INT_DIGITS} digits")
    if key not in messages.FIELDS:
        raise Rejected(_unknown_field(key)) from None
    raise Rejected(f"field {key!r} must be a number, got {raw!r}") from None


def _unknown_field(key: str) -> str:
    return f"unknown field {key!r}: expected one of {', '.join(messages.FIELDS)}"


def _lp_shape_error(pieces: list[str]) -> str:
    if len(pieces) == 2 and "=" in pieces[1]:
        return "missing timestamp: devices must send one (nanoseconds) so that redelivery is idempotent"
    return f"malformed line protocol: expected '<measurement>,<tags> <fields> <timestamp>', got {len(pieces)} parts"


def _split_unescaped(text: str, sep: str, quotes: bool = False) -> list[str]:
    parts, current, escaped, quoted = [], [], False, False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            current.append(char)
            escaped = True
        elif quotes and char == '"':
            current.append(char)
            quoted = not quoted
        elif char == sep and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _split_lp_slow(line: str) -> tuple[str, str, str]:
    """Measurement+tags, fields, timestamp of a line with escapes or quotes. Quotes delimit strings only
    in field values; in the tag set a quote is an ordinary character."""
    line = line.strip()
    end, escaped = 0, False
    while end < len(line):
        char = line[end]
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == " ":
            break
        end += 1
    head, rest = line[:end], line[end + 1 :]
    pieces = [p for p in _split_unescaped(rest, " ", quotes=True) if p]
    if len(pieces) != 2:
        raise Rejected(_lp_shape_error([head, *pieces]))
    return head, pieces[0], pieces[1]


def _split_pair(part: str) -> tuple[str, str, str]:
    pieces = _split_unescaped(part, "=")
    if len(pieces) < 2:
        return _unescape(part), "", ""
    return _unescape(pieces[0]), "=", _unescape("=".join(pieces[1:]))


def _unescape(text: str) -> str:
    out, escaped = [], False
    for char in text:
        if escaped or char != "\\":
            out.append(char)
            escaped = False
        else:
            escaped = True
    return "".join(out)


def _json_object(text: str) -> dict:
    try:
        data = json.loads(text, parse_constant=_reject_constant, parse_int=_bounded_int)
    except json.JSONDecodeError as error:
        raise Rejected(f"invalid JSON: {error.msg} at line {error.lineno} column {error.colno}") from None
    except RecursionError:
        raise Rejected("invalid JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise Rejected(f"expected a JSON object, got {type(data).__name__}")
    _check_json_text(data)
    return data


def _reject_constant(name: str) -> float:
    raise Rejected(f"JSON contains {name} (not a finite number)")


def _bounded_int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        raise Rejected(
            f"integer of {len(digits.lstrip('-'))} digits is out of range (at most {MAX_INT_DIGITS})"
        )
    return int(digits)


def _check_json_text(data: dict) -> None:
    """Every key and string value of a parsed object (escapes like `\\ud800` only show up here)."""
    pending: list = [data]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                _check_text("a key", key)
                if isinstance(value, str):
                    _check_text(f"{key[:40]!r}", value)
                elif isinstance(value, dict | list):
                    pending.append(value)
        elif isinstance(item, list):
            for value in item:
                if isinstance(value, str):
                    _check_text("a list item", value)
                elif isinstance(value, dict | list):
                    pending.append(value)


def _check_text(what: str, value: str) -> None:
    if value.isascii() and value.isprintable():
        return  # the common case, checked in C
    bad = _BAD_TEXT.search(value)
    if bad is not None:
        raise Rejected(f"{what} contains {_describe_char(bad.group())}: text must be valid Unicode text")


def _describe_char(char: str) -> str:
    code = ord(char)
    if 0xD800 <= code <= 0xDFFF:
        return f"a lone surrogate (U+{code:04X})"
    if code < 0x20:
        return f"a control character (U+{code:04X})"
    return f"a non-character (U+{code:04X})"


def _int64(key: str, value: int) -> int:
    if not -(2**63) <= value < 2**63:
        raise Rejected(f"{key!r} {value:.6g} is out of range (a signed 64-bit integer)")
    return value


def _epoch_ns(stamp: object) -> int:
    """Epoch seconds (a JSON number) as nanoseconds; bounded before it is scaled (1e300 overflows)."""
    if isinstance(stamp, bool) or not isinstance(stamp, int | float) or not math.isfinite(stamp):
        raise Rejected(f"'time' must be a number of epoch seconds, got {str(stamp)[:40]!r}")
    if not -MAX_EPOCH_SECONDS < stamp < MAX_EPOCH_SECONDS:
        raise Rejected(f"'time' {stamp:.6g} is out of range for epoch seconds")
    # to the microsecond: a JSON double holds a millisecond fraction of today's epoch exactly that far
    # (1767225600.123 * NS would come out a few hundred ns off)
    return round(stamp * 1_000_000) * (NS // 1_000_000)


def _validated(model: type[_Payload], data: dict, what: str) -> _Payload:
    """`data` as a `model` payload, or Rejected with the first three problems ("invalid <what>: ...")."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        problems = (f"{'.'.join(map(str, e['loc'])) or 'payload'}: {e['msg']}" for e in error.errors()[:3])
        raise Rejected(f"invalid {what}: {'; '.join(problems)}") from None
