"""The validating parser: every rule of issue 6, and that bad input gets a clear reason."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from weatherfleet.ingest.parsing import MessageParser, Rejected
from weatherfleet.ingest.records import Point, to_line_protocol

NOW = 1_764_000_000_000_000_000  # 2025-11-24
TOPIC = "sensors/dev-01/measurements"
parser = MessageParser()


def parse(payload: str | bytes, topic: str = TOPIC) -> list[Point]:
    return parser.parse(topic, payload.encode() if isinstance(payload, str) else payload, NOW)


def rejected(payload: str | bytes, topic: str = TOPIC) -> str:
    with pytest.raises(Rejected) as error:
        parse(payload, topic)
    return error.value.reason


def test_line_protocol_reading() -> None:
    [point] = parse(
        f"weather,device=dev-01,location=lab,firmware=1.2.0 temperature=21.5,humidity=40.1,pressure=1013.2,"
        f"co2=415,pm25=3.1,pm10=5.2 {NOW}"
    )
    assert point.table == "weather"
    assert point.tags == {"device": "dev-01", "location": "lab", "firmware": "1.2.0"}
    assert point.fields == {
        "temperature": 21.5,
        "humidity": 40.1,
        "pressure": 1013.2,
        "co2": 415.0,
        "pm25": 3.1,
        "pm10": 5.2,
    }
    assert point.time_ns == NOW


def test_line_protocol_with_escaped_tag_values_and_several_lines() -> None:
    points = parse(
        f"weather,device=dev-01,location=Living\\ Room\\,\\ north temperature=20 {NOW}\n"
        f"weather,device=dev-01,location=Living\\ Room\\,\\ north temperature=20.5 {NOW + 1}\n"
    )
    assert [p.tags["location"] for p in points] == ["Living Room, north"] * 2
    assert [p.fields["temperature"] for p in points] == [20.0, 20.5]


def test_json_reading() -> None:
    [point] = parse(json.dumps({"device": "dev-01", "location": "lab", "time": NOW / 1e9, "co2": 800}))
    assert point.fields == {"co2": 800.0}
    assert point.tags == {"device": "dev-01", "location": "lab"}
    assert point.time_ns == NOW


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (f"rain,device=dev-01 mm=1 {NOW}", "unknown measurement 'rain'"),
        (f"weather,device=dev-01 wind=3 {NOW}", "unknown field 'wind'"),
        (f"weather,device=dev-01,room=a temperature=3 {NOW}", "unknown tag 'room'"),
        (f'weather,device=dev-01 temperature="warm" {NOW}', "field 'temperature' must be a number"),
        (f"weather,device=dev-01 temperature=true {NOW}", "field 'temperature' must be a number"),
        (f"weather,device=dev-01 temperature=NaN {NOW}", "not a finite number"),
        (f"weather,device=dev-01 temperature=inf {NOW}", "not a finite number"),
        ("weather,device=dev-01 temperature=21.5", "missing timestamp"),
        (f"weather,device=dev-02 temperature=21.5 {NOW}", "does not match 'dev-01' in the topic"),
        (f"weather,device=dev-01 temperature=21.5 {NOW + 3600 * 10**9}", "3600s in the future"),
        ("weather,device=dev-01 temperature=21.5 1764000000", "looks like seconds"),
        ("weather,device=dev-01 temperature=21.5 12", "device clock is not set"),
        ("weather,device=dev-01 temperature=21.5 soon", "not an integer"),
        ("", "empty line protocol payload"),
        (
            f"weather,device=dev-01 temperature=1 {NOW}\nweather,device=dev-01 wind=1 {NOW}",
            "line 2: unknown field",
        ),
        ('{"device": "dev-01", "temperature": 21}', "missing 'time'"),
        ('{"device": "dev-01", "time": 1764000000, "temperature": NaN}', "JSON contains NaN"),
        ('{"device": "dev-01", "time": 1764000000, "temperature": "21"}', "must be a number"),
        ('{"device": "dev-01", "time": 1764000000, "temperature": true}', "must be a number"),
        ('{"device": "dev-01", "time": 1764000000, "wind": 3}', "unknown field 'wind'"),
        ('{"device": "dev-01", "time": 1764000000}', "no fields"),
        ('{"device": "dev-9", "time": 1764000000, "co2": 3}', "does not match"),
        ('{"device": "dev-01", "time": 1764000000, "co2": 3', "invalid JSON"),
        ("[1, 2]", "expected '<measurement>"),
        ("[1, 2", "expected '<measurement>"),
    ],
)
def test_bad_measurements_are_rejected_with_a_reason(payload: str, reason: str) -> None:
    assert reason in rejected(payload)


def test_non_utf8_and_oversized_payloads() -> None:
    assert "not UTF-8" in rejected(b"weather \xff\xfe")
    assert "exceeds" in rejected(b"x" * (64 * 1024 + 1))


def test_topics_must_follow_the_contract() -> None:
    assert "unexpected topic" in rejected("{}", "sensors/dev-01")
    assert "unexpected topic" in rejected("{}", "other/dev-01/measurements")
    assert "unknown message kind 'logs'" in rejected("{}", "sensors/dev-01/logs")


def test_out_of_range_values_are_flagged_not_dropped() -> None:
    [point] = parse(f"weather,device=dev-01 temperature=150,humidity=-3,pressure=1000 {NOW}")
    assert point.fields == {"pressure": 1000.0, "flagged": "temperature=150.0,humidity=-3.0"}
    [only] = parse(f"weather,device=dev-01 co2=50000 {NOW}")
    assert only.fields == {"flagged": "co2=50000.0"}


def test_status_message() -> None:
    [point] = parse(
        json.dumps(
            {
                "online": True,
                "firmware": "1.2.0",
                "heap": 81234,
                "rssi": -61,
                "uptime": 77,
                "sensors": {"bme280": "ok"},
            }
        ),
        "sensors/dev-01/status",
    )
    assert point.table == "device_status" and point.tags == {"device": "dev-01"}
    assert point.fields == {
        "online": True,
        "firmware": "1.2.0",
        "uptime": 77,
        "heap": 81234,
        "rssi": -61,
        "sensors": '{"bme280":"ok"}',
    }
    assert point.time_ns == NOW  # no device time: the receive time
    [will] = parse('{"online": false}', "sensors/dev-01/status")
    assert will.fields == {"online": False}
    assert "invalid status" in rejected('{"firmware": "1.0"}', "sensors/dev-01/status")


def test_ota_event() -> None:
    [point] = parse(
        '{"event": "downloading", "version": "1.3.0", "percent": 40, "time": 1764000000}',
        "sensors/dev-01/ota",
    )
    assert point.table == "ota_events"
    assert point.tags == {"device": "dev-01", "event": "downloading"}
    assert point.fields == {"version": "1.3.0", "percent": 40}
    assert point.time_ns == 1_764_000_000 * 10**9
    assert "invalid OTA event" in rejected('{"event": "exploded"}', "sensors/dev-01/ota")
    assert "outside 0..100" in rejected('{"event": "downloading", "percent": 140}', "sensors/dev-01/ota")


finite = st.floats(min_value=-40, max_value=85, allow_nan=False)


@given(
    location=st.text(
        alphabet=st.characters(min_codepoint=32, max_codepoint=0x2FF, exclude_characters="\n\r"),
        min_size=1,
        max_size=20,
    ),
    temperature=finite,
    offset=st.integers(min_value=0, max_value=10**12),
)
def test_line_protocol_written_by_ingest_parses_back(location: str, temperature: float, offset: int) -> None:
    """What `to_line_protocol` writes (the InfluxDB wire and the spool's form) is what a device may send."""
    if not location.strip() or location != location.strip() or "\\" in location:
        return
    point = Point(
        "weather", {"device": "dev-01", "location": location}, {"temperature": temperature}, NOW - offset
    )
    [back] = parse(to_line_protocol(point))
    assert back.tags == point.tags
    assert back.fields == point.fields
    assert back.time_ns == point.time_ns


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash_the_parser(payload: bytes) -> None:
    for topic in (TOPIC, "sensors/dev-01/status", "sensors/dev-01/ota"):
        with contextlib.suppress(Rejected):
            parser.parse(topic, payload, NOW)
