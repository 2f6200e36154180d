"""Decoder of the plain JSON contract (docs/mqtt.md)."""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, cast

import orjson

from ingest.models import (
    EVENT_KINDS,
    MACHINE_STATES,
    Decoded,
    Event,
    MachineRef,
    MachineStateName,
    Rejected,
    Samples,
)
from ingest.topics import JsonTopic

EPOCH_FLOOR = datetime(2000, 1, 1, tzinfo=UTC)
MAX_METRICS = 1000
MAX_SAMPLES = 1000
MAX_NAME_CHARS = 128  # metric names, event ids and codes: short enough for any btree index


def decode(topic: JsonTopic, payload: bytes, *, now: datetime, max_skew: timedelta) -> Decoded:
    """Decode one JSON message, or raise ``Rejected`` with the reason."""
    body = _parse(payload)
    machine = _machine(topic.tenant, topic.serial)
    if topic.kind == "events":
        time = parse_time(body.get("ts"), now=now, max_skew=max_skew)
        return Decoded(events=[_event(machine, time, body, payload)])
    if "samples" not in body:
        time = parse_time(body.get("ts"), now=now, max_skew=max_skew)
        return Decoded(samples=[_samples(machine, time, body)])
    # A gateway that buffered while offline sends its backlog as one message.
    batch = body["samples"]
    if not isinstance(batch, list) or not batch or len(batch) > MAX_SAMPLES:
        raise Rejected(f"'samples' must be a list of 1 to {MAX_SAMPLES} objects")
    decoded = Decoded()
    for n, item in enumerate(batch):
        if not isinstance(item, dict):
            raise Rejected(f"samples[{n}] must be an object, got {type(item).__name__}")
        try:
            time = parse_time(item.get("ts"), now=now, max_skew=max_skew)
            decoded.samples.append(_samples(machine, time, item))
        except Rejected as exc:
            raise Rejected(f"samples[{n}]: {exc.reason}") from None
    return decoded


@lru_cache(maxsize=65536)
def _machine(tenant: str, serial: str) -> MachineRef:
    return MachineRef(tenant, serial)


