"""Whatever arrives, a decoder answers with what to store or with ``Rejected``: never a crash.

Bytes are thrown at the JSON decoder and at the Sparkplug host for every message type, and so are
well-formed messages with hostile content: JSON of any shape, and protobuf built field by field on
the wire (independently of our schema), with names that are not UTF-8, any integer in any field,
NaN, and seq and timestamps of any size. What a decoder does accept must be storable.
"""

from __future__ import annotations

import json
import math
import struct
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest import json_contract, topics
from ingest.json_contract import EPOCH_FLOOR, check_metric_name
from ingest.models import EVENT_KINDS, MACHINE_STATES, Decoded, MachineRef, Rejected
from ingest.sparkplug import Outcome, SparkplugHost

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
NOW_MS = 1_740_830_400_000
SKEW = timedelta(hours=1)
GROUP, NODE = "plant1", "edge-7"
SPARKPLUG_KINDS = sorted(topics.SPARKPLUG_TYPES)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- protobuf wire format, written by hand --------------------------------------------------

VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5
UINT64 = st.integers(0, 2**64 - 1)


def _varint(number: int) -> bytes:
    out = bytearray()
    while True:
        byte = number & 0x7F
        number >>= 7
        if number:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, wire: int, value: int | bytes) -> bytes:
    tag = _varint(number << 3 | wire)
    if wire == VARINT:
        assert isinstance(value, int)
        return tag + _varint(value)
    assert isinstance(value, bytes)
    if wire == LENGTH:
        return tag + _varint(len(value)) + value
    return tag + value  # fixed32 / fixed64, already packed


def _text(strategy: st.SearchStrategy[str]) -> st.SearchStrategy[bytes]:
    return strategy.map(lambda s: s.encode("utf-8", "surrogatepass"))


NAMES = st.one_of(
    _text(st.sampled_from(["bdSeq", "State", "Machine/State", "Node Control/Rebirth",
                           "Properties/Serial Number", "Operating Hours", "Speed", "Temp",
                           "properties/serial_number"])),
    _text(st.text(max_size=20)),
    st.binary(max_size=20),  # mostly not UTF-8
)
STATES = _text(st.sampled_from(["running", "IDLE", "fault", "off", "broken", ""]))
# Timestamps the host accepts (2000 .. now + skew), and any other uint64.
TIMESTAMPS = st.one_of(st.integers(NOW_MS - 10**9, NOW_MS + 3_600_000), UINT64)
def _float32(number: float) -> bytes:
    if not math.isnan(number) and abs(number) > 3e38:  # past float32: its infinity
        number = math.copysign(math.inf, number)
    return struct.pack("<f", number)


# Plain random floats are rarely special: ask for the special ones by name.
FLOATS = st.one_of(st.sampled_from([math.nan, math.inf, -math.inf, 1e300, -1e300, 2.0**64,
                                    2.5, -0.0]), st.floats())
VALUES = st.one_of(
    st.tuples(st.just(10), st.just(VARINT), st.integers(0, 2**32 - 1)),        # int_value
    st.tuples(st.just(11), st.just(VARINT), UINT64),                           # long_value
    st.tuples(st.just(12), st.just(FIXED32), FLOATS.map(_float32)),            # float_value
    st.tuples(st.just(13), st.just(FIXED64), FLOATS.map(
        lambda f: struct.pack("<d", f))),                                      # double_value
    st.tuples(st.just(14), st.just(VARINT), st.integers(0, 1)),                # boolean_value
    st.tuples(st.just(15), st.just(LENGTH), st.one_of(  # string_value, serials among them
        STATES, st.binary(max_size=20), _text(st.text(min_size=60, max_size=70)))),
    st.tuples(st.integers(16, 19), st.just(LENGTH), st.binary(max_size=20)),   # bytes, sets...
)


@st.composite
def wire_metrics(draw: st.DrawFn) -> bytes:
    parts = []
    if draw(st.booleans()):
        parts.append(_field(1, LENGTH, draw(NAMES)))
    if draw(st.booleans()):
        parts.append(_field(2, VARINT, draw(st.one_of(st.integers(0, 5), UINT64))))
    if draw(st.booleans()):
        parts.append(_field(3, VARINT, draw(TIMESTAMPS)))
    if draw(st.booleans()):
        parts.append(_field(4, VARINT, draw(st.one_of(st.integers(0, 20), UINT64))))
    if draw(st.integers(0, 4)) == 0:
        parts.append(_field(7, VARINT, 1))  # is_null
    if draw(st.booleans()):
        number, wire, value = draw(VALUES)
        parts.append(_field(number, wire, value))
    return b"".join(parts)


@st.composite
def bd_seq_metrics(draw: st.DrawFn) -> bytes:
    """``bdSeq`` (read by NBIRTH and NDEATH) with any value in any field."""
    number, wire, value = draw(VALUES)
    return (_field(1, LENGTH, b"bdSeq") + _field(4, VARINT, draw(st.integers(0, 13)))
            + _field(number, wire, value))


