"""The plain JSON contract: what is stored from a message, and what a publisher is told if not."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from ingest import json_contract
from ingest.models import Event, MachineRef, Rejected, Samples
from ingest.topics import JsonTopic

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)  # 1_740_830_400 s since the epoch
NOW_MS = 1_740_830_400_000
SKEW = timedelta(hours=1)
TELEMETRY = JsonTopic("acme", "SN-1", "telemetry")
EVENTS = JsonTopic("acme", "SN-1", "events")
MACHINE = MachineRef("acme", "SN-1")


def decode(topic: JsonTopic, body: Any) -> Samples | Event:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    decoded = json_contract.decode(topic, raw, now=NOW, max_skew=SKEW)
    items = [*decoded.samples, *decoded.events]
    assert len(items) == 1
    assert not decoded.gaps
    assert not decoded.connectivity
    return items[0]


def reason(topic: JsonTopic, body: Any) -> str:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    with pytest.raises(Rejected) as caught:
        json_contract.decode(topic, raw, now=NOW, max_skew=SKEW)
    return caught.value.reason


# -- telemetry -----------------------------------------------------------------------------


def test_telemetry_with_epoch_milliseconds() -> None:
    # 2024-05-01T10:00:00.123Z is 1_714_557_600_123 ms (date -u -d @1714557600).
    samples = decode(TELEMETRY, {"ts": 1_714_557_600_123, "state": "running",
                                 "metrics": {"operating_hours": 1234.5, "spindle_rpm": 8000}})
    assert samples == Samples(
        MACHINE, datetime(2024, 5, 1, 10, 0, 0, 123_000, tzinfo=UTC),
        {"operating_hours": 1234.5, "spindle_rpm": 8000.0}, "running")
    assert isinstance(samples.values["spindle_rpm"], float)


@pytest.mark.parametrize(("ts", "expected"), [
    ("2024-05-01T12:00:00+02:00", datetime(2024, 5, 1, 10, 0, tzinfo=UTC)),
    ("2024-05-01T10:00:00Z", datetime(2024, 5, 1, 10, 0, tzinfo=UTC)),
    ("2024-05-01T05:30:00.250-04:30", datetime(2024, 5, 1, 10, 0, 0, 250_000, tzinfo=UTC)),
    (1_714_557_600_000.5, datetime(2024, 5, 1, 10, 0, 0, 500, tzinfo=UTC)),
])
def test_ts_as_rfc3339_with_zone_or_fractional_ms_is_read_as_utc(ts: Any,
                                                                 expected: datetime) -> None:
    samples = decode(TELEMETRY, {"ts": ts, "metrics": {"a": 1}})
    assert isinstance(samples, Samples)
    assert samples.time == expected
    assert samples.time.utcoffset() == timedelta(0)


def test_booleans_count_as_zero_and_one() -> None:
    samples = decode(TELEMETRY, {"ts": NOW_MS, "metrics": {"door_open": True, "alarm": False}})
    assert isinstance(samples, Samples)
    assert samples.values == {"door_open": 1.0, "alarm": 0.0}


def test_state_alone_is_enough() -> None:
    samples = decode(TELEMETRY, {"ts": NOW_MS, "state": "fault"})
    assert samples == Samples(MACHINE, NOW, {}, "fault")


@pytest.mark.parametrize("name", ["a", "x" * 128, "°" * 128, "Spindle/Speed rpm",
                                  "axis.x:pos-1_a", "Temp (C)", "Speed %", "Temp °C", "temp°C",
                                  "Druck [bar]", "温度", " leading space", "a+b=c, #1 @ 50µm"])
def test_metric_names_within_the_contract(name: str) -> None:
    samples = decode(TELEMETRY, {"ts": NOW_MS, "metrics": {name: 2}})
    assert isinstance(samples, Samples)
    assert samples.values == {name: 2.0}


def test_time_boundaries_are_inclusive() -> None:
    floor = decode(TELEMETRY, {"ts": 946_684_800_000, "metrics": {"a": 1}})  # 2000-01-01Z
    assert floor.time == datetime(2000, 1, 1, tzinfo=UTC)
    ahead = decode(TELEMETRY, {"ts": NOW_MS + 3_600_000, "metrics": {"a": 1}})
    assert ahead.time == NOW + SKEW


@pytest.mark.parametrize(("body", "words"), [
    (b"not json", ["not valid JSON"]),
    (b'{"ts": 1740830400000, "metrics": {"a": NaN}}', ["NaN or Infinity"]),
    (b'{"ts": 1740830400000, "metrics": {"a": Infinity}}', ["NaN or Infinity"]),
    (b'{"ts": 1740830400000, "metrics": {"a": 1e400}}', ["not valid JSON"]),
    (b"", ["not valid JSON"]),
    ([1, 2], ["must be a JSON object", "list"]),
    ("text", ["must be a JSON object", "str"]),
    ({"metrics": {"a": 1}}, ["'ts' is missing"]),
    ({"ts": None, "metrics": {"a": 1}}, ["'ts' is missing"]),
    ({"ts": True, "metrics": {"a": 1}}, ["'ts' must be epoch milliseconds", "bool"]),
    ({"ts": [1], "metrics": {"a": 1}}, ["'ts' must be epoch milliseconds", "list"]),
    ({"ts": "yesterday", "metrics": {"a": 1}}, ["not an RFC 3339 time"]),
    ({"ts": "2024-05-01T10:00:00", "metrics": {"a": 1}}, ["has no time zone"]),
    ({"ts": 946_684_799_999, "metrics": {"a": 1}}, ["before 2000-01-01"]),
    # Seconds where milliseconds are expected: 1.7e9 ms is January 1970.
    ({"ts": 1_740_830_400, "metrics": {"a": 1}}, ["before 2000-01-01", "seconds"]),
    ({"ts": "1999-12-31T23:59:59Z", "metrics": {"a": 1}}, ["before 2000-01-01"]),
    ({"ts": NOW_MS + 3_600_001, "metrics": {"a": 1}}, ["in the future"]),
    ({"ts": "2025-03-02T12:00:00Z", "metrics": {"a": 1}}, ["in the future"]),
    ({"ts": 1e300, "metrics": {"a": 1}}, ["out of range"]),
    ({"ts": NOW_MS, "metrics": [1, 2]}, ["'metrics' must be an object", "list"]),
    ({"ts": NOW_MS, "metrics": {"a": "12.5"}}, ["metric 'a'", "str value", "numbers"]),
    ({"ts": NOW_MS, "metrics": {"a": None}}, ["metric 'a'", "NoneType"]),
    ({"ts": NOW_MS, "metrics": {"a": {"v": 1}}}, ["metric 'a'", "dict"]),
    ({"ts": NOW_MS, "metrics": {"": 1}}, ["metric name", "not valid"]),
    ({"ts": NOW_MS, "metrics": {"x" * 129: 1}}, ["metric name", "1-128"]),
    ({"ts": NOW_MS, "metrics": {"°" * 129: 1}}, ["metric name", "1-128"]),
    ({"ts": NOW_MS, "metrics": {"   ": 1}}, ["metric name '   '", "not only spaces"]),
    ({"ts": NOW_MS, "metrics": {"a\u0000b": 1}}, ["metric name 'a\\x00b'", "printable"]),
    ({"ts": NOW_MS, "metrics": {"temp\nC": 1}}, ["metric name 'temp\\nC'", "printable"]),
    ({"ts": NOW_MS, "metrics": {"temp\tC": 1}}, ["metric name", "printable"]),
    ({"ts": NOW_MS, "metrics": {"temp\u00a0C": 1}}, ["metric name", "printable"]),  # no-break
    ({"ts": NOW_MS, "metrics": {"temp\u200bC": 1}}, ["metric name", "printable"]),  # zero-width
    ({"ts": NOW_MS, "metrics": {f"m{i}": i for i in range(1001)}}, ["1001 metrics", "1000"]),
    ({"ts": NOW_MS, "state": "broken"}, ["'state' 'broken'", "running"]),
    ({"ts": NOW_MS, "state": "RUNNING"}, ["'state' 'RUNNING'"]),
    ({"ts": NOW_MS, "state": ["running"]}, ["'state'"]),
    ({"ts": NOW_MS, "state": {"running": True}}, ["'state'"]),
    ({"ts": NOW_MS}, ["neither 'metrics' nor 'state'"]),
    ({"ts": NOW_MS, "metrics": {}}, ["neither 'metrics' nor 'state'"]),
])
def test_bad_telemetry_is_rejected_with_the_reason(body: Any, words: list[str]) -> None:
    text = reason(TELEMETRY, body)
    for word in words:
        assert word in text


def test_one_bad_metric_rejects_the_whole_message() -> None:
    text = reason(TELEMETRY, {"ts": NOW_MS, "metrics": {"good": 1, "bad": "x"}})
    assert "metric 'bad'" in text


# -- events --------------------------------------------------------------------------------


def test_event_with_publisher_id() -> None:
    body = {"ts": NOW_MS, "type": "fault", "code": "E42", "id": "ev-1", "text": "spindle"}
    event = decode(EVENTS, body)
    assert isinstance(event, Event)
    assert (event.machine, event.time, event.kind, event.code, event.key) == (
        MACHINE, NOW, "fault", "E42", "ev-1")
    assert orjson.loads(event.payload) == body


def test_event_without_id_is_keyed_by_the_digest_of_its_bytes() -> None:
    raw = b'{"ts": 1740830400000, "type": "maintenance"}'
    event = decode(EVENTS, raw)
    assert isinstance(event, Event)
    assert event.key == hashlib.sha256(raw).hexdigest()[:32]
    assert event.code is None
    # The same bytes again (a redelivery) give the same key; other bytes another.
    assert decode(EVENTS, raw).key == event.key
    assert decode(EVENTS, raw.replace(b"}", b', "x": 1}')).key != event.key


def test_event_id_and_code_of_128_characters() -> None:
    event = decode(EVENTS, {"ts": NOW_MS, "type": "alarm", "code": "c" * 128, "id": "i" * 128})
    assert isinstance(event, Event)
    assert (event.code, event.key) == ("c" * 128, "i" * 128)


def test_numeric_event_code_and_id_become_text() -> None:
    event = decode(EVENTS, {"ts": NOW_MS, "type": "alarm", "code": 17, "id": 99})
    assert isinstance(event, Event)
    assert (event.code, event.key) == ("17", "99")


@pytest.mark.parametrize("kind", ["fault", "fault_cleared", "alarm", "maintenance",
                                  "part_replaced"])
def test_every_event_kind_of_the_contract(kind: str) -> None:
    event = decode(EVENTS, {"ts": NOW_MS, "type": kind})
    assert isinstance(event, Event)
    assert event.kind == kind


@pytest.mark.parametrize(("body", "words"), [
    ({"ts": NOW_MS, "type": "explosion"}, ["event 'type' 'explosion'", "fault"]),
    ({"ts": NOW_MS, "type": "online"}, ["event 'type' 'online'"]),  # only Sparkplug says that
    ({"ts": NOW_MS}, ["event 'type' None"]),
    ({"ts": NOW_MS, "type": ["fault"]}, ["event 'type'"]),
    ({"ts": NOW_MS, "type": {"fault": 1}}, ["event 'type'"]),
    ({"ts": NOW_MS, "type": "fault", "code": [1]}, ["'code' must be a string", "list"]),
    ({"ts": NOW_MS, "type": "fault", "id": {"a": 1}}, ["'id' must be a non-empty string", "dict"]),
    ({"ts": NOW_MS, "type": "fault", "id": ""}, ["'id' must be a non-empty string"]),
    ({"ts": NOW_MS, "type": "fault", "id": True}, ["'id' must be a non-empty string", "bool"]),
    ({"ts": NOW_MS, "type": "fault", "text": "a\u0000b"}, ["NUL character"]),
    # Both are indexed or shown in lists: a megabyte of id would stall the database.
    ({"ts": NOW_MS, "type": "fault", "id": "i" * 129},
     ["event 'id'", "129 characters", "at most 128"]),
    ({"ts": NOW_MS, "type": "fault", "id": "é" * 10_000},
     ["event 'id'", "10000 characters", "at most 128"]),
    ({"ts": NOW_MS, "type": "fault", "code": "c" * 129},
     ["event 'code'", "129 characters", "at most 128"]),
    ({"type": "fault"}, ["'ts' is missing"]),
])
def test_bad_events_are_rejected_with_the_reason(body: Any, words: list[str]) -> None:
    text = reason(EVENTS, body)
    for word in words:
        assert word in text


@pytest.mark.parametrize("ts", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00",
                                "0001-01-01T00:00:00+00:00"])
def test_times_at_the_ends_of_the_calendar_are_rejected(ts: str) -> None:
    text = reason(TELEMETRY, {"ts": ts, "metrics": {"a": 1}})
    assert "'ts'" in text