def _parse(payload: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        if any(word in payload for word in (b"NaN", b"Infinity")):
            raise Rejected("payload contains NaN or Infinity, which JSON does not allow;"
                           " leave the metric out or send null-free numbers") from exc
        raise Rejected(f"payload is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise Rejected(f"payload must be a JSON object, got {type(body).__name__}")
    return body


def parse_time(value: object, *, now: datetime, max_skew: timedelta) -> datetime:
    """Read ``ts``: epoch milliseconds, or an RFC 3339 string with a zone."""
    if value is None:
        raise Rejected("'ts' is missing: every message needs the time it was measured"
                       " (epoch milliseconds or RFC 3339 with zone)")
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise Rejected(f"'ts' must be epoch milliseconds or an RFC 3339 string, got"
                       f" {type(value).__name__}")
    if isinstance(value, str):
        try:
            time = datetime.fromisoformat(value)
        except ValueError:
            raise Rejected(f"'ts' {value!r} is not an RFC 3339 time") from None
        if time.tzinfo is None:
            raise Rejected(f"'ts' {value!r} has no time zone; add Z or an offset")
        try:
            time = time.astimezone(UTC)
        except OverflowError:  # year 1 or 9999 shifted by its offset leaves the calendar
            raise Rejected(f"'ts' {value!r} is out of range") from None
    else:
        if not math.isfinite(value):
            raise Rejected("'ts' is not a finite number")
        try:
            time = datetime.fromtimestamp(value / 1000, UTC)
        except (OverflowError, OSError, ValueError):
            raise Rejected(f"'ts' {value!r} is out of range for epoch milliseconds") from None
    if time < EPOCH_FLOOR:
        raise Rejected(f"'ts' {time.isoformat()} is before 2000-01-01: a device clock that was"
                       " never set (or seconds sent where milliseconds are expected)")
    if time > now + max_skew:
        raise Rejected(f"'ts' {time.isoformat()} is in the future (more than"
                       f" {max_skew} ahead of the server clock {now.isoformat()})")
    return time


def _samples(machine: MachineRef, time: datetime, body: dict[str, Any]) -> Samples:
    metrics = body.get("metrics", {})
    if not isinstance(metrics, dict):
        raise Rejected(f"'metrics' must be an object of name -> number, got"
                       f" {type(metrics).__name__}")
    if len(metrics) > MAX_METRICS:
        raise Rejected(f"{len(metrics)} metrics in one message; at most {MAX_METRICS}")
    values: dict[str, float] = {}
    for name, value in metrics.items():
        check_metric_name(name)
        values[name] = _number(name, value)
    state = body.get("state")
    if state is not None and (not isinstance(state, str) or state not in MACHINE_STATES):
        raise Rejected(f"'state' {state!r} is not one of {sorted(MACHINE_STATES)}")
    if not values and state is None:
        raise Rejected("telemetry message has neither 'metrics' nor 'state': nothing to store")
    return Samples(machine, time, values, cast("MachineStateName | None", state))


@lru_cache(maxsize=8192)  # names repeat in every message; invalid ones raise, not cached
def check_metric_name(name: str) -> None:
    """Metric names become rows of ``metrics``: keep them short and printable.

    Any printable text is a name ("Temp (C)", "Speed %", "Temp °C"): 1-128 characters, no
    control characters (so no NUL, which PostgreSQL text cannot hold), not only spaces.
    """
    if not 0 < len(name) <= MAX_NAME_CHARS or not name.isprintable() or name.isspace():
        raise Rejected(f"metric name {name[:80]!r} is not valid: 1-{MAX_NAME_CHARS} printable"
                       " characters (no control characters), not only spaces")


def _number(name: str, value: object) -> float:
    if type(value) is float and math.isfinite(value):  # the common case, first
        return value
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if not isinstance(value, int | float):
        raise Rejected(f"metric {name!r} has a {type(value).__name__} value {str(value)[:40]!r};"
                       " metrics are numbers (booleans count as 0/1)")
    try:
        number = float(value)
    except OverflowError:
        raise Rejected(f"metric {name!r} is too large for a double") from None
    if not math.isfinite(number):
        raise Rejected(f"metric {name!r} is not a finite number")
    return number


def _event(machine: MachineRef, time: datetime, body: dict[str, Any], raw: bytes) -> Event:
    kind = body.get("type")
    if not isinstance(kind, str) or kind not in EVENT_KINDS:
        raise Rejected(f"event 'type' {kind!r} is not one of {sorted(EVENT_KINDS)}")
    code = body.get("code")
    if code is not None and not isinstance(code, str | int):
        raise Rejected(f"event 'code' must be a string, got {type(code).__name__}")
    if code is not None and len(str(code)) > MAX_NAME_CHARS:
        raise Rejected(f"event 'code' is {len(str(code))} characters long; at most"
                       f" {MAX_NAME_CHARS} (put long text in another field, e.g. 'text')")
    event_id = body.get("id")
    if event_id is not None and (isinstance(event_id, bool) or event_id == ""
                                 or not isinstance(event_id, str | int)):
        raise Rejected(f"event 'id' must be a non-empty string, got {type(event_id).__name__}"
                       f" {event_id!r:.40}")
    if event_id is not None and len(str(event_id)) > MAX_NAME_CHARS:
        raise Rejected(f"event 'id' is {len(str(event_id))} characters long; at most"
                       f" {MAX_NAME_CHARS}: it is the event's key in an index")
    # Without an id, the payload's digest is the key: a redelivery is the same bytes.
    key = str(event_id) if event_id is not None else hashlib.sha256(raw).hexdigest()[:32]
    payload = orjson.dumps(body)
    if b"\\u0000" in payload:
        raise Rejected("event payload contains a NUL character (\\u0000), which jsonb cannot store")
    return Event(machine, time, kind, None if code is None else str(code), key, payload)