@st.composite
def wire_payloads(draw: st.DrawFn) -> bytes:
    parts = []
    if draw(st.integers(0, 5)):
        parts.append(_field(1, VARINT, draw(TIMESTAMPS)))
    if draw(st.booleans()):
        parts.append(_field(2, LENGTH, draw(bd_seq_metrics())))
    for metric in draw(st.lists(wire_metrics(), max_size=6)):
        parts.append(_field(2, LENGTH, metric))
    if draw(st.integers(0, 5)):
        parts.append(_field(3, VARINT, draw(st.one_of(st.integers(0, 255), UINT64))))
    if draw(st.integers(0, 5)) == 0:
        parts.append(_field(4, LENGTH, draw(st.binary(max_size=10))))  # uuid
    return b"".join(parts)


SPARKPLUG_PAYLOADS = st.one_of(st.binary(max_size=200), wire_payloads())


def _route(kind: str, device: str) -> topics.SparkplugTopic:
    topic = f"spBv1.0/{GROUP}/{kind}/{NODE}" + (f"/{device}" if kind.startswith("D") else "")
    route = topics.parse(topic)
    assert isinstance(route, topics.SparkplugTopic)
    return route


def _handle(host: SparkplugHost, kind: str, device: str, raw: bytes,
            now: datetime) -> Outcome | None:
    try:
        outcome = host.handle(_route(kind, device), raw, now=now)
    except Rejected:
        return None
    assert outcome.rejected is None or outcome.rejected.strip()
    _check_storable(outcome.decoded, now=now)
    for gap in outcome.decoded.gaps:
        assert 0 <= gap.received_seq <= 255, gap
        assert gap.expected_seq is None or 0 <= gap.expected_seq <= 255, gap
        assert gap.missing is None or 0 < gap.missing < 256, gap
    for command in outcome.commands:
        assert command.topic == f"spBv1.0/{GROUP}/NCMD/{NODE}"
    return outcome


def _check_storable(decoded: Decoded, *, now: datetime) -> None:
    """What a decoder accepted can be written: the store's COPY and inserts take it as is."""
    for samples in decoded.samples:
        assert EPOCH_FLOOR <= samples.time <= now + SKEW
        assert samples.time.utcoffset() == timedelta(0)
        assert samples.values or samples.state is not None
        assert samples.state is None or samples.state in MACHINE_STATES
        for name, value in samples.values.items():
            check_metric_name(name)
            assert isinstance(value, float)
            assert math.isfinite(value)
        _check_machine(samples.machine)
    for event in decoded.events:
        _check_machine(event.machine)
        assert EPOCH_FLOOR <= event.time <= now + SKEW
        assert event.kind in EVENT_KINDS | {"online", "offline"}
        assert isinstance(event.key, str)
        assert 0 < len(event.key) <= 128  # a key of a btree index
        assert event.code is None or len(event.code) <= 128
        assert b"\\u0000" not in event.payload
        json.loads(event.payload)
    for machine, online, time in decoded.connectivity:
        _check_machine(machine)
        assert isinstance(online, bool)
        assert time.tzinfo is not None


def _check_machine(machine: MachineRef) -> None:
    """Serials and Sparkplug ids are keys of btree indexes: short, and text PostgreSQL takes."""
    assert isinstance(machine.serial, str)
    assert isinstance(machine.tenant, str)
    assert "\x00" not in machine.serial
    if machine.protocol == "json":
        assert 0 < len(machine.serial) <= 64
        return
    ids = [machine.spb_group, machine.spb_edge_node, machine.spb_device]
    assert all(isinstance(i, str) and len(i) <= 64 for i in ids), ids
    assert 0 < len(machine.serial) <= 64 or machine.serial == "/".join(i for i in ids if i)


def _birth_state(host: SparkplugHost) -> dict[Any, Any]:
    """What births establish in the host (not seq: every message that arrives counts there)."""
    return {key: (node.bd_seq, node.has_own_data, node.born_at,
                  {device: dict(aliases) for device, aliases in node.aliases.items()},
                  dict(node.serials))
            for key, node in host._nodes.items()}


# -- Sparkplug ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [*SPARKPLUG_KINDS, "STATE"])
@FUZZ
@given(raw=SPARKPLUG_PAYLOADS)
def test_sparkplug_host_takes_any_single_message(kind: str, raw: bytes) -> None:
    host = SparkplugHost(tenant="acme", rebirth_debounce=timedelta(seconds=5), max_skew=SKEW)
    if kind == "STATE":
        route = topics.parse("spBv1.0/STATE/scada-1")
        assert isinstance(route, topics.SparkplugTopic)
        assert host.handle(route, raw, now=NOW) == Outcome()
        return
    _handle(host, kind, "press", raw, NOW)


@FUZZ
@given(messages=st.lists(st.tuples(st.sampled_from(SPARKPLUG_KINDS),
                                   st.sampled_from(["press", "pump"]), SPARKPLUG_PAYLOADS),
                         min_size=1, max_size=12))
def test_sparkplug_host_takes_any_sequence_of_messages(
        messages: list[tuple[str, str, bytes]]) -> None:
    # One host lives through the whole sequence: births, deaths and data in any order.
    host = SparkplugHost(tenant="acme", rebirth_debounce=timedelta(seconds=5), max_skew=SKEW)
    for i, (kind, device, raw) in enumerate(messages):
        before = _birth_state(host)
        outcome = _handle(host, kind, device, raw, NOW + timedelta(seconds=i))
        if outcome is not None and outcome.rejected is not None:
            # A rejected message, a birth above all, is applied not at all.
            assert _birth_state(host) == before, outcome.rejected


@FUZZ
@given(metrics=st.lists(wire_metrics(), max_size=6), data=st.lists(wire_metrics(), max_size=6),
       seq=st.integers(0, 255))
def test_sparkplug_host_takes_any_metrics_after_a_valid_birth(metrics: list[bytes],
                                                              data: list[bytes],
                                                              seq: int) -> None:
    # A valid NBIRTH and DBIRTH first, so hostile metrics reach alias resolution and values.
    host = SparkplugHost(tenant="acme", rebirth_debounce=timedelta(seconds=5), max_skew=SKEW)
    ts = _field(1, VARINT, NOW_MS)
    bd_seq = _field(2, LENGTH, _field(1, LENGTH, b"bdSeq") + _field(4, VARINT, 4)
                    + _field(11, VARINT, 0))
    birth = _handle(host, "NBIRTH", "", ts + bd_seq + _field(3, VARINT, 0), NOW)
    assert birth is not None
    assert birth.rejected is None
    dbirth = ts + b"".join(_field(2, LENGTH, m) for m in metrics) + _field(3, VARINT, 1)
    _handle(host, "DBIRTH", "press", dbirth, NOW)
    ddata = ts + b"".join(_field(2, LENGTH, m) for m in data) + _field(3, VARINT, seq)
    _handle(host, "DDATA", "press", ddata, NOW)
    _handle(host, "NDATA", "", ddata, NOW)
    _handle(host, "NDEATH", "", ts + b"".join(_field(2, LENGTH, m) for m in data), NOW)


# -- JSON -----------------------------------------------------------------------------------

JSON_TOPICS = st.sampled_from([topics.JsonTopic("acme", "SN-1", "telemetry"),
                               topics.JsonTopic("acme", "SN-1", "events")])
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=4),
    max_leaves=12,
)
TS = st.one_of(
    st.integers(NOW_MS - 10**10, NOW_MS + 10**10), st.integers(), st.floats(),
    st.datetimes(timezones=st.timezones() | st.none()).map(lambda d: d.isoformat()),
    st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(1, 1, 2),
                 timezones=st.just(UTC)).map(lambda d: d.isoformat().replace("+00:00", "+23:59")),
    st.datetimes(min_value=datetime(9999, 12, 30), timezones=st.just(UTC)).map(
        lambda d: d.isoformat().replace("+00:00", "-23:59")),
    JSONISH,
)
METRIC_NAMES = st.one_of(st.sampled_from(["operating_hours", "Speed rpm", "a/b.c:d-e"]),
                         st.text(max_size=140))
SAMPLE_FIELDS = {
    "ts": TS,
    "metrics": st.one_of(st.dictionaries(METRIC_NAMES, JSONISH, max_size=5),
                         st.dictionaries(METRIC_NAMES, st.floats() | st.integers(), max_size=5),
                         JSONISH),
    "state": st.one_of(st.sampled_from(sorted(MACHINE_STATES)), JSONISH),
}
BODIES = st.fixed_dictionaries({}, optional={
    **SAMPLE_FIELDS,
    # A gateway's buffered backlog: a list of telemetry entries.
    "samples": st.one_of(st.lists(st.fixed_dictionaries({}, optional=SAMPLE_FIELDS),
                                  max_size=4), JSONISH),
    "type": st.one_of(st.sampled_from(sorted(EVENT_KINDS)), JSONISH),
    "code": JSONISH,
    "id": JSONISH,
    "text": st.text(max_size=10),
})


def _decode_json(topic: topics.JsonTopic, raw: bytes) -> None:
    try:
        decoded = json_contract.decode(topic, raw, now=NOW, max_skew=SKEW)
    except Rejected as exc:
        assert exc.reason.strip()
        return
    assert len(decoded.samples) + len(decoded.events) >= 1
    assert not decoded.samples or not decoded.events
    _check_storable(decoded, now=NOW)


@FUZZ
@given(topic=JSON_TOPICS, raw=st.binary(max_size=300))
def test_json_decoder_takes_any_bytes(topic: topics.JsonTopic, raw: bytes) -> None:
    _decode_json(topic, raw)


@FUZZ
@given(topic=JSON_TOPICS, value=JSONISH)
def test_json_decoder_takes_any_json_value(topic: topics.JsonTopic, value: Any) -> None:
    # json (not orjson) writes NaN, Infinity and integers of any size, as sloppy publishers do.
    _decode_json(topic, json.dumps(value).encode())


@FUZZ
@given(topic=JSON_TOPICS, body=BODIES)
def test_json_decoder_takes_any_message_shape(topic: topics.JsonTopic,
                                              body: dict[str, Any]) -> None:
    _decode_json(topic, json.dumps(body).encode())
