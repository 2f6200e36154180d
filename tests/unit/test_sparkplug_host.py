"""The Sparkplug B Host Application, driven message by message (Eclipse Sparkplug 3.0)."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from ingest import topics
from ingest.models import Decoded, Gap, MachineRef, Rejected, Samples
from ingest.sparkplug import REBIRTH_METRIC, Outcome, SparkplugHost
from ingest.sparkplug_schema import (
    BOOLEAN,
    DATETIME,
    DOUBLE,
    FLOAT,
    INT8,
    INT16,
    INT32,
    INT64,
    STRING,
    UINT8,
    UINT16,
    UINT32,
    UINT64,
)
from tests.sparkplug_payloads import bd_seq, decode, metric, payload

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)  # 1_740_830_400 s since the epoch
T0 = 1_740_830_340_000  # NOW - 60 s, in ms
T0_TIME = datetime(2025, 3, 1, 11, 59, tzinfo=UTC)
GROUP, NODE = "plant1", "edge-7"
NODE_MACHINE = MachineRef("acme", "plant1/edge-7", "sparkplug", GROUP, NODE, "")


def device_machine(device: str) -> MachineRef:
    return MachineRef("acme", f"plant1/edge-7/{device}", "sparkplug", GROUP, NODE, device)


@pytest.fixture
def host() -> SparkplugHost:
    return SparkplugHost(tenant="acme", rebirth_debounce=timedelta(seconds=5),
                         max_skew=timedelta(hours=1))


def send(host: SparkplugHost, kind: str, raw: bytes, *, device: str | None = None,
         now: datetime = NOW, node: str = NODE) -> Outcome:
    topic = f"spBv1.0/{GROUP}/{kind}/{node}" + (f"/{device}" if device is not None else "")
    route = topics.parse(topic)
    assert isinstance(route, topics.SparkplugTopic)
    return host.handle(route, raw, now=now)


def accepted(outcome: Outcome) -> Outcome:
    assert outcome.rejected is None, outcome.rejected
    return outcome


def birth(host: SparkplugHost, *device_metrics: dict[str, Any], bd: int = 3,
          device: str = "press") -> None:
    """NBIRTH (seq 0) and a DBIRTH (seq 1) of ``device`` with ``device_metrics``."""
    accepted(send(host, "NBIRTH", payload(
        bd_seq(bd), metric(REBIRTH_METRIC, datatype=BOOLEAN, boolean_value=False),
        timestamp=T0, seq=0)))
    accepted(send(host, "DBIRTH", payload(*device_metrics, timestamp=T0, seq=1),
                  device=device))


def only_samples(outcome: Outcome) -> Samples:
    accepted(outcome)
    assert len(outcome.decoded.samples) == 1, outcome.decoded.samples
    return outcome.decoded.samples[0]


def rebirth_requested(outcome: Outcome, *, at_ms: int = 1_740_830_400_000) -> bool:
    """True when the outcome holds exactly one rebirth NCMD to our edge node, sent at ``at_ms``."""
    if not outcome.commands:
        return False
    (command,) = outcome.commands
    assert command.topic == f"spBv1.0/{GROUP}/NCMD/{NODE}"
    request = decode(command.payload)
    assert [(m.name, m.datatype, m.WhichOneof("value"), m.boolean_value)
            for m in request.metrics] == [("Node Control/Rebirth", BOOLEAN, "boolean_value", True)]
    assert request.timestamp == at_ms
    return True


# -- births and aliases --------------------------------------------------------------------


def test_nbirth_binds_node_aliases_and_stores_its_values(host: SparkplugHost) -> None:
    outcome = accepted(send(host, "NBIRTH", payload(
        bd_seq(7), metric(REBIRTH_METRIC, datatype=BOOLEAN, boolean_value=False),
        metric("Node/Temperature", alias=1, datatype=DOUBLE, double_value=40.5),
        timestamp=T0, seq=0)))
    # bdSeq and Node Control/* are protocol, not measurements.
    assert outcome.decoded.samples == [
        Samples(NODE_MACHINE, T0_TIME, {"Node/Temperature": 40.5})]
    assert outcome.decoded.connectivity == [(NODE_MACHINE, True, T0_TIME)]
    (event,) = outcome.decoded.events
    assert (event.machine, event.kind, event.time) == (NODE_MACHINE, "online", T0_TIME)
    assert orjson.loads(event.payload) == {"type": "online", "source": "sparkplug", "bdSeq": 7}
    assert not outcome.commands

    data = send(host, "NDATA", payload(
        metric(alias=1, datatype=DOUBLE, double_value=41.25), timestamp=T0 + 1000, seq=1))
    assert only_samples(data) == Samples(
        NODE_MACHINE, T0_TIME + timedelta(seconds=1), {"Node/Temperature": 41.25})
    assert not data.commands
    assert not data.decoded.gaps


def test_nbirth_without_own_metrics_registers_no_node_machine(host: SparkplugHost) -> None:
    outcome = accepted(send(host, "NBIRTH", payload(bd_seq(0), timestamp=T0, seq=0)))
    assert not outcome.decoded.samples
    assert not outcome.decoded.connectivity
    assert not outcome.decoded.events


def test_dbirth_binds_device_aliases_and_ddata_resolves_them(host: SparkplugHost) -> None:
    accepted(send(host, "NBIRTH", payload(bd_seq(3), timestamp=T0, seq=0)))
    dbirth = send(host, "DBIRTH", payload(
        metric("Spindle/Speed", alias=1, datatype=DOUBLE, double_value=1200.5),
        metric("Coolant/Temp", alias=2, datatype=FLOAT, float_value=21.5),
        timestamp=T0, seq=1), device="press")
    assert only_samples(dbirth) == Samples(
        device_machine("press"), T0_TIME, {"Spindle/Speed": 1200.5, "Coolant/Temp": 21.5})
    assert dbirth.decoded.connectivity == [(device_machine("press"), True, T0_TIME)]
    assert [e.kind for e in dbirth.decoded.events] == ["online"]

    # Another device may use the same alias numbers for other metrics.
    accepted(send(host, "DBIRTH", payload(
        metric("Hydraulics/Pressure", alias=1, datatype=DOUBLE, double_value=180.0),
        timestamp=T0, seq=2), device="pump"))

    ddata = send(host, "DDATA", payload(
        metric(alias=2, datatype=FLOAT, float_value=22.75),
        metric(alias=1, datatype=DOUBLE, double_value=1300.25),
        timestamp=T0 + 2000, seq=3), device="press")
    assert only_samples(ddata) == Samples(
        device_machine("press"), T0_TIME + timedelta(seconds=2),
        {"Spindle/Speed": 1300.25, "Coolant/Temp": 22.75})
    pump = send(host, "DDATA", payload(
        metric(alias=1, datatype=DOUBLE, double_value=181.5), timestamp=T0 + 2000, seq=4),
        device="pump")
    assert only_samples(pump).values == {"Hydraulics/Pressure": 181.5}


def test_a_new_dbirth_replaces_the_device_aliases(host: SparkplugHost) -> None:
    birth(host, metric("Speed", alias=1, datatype=DOUBLE, double_value=1.0))
    accepted(send(host, "DBIRTH", payload(
        metric("Torque", alias=1, datatype=DOUBLE, double_value=2.0),
        timestamp=T0 + 1000, seq=2), device="press"))
    data = send(host, "DDATA", payload(
        metric(alias=1, datatype=DOUBLE, double_value=3.0), timestamp=T0 + 2000, seq=3),
        device="press")
    assert only_samples(data).values == {"Torque": 3.0}


@pytest.mark.parametrize(("kind", "device"), [("DDATA", "press"), ("NDATA", None)])
def test_data_with_an_alias_no_birth_bound_is_rejected_and_a_rebirth_requested(
        host: SparkplugHost, kind: str, device: str | None) -> None:
    accepted(send(host, "NBIRTH", payload(
        bd_seq(3), metric("Node/Temp", alias=1, datatype=DOUBLE, double_value=1.0),
        timestamp=T0, seq=0)))
    accepted(send(host, "DBIRTH", payload(
        metric("Speed", alias=1, datatype=DOUBLE, double_value=1.0), timestamp=T0, seq=1),
        device="press"))

    def data(seq: int, now: datetime) -> Outcome:
        return send(host, kind, payload(
            metric(alias=1, datatype=DOUBLE, double_value=2.0),
            metric(alias=9, datatype=DOUBLE, double_value=3.0), timestamp=T0 + 1000, seq=seq),
            device=device, now=now)

    outcome = data(2, NOW)
    assert outcome.rejected is not None
    for word in (kind, "alias 9", "not bound", "rebirth was requested"):
        assert word in outcome.rejected
    assert rebirth_requested(outcome)
    assert not outcome.decoded.samples
    assert not outcome.decoded.gaps  # nothing was lost on the wire
    # Debounced as every rebirth request: not again within 5 s, again after.
    again = data(3, NOW + timedelta(seconds=4.9))
    assert again.rejected is not None
    assert not again.commands
    later = data(4, NOW + timedelta(seconds=5))
    assert later.rejected is not None
    assert rebirth_requested(later, at_ms=1_740_830_405_000)


def test_an_alias_without_name_in_a_birth_asks_for_no_rebirth(host: SparkplugHost) -> None:
    # A birth that names no metric for its alias is the edge node's error: a rebirth repeats it.
    accepted(send(host, "NBIRTH", payload(bd_seq(3), timestamp=T0, seq=0)))
    outcome = send(host, "DBIRTH", payload(
        metric(alias=4, datatype=DOUBLE, double_value=1.0), timestamp=T0, seq=1),
        device="press")
    assert outcome.rejected is not None
    assert "alias 4 is not bound" in outcome.rejected
    assert not outcome.commands


def test_metric_timestamps_split_samples_by_time(host: SparkplugHost) -> None:
    birth(host, metric("Speed", alias=1, datatype=DOUBLE, double_value=1.0))
    outcome = accepted(send(host, "DDATA", payload(
        metric(alias=1, datatype=DOUBLE, double_value=2.0, timestamp=T0 + 5000),
        metric(alias=1, datatype=DOUBLE, double_value=3.0, timestamp=T0 + 6000),
        timestamp=T0 + 7000, seq=2), device="press"))
    assert [(s.time, s.values) for s in outcome.decoded.samples] == [
        (T0_TIME + timedelta(seconds=5), {"Speed": 2.0}),
        (T0_TIME + timedelta(seconds=6), {"Speed": 3.0})]


def test_serial_number_property_names_the_machine(host: SparkplugHost) -> None:
    birth(host, metric("Properties/Serial Number", datatype=STRING, string_value="SN-4711"),
          metric("Speed", alias=1, datatype=DOUBLE, double_value=1.0))
    data = send(host, "DDATA", payload(
        metric(alias=1, datatype=DOUBLE, double_value=2.0), timestamp=T0 + 1000, seq=2),
        device="press")
    assert only_samples(data).machine == MachineRef(
        "acme", "SN-4711", "sparkplug", GROUP, NODE, "press")


@pytest.mark.parametrize("serial", ["S" * 64, "SN 4711 / Rev. B", "Nº 4711-ü"])
def test_serial_number_of_up_to_64_printable_characters(host: SparkplugHost,
                                                        serial: str) -> None:
    birth(host, metric("Properties/Serial Number", datatype=STRING, string_value=serial),
          metric("Speed", alias=1, datatype=DOUBLE, double_value=1.0))
    data = send(host, "DDATA", payload(
        metric(alias=1, datatype=DOUBLE, double_value=2.0), timestamp=T0 + 1000, seq=2),
        device="press")
    assert only_samples(data).machine.serial == serial


@pytest.mark.parametrize("serial", ["S" * 65, "S" * 100_000, "SN\x004711", "SN\n4711", "   "])
def test_a_serial_number_too_long_or_not_printable_is_ignored(
        host: SparkplugHost, serial: str, caplog: pytest.LogCaptureFixture) -> None:
    # The birth and its data are kept under the namespace serial; the log says why.
    outcome = send(host, "NBIRTH", payload(bd_seq(3), timestamp=T0, seq=0))
    accepted(outcome)
    with caplog.at_level("WARNING", logger="ingest.sparkplug"):
        dbirth = accepted(send(host, "DBIRTH", payload(
            metric("Properties/Serial Number", datatype=STRING, string_value=serial),
            metric("Speed", alias=1, datatype=DOUBLE, double_value=1.0), timestamp=T0, seq=1),
            device="press"))
    assert only_samples(dbirth).machine == device_machine("press")
    assert dbirth.decoded.connectivity == [(device_machine("press"), True, T0_TIME)]
    data = send(host, "DDATA", payload(
        metric(alias=1, datatype=DOUBLE, double_value=2.0), timestamp=T0 + 1000, seq=2),
        device="press")
    assert only_samples(data).machine == device_machine("press")
    (record,) = caplog.records
    assert "ignoring Properties/Serial Number" in record.getMessage()
    assert "plant1/edge-7/press" in record.getMessage()
    assert len(record.getMessage()) < 400


@pytest.mark.parametrize("name", ["Temp (C)", "Speed %", "Temp °C", "Druck [bar]", "x" * 128])
def test_printable_metric_names_are_stored_as_published(host: SparkplugHost, name: str) -> None:
    birth(host, metric(name, alias=1, datatype=DOUBLE, double_value=1.0))
    data = send(host, "DDATA", payload(
        metric(alias=1, datatype=DOUBLE, double_value=2.0), timestamp=T0 + 1000, seq=2),
        device="press")
    assert only_samples(data).values == {name: 2.0}


# -- a rejected birth changes nothing ------------------------------------------------------


NAN_BIRTH = (metric("Torque", alias=1, datatype=DOUBLE, double_value=7.0),
             metric("Broken", alias=2, datatype=DOUBLE, double_value=float("nan")))


def test_a_rejected_first_nbirth_binds_nothing(host: SparkplugHost) -> None:
    outcome = send(host, "NBIRTH", payload(bd_seq(3), *NAN_BIRTH, timestamp=T0, seq=0))
    assert outcome.rejected is not None
    assert "'Broken'" in outcome.rejected
    assert outcome.decoded == Outcome().decoded  # no samples, online, events or gaps
    # The node is not bound: its DATA is answered as from a node without birth.
    data = send(host, "NDATA", payload(
        metric(alias=1, datatype=DOUBLE, double_value=8.0), timestamp=T0 + 1000, seq=1))
    assert data.rejected is not None
    assert "no birth" in data.rejected
    assert data.decoded.gaps == [Gap(GROUP, NODE, "no_birth", None, 1, None,
                                     rebirth_requested=True)]
    assert rebirth_requested(data)
    # Nor is there anything to take offline.
    death = accepted(send(host, "NDEATH", payload(bd_seq(3), timestamp=T0 + 2000)))
    assert death.decoded == Outcome().decoded


def test_a_rejected_nbirth_keeps_the_previous_birth(host: SparkplugHost) -> None:
    accepted(send(host, "NBIRTH", payload(
        bd_seq(3), metric("Speed", alias=1, datatype=DOUBLE, double_value=1.0),
        metric("Properties/Serial Number", datatype=STRING, string_value="SN-OLD"),
        timestamp=T0, seq=0)))
    rejected = send(host, "NBIRTH", payload(
        bd_seq(4), *NAN_BIRTH,
        metric("Properties/Serial Number", datatype=STRING, string_value="SN-NEW"),
        timestamp=T0 + 1000, seq=0))
    assert rejected.rejected is not None
    assert rejected.decoded == Outcome().decoded
    # Aliases, serial and bdSeq are those of the birth that was applied.
    data = send(host, "NDATA", payload(
        metric(alias=1, datatype=DOUBLE, double_value=2.0), timestamp=T0 + 2000, seq=1))
    assert only_samples(data) == Samples(
        MachineRef("acme", "SN-OLD", "sparkplug", GROUP, NODE, ""),
        T0_TIME + timedelta(seconds=2), {"Speed": 2.0})
    assert not accepted(send(host, "NDEATH", payload(bd_seq(4), timestamp=T0))).decoded.events
    death = accepted(send(host, "NDEATH", payload(bd_seq(3), timestamp=T0)))
    assert [(m.serial, online) for m, online, _ in death.decoded.connectivity] == [
        ("SN-OLD", False)]


def test_an_nbirth_rejected_for_its_time_binds_nothing(host: SparkplugHost) -> None:
    # The samples carry their own times, the payload none: the birth time is missing.
    outcome = send(host, "NBIRTH", payload(
        bd_seq(3), metric("Speed", alias=1, datatype=DOUBLE, double_value=1.0, timestamp=T0),
        timestamp=None, seq=0))
    assert outcome.rejected is not None
    assert "no timestamp" in outcome.rejected
    data = send(host, "NDATA", payload(
        metric(alias=1, datatype=DOUBLE, double_value=2.0), timestamp=T0 + 1000, seq=1))
    assert data.rejected is not None
    assert "no birth" in data.rejected


def test_a_rejected_first_dbirth_binds_nothing(host: SparkplugHost) -> None:
    birth(host, metric("Speed", alias=1, datatype=DOUBLE, double_value=1.0))
    outcome = send(host, "DBIRTH", payload(*NAN_BIRTH, timestamp=T0, seq=2), device="lathe")
    assert outcome.rejected is not None
    assert outcome.decoded == Outcome().decoded
    data = send(host, "DDATA", payload(
        metric(alias=1, datatype=DOUBLE, double_value=2.0), timestamp=T0 + 1000, seq=3),
        device="lathe")
    assert data.rejected is not None
    assert "without a DBIRTH" in data.rejected
    assert rebirth_requested(data)
    assert not data.decoded.gaps  # the rejected DBIRTH counted in seq: nothing was lost
    # Only the device that was born goes offline with the node.
    death = accepted(send(host, "NDEATH", payload(bd_seq(3), timestamp=T0 + 2000)))
    assert death.decoded.connectivity == [(device_machine("press"), False, NOW)]


def test_a_rejected_dbirth_keeps_the_device_s_previous_birth(host: SparkplugHost) -> None:
    birth(host, metric("Speed", alias=1, datatype=DOUBLE, double_value=1.0))
    outcome = send(host, "DBIRTH", payload(
        *NAN_BIRTH, metric("Properties/Serial Number", datatype=STRING, string_value="SN-NEW"),
        timestamp=T0 + 1000, seq=2), device="press")
    assert outcome.rejected is not None
    assert outcome.decoded == Outcome().decoded
    data = send(host, "DDATA", payload(
        metric(alias=1, datatype=DOUBLE, double_value=2.0), timestamp=T0 + 2000, seq=3),
        device="press")
    assert only_samples(data) == Samples(
        device_machine("press"), T0_TIME + timedelta(seconds=2), {"Speed": 2.0})
    assert not data.decoded.gaps


# -- values --------------------------------------------------------------------------------


def _u32(fmt: str, value: int) -> int:
    """The value packed as ``fmt`` and read back as unsigned of the same width."""
    return int(struct.unpack(fmt.upper(), struct.pack(fmt, value))[0])


def _sign_extended_u32(value: int) -> int:
    """A small negative integer widened to 32 bits first (Tahu's Java encoder does this)."""
    return int(struct.unpack("<I", struct.pack("<i", value))[0])


@pytest.mark.parametrize(("datatype", "field", "wire", "expected"), [
    (INT8, "int_value", _u32("<b", -5), -5.0),            # 251
    (INT8, "int_value", _u32("<b", -128), -128.0),        # 128
    (INT8, "int_value", 127, 127.0),
    (INT16, "int_value", _u32("<h", -87), -87.0),         # 65449
    (INT16, "int_value", _u32("<h", 32767), 32767.0),
    (INT32, "int_value", _u32("<i", -1), -1.0),           # 4294967295
    (INT32, "int_value", _u32("<i", -(2**31)), -2147483648.0),
    (INT32, "int_value", 2**31 - 1, 2147483647.0),
    (INT64, "long_value", _u32("<q", -5_000_000_000), -5_000_000_000.0),
    (INT64, "long_value", _u32("<q", -(2**63)), -9223372036854775808.0),
    # Sign-extended to 32 bits before going into the uint32 field.
    (INT8, "int_value", _sign_extended_u32(-5), -5.0),    # 4294967291
    (INT16, "int_value", _sign_extended_u32(-87), -87.0),  # 4294967209
    # Unsigned types keep every bit.
    (UINT8, "int_value", 255, 255.0),
    (UINT16, "int_value", 65535, 65535.0),
    (UINT32, "int_value", 4_294_967_295, 4294967295.0),
    (UINT32, "long_value", 4_294_967_295, 4294967295.0),
    (UINT64, "long_value", 2**64 - 1, 18446744073709551615.0),
])
def test_integers_are_read_per_their_datatype(host: SparkplugHost, datatype: int, field: str,
                                              wire: int, expected: float) -> None:
    outcome = accepted(send(host, "NBIRTH", payload(
        bd_seq(1), metric("Value", datatype=datatype, **{field: wire}), timestamp=T0, seq=0)))
    assert only_samples(outcome).values == {"Value": expected}


def test_booleans_floats_and_null_and_text_metrics(host: SparkplugHost) -> None:
    outcome = accepted(send(host, "NBIRTH", payload(
        bd_seq(1),
        metric("Door Open", datatype=BOOLEAN, boolean_value=True),
        metric("Alarm", datatype=BOOLEAN, boolean_value=False),
        metric("Ratio", datatype=FLOAT, float_value=0.25),
        metric("Energy", datatype=DOUBLE, double_value=-1.5e10),
        metric("Broken Sensor", datatype=DOUBLE, is_null=True),
        metric("Operator", datatype=STRING, string_value="Ana"),
        metric("Last Service", datatype=DATETIME, long_value=T0),
        timestamp=T0, seq=0)))
    assert only_samples(outcome).values == {
        "Door Open": 1.0, "Alarm": 0.0, "Ratio": 0.25, "Energy": -1.5e10}


@pytest.mark.parametrize(("name", "value", "state"), [
    ("State", "running", "running"),
    ("Machine/State", "Idle", "idle"),
    ("Status/state", "FAULT", "fault"),
    ("state", "off", "off"),
])
def test_state_string_metric_is_the_machine_state(host: SparkplugHost, name: str, value: str,
                                                  state: str) -> None:
    outcome = accepted(send(host, "NBIRTH", payload(
        bd_seq(1), metric(name, alias=4, datatype=STRING, string_value=value),
        metric("Operating Hours", datatype=DOUBLE, double_value=1234.5), timestamp=T0, seq=0)))
    assert only_samples(outcome) == Samples(
        NODE_MACHINE, T0_TIME, {"operating_hours": 1234.5}, state)  # type: ignore[arg-type]
    data = send(host, "NDATA", payload(
        metric(alias=4, datatype=STRING, string_value="off"), timestamp=T0 + 1000, seq=1))
    assert only_samples(data) == Samples(NODE_MACHINE, T0_TIME + timedelta(seconds=1), {}, "off")


@pytest.mark.parametrize(("fields", "words"), [
    ({"datatype": STRING, "string_value": "exploded"}, ["'State'", "must be one of"]),
    ({"datatype": INT32, "int_value": 1}, ["'State'", "must be one of"]),
])
def test_state_outside_the_contract_is_rejected(host: SparkplugHost, fields: dict[str, Any],
                                                words: list[str]) -> None:
    outcome = send(host, "NBIRTH", payload(bd_seq(1), {"name": "State", **fields},
                                           timestamp=T0, seq=0))
    assert outcome.rejected is not None
    for word in words:
        assert word in outcome.rejected


@pytest.mark.parametrize(("raw", "words"), [
    (payload(bd_seq(1), metric("V", datatype=DOUBLE, double_value=float("nan")),
             timestamp=T0, seq=0), ["'V'", "not a finite number"]),
    (payload(bd_seq(1), metric("V", datatype=FLOAT, float_value=float("inf")),
             timestamp=T0, seq=0), ["'V'", "not a finite number"]),
    (payload(bd_seq(1), metric("V", datatype=DOUBLE, double_value=1.0), timestamp=None,
             seq=0), ["no timestamp"]),
    (payload(bd_seq(1), metric("V", datatype=DOUBLE, double_value=1.0), timestamp=T0 // 1000,
             seq=0), ["before 2000-01-01"]),
    (payload(bd_seq(1), metric("V", datatype=DOUBLE, double_value=1.0),
             timestamp=T0 + 86_400_000, seq=0), ["in the future"]),
    (payload(bd_seq(1), metric("Temp\tC", datatype=DOUBLE, double_value=1.0),
             timestamp=T0, seq=0), ["metric name 'Temp\\tC'", "not valid", "printable"]),
    (payload(bd_seq(1), metric("x" * 129, datatype=DOUBLE, double_value=1.0),
             timestamp=T0, seq=0), ["metric name", "1-128"]),
    (b"\x00\x01garbage", ["NBIRTH payload is not a valid Sparkplug B protobuf"]),
])
def test_bad_values_reject_the_message(host: SparkplugHost, raw: bytes,
                                       words: list[str]) -> None:
    outcome = send(host, "NBIRTH", raw)
    assert outcome.rejected is not None
    for word in words:
        assert word in outcome.rejected
    assert not outcome.commands


# -- seq -----------------------------------------------------------------------------------


def test_seq_gap_is_recorded_and_a_rebirth_requested(host: SparkplugHost) -> None:
    birth(host, metric("Speed", alias=1, datatype=DOUBLE, double_value=1.0))
    # seq 2 and 3 were lost: 4 arrives.
    outcome = accepted(send(host, "DDATA", payload(
        metric(alias=1, datatype=DOUBLE, double_value=5.0), timestamp=T0 + 1000, seq=4),
        device="press"))
    assert outcome.decoded.gaps == [Gap(GROUP, NODE, "seq_gap", 2, 4, 2, rebirth_requested=True)]
    assert rebirth_requested(outcome)
    # What did arrive is kept.
    assert [s.values for s in outcome.decoded.samples] == [{"Speed": 5.0}]
    # The next in sequence is no gap.
    follow = accepted(send(host, "DDATA", payload(
        metric(alias=1, datatype=DOUBLE, double_value=6.0), timestamp=T0 + 2000, seq=5),
        device="press"))
    assert not follow.decoded.gaps
    assert not follow.commands


def test_seq_counts_across_node_and_device_messages_and_wraps_at_256(host: SparkplugHost) -> None:
    accepted(send(host, "NBIRTH", payload(
        bd_seq(1), metric("N", alias=1, datatype=DOUBLE, double_value=0.0),
        timestamp=T0, seq=253)))
    accepted(send(host, "DBIRTH", payload(
        metric("D", alias=1, datatype=DOUBLE, double_value=0.0), timestamp=T0, seq=254),
        device="press"))
    for seq, kind, device in ((255, "NDATA", None), (0, "DDATA", "press"),
                              (1, "NDATA", None)):
        outcome = accepted(send(host, kind, payload(
            metric(alias=1, datatype=DOUBLE, double_value=float(seq)),
            timestamp=T0 + 1000 + seq, seq=seq), device=device))
        assert not outcome.decoded.gaps, seq
        assert not outcome.commands
    # After 1 comes 255: the 253 numbers 2..254 were lost.
    outcome = accepted(send(host, "NDATA", payload(
        metric(alias=1, datatype=DOUBLE, double_value=9.0), timestamp=T0 + 9000, seq=255)))
    assert outcome.decoded.gaps == [
        Gap(GROUP, NODE, "seq_gap", 2, 255, 253, rebirth_requested=True)]


def test_rebirth_requests_are_debounced(host: SparkplugHost) -> None:
    birth(host, metric("Speed", alias=1, datatype=DOUBLE, double_value=1.0))

    def ddata(seq: int, now: datetime) -> Outcome:
        return accepted(send(host, "DDATA", payload(
            metric(alias=1, datatype=DOUBLE, double_value=float(seq)),
            timestamp=T0 + seq * 1000, seq=seq), device="press", now=now))

    first = ddata(5, NOW)  # expected 2
    assert rebirth_requested(first)
    assert first.decoded.gaps == [Gap(GROUP, NODE, "seq_gap", 2, 5, 3, rebirth_requested=True)]
    # Within the 5 s debounce: recorded, but no second request.
    second = ddata(9, NOW + timedelta(seconds=4.9))  # expected 6
    assert not second.commands
    assert second.decoded.gaps == [
        Gap(GROUP, NODE, "seq_gap", 6, 9, 3, rebirth_requested=False)]
    # 5 s after the first request: asked again.
    third = ddata(12, NOW + timedelta(seconds=5))  # expected 10
    assert rebirth_requested(third, at_ms=1_740_830_405_000)
    assert third.decoded.gaps == [
        Gap(GROUP, NODE, "seq_gap", 10, 12, 2, rebirth_requested=True)]


def test_data_without_seq_is_rejected(host: SparkplugHost) -> None:
    birth(host, metric("Speed", alias=1, datatype=DOUBLE, double_value=1.0))
    outcome = send(host, "DDATA", payload(
        metric(alias=1, datatype=DOUBLE, double_value=2.0), timestamp=T0 + 1000),
        device="press")
    assert outcome.rejected is not None
    assert "no seq" in outcome.rejected


@pytest.mark.parametrize(("kind", "device"), [("NDATA", None), ("DDATA", "press"),
                                              ("DBIRTH", "press")])
def test_data_without_birth_is_rejected_and_a_rebirth_requested(
        host: SparkplugHost, kind: str, device: str | None) -> None:
    raw = payload(metric("Speed", alias=1, datatype=DOUBLE, double_value=1.0),
                  timestamp=T0, seq=17)
    outcome = send(host, kind, raw, device=device)
    assert outcome.rejected is not None
    assert "no birth" in outcome.rejected
    assert "rebirth was requested" in outcome.rejected
    assert outcome.decoded.gaps == [
        Gap(GROUP, NODE, "no_birth", None, 17, None, rebirth_requested=True)]
    assert rebirth_requested(outcome)
    assert not outcome.decoded.samples
    # Again within the debounce: recorded, not asked again.
    again = send(host, kind, raw, device=device, now=NOW + timedelta(seconds=1))
    assert again.rejected is not None
    assert again.decoded.gaps == [
        Gap(GROUP, NODE, "no_birth", None, 17, None, rebirth_requested=False)]
    assert not again.commands


def test_ddata_of_a_device_without_dbirth_asks_for_a_rebirth(host: SparkplugHost) -> None:
    birth(host, metric("Speed", alias=1, datatype=DOUBLE, double_value=1.0))
    outcome = send(host, "DDATA", payload(
        metric(alias=1, datatype=DOUBLE, double_value=2.0), timestamp=T0 + 1000, seq=2),
        device="lathe")
    assert outcome.rejected is not None
    assert "lathe" in outcome.rejected
    assert "without a DBIRTH" in outcome.rejected
    assert rebirth_requested(outcome)


# -- deaths --------------------------------------------------------------------------------


def test_ndeath_with_the_birth_bdseq_takes_every_machine_of_the_node_offline(
        host: SparkplugHost) -> None:
    accepted(send(host, "NBIRTH", payload(
        bd_seq(3), metric("Node/Uptime", datatype=UINT32, int_value=10),
        timestamp=T0, seq=0)))
    for seq, device in enumerate(("press", "pump"), start=1):
        accepted(send(host, "DBIRTH", payload(
            metric("Speed", alias=1, datatype=DOUBLE, double_value=1.0), timestamp=T0,
            seq=seq), device=device))
    death = accepted(send(host, "NDEATH", payload(bd_seq(3), timestamp=T0 + 5000)))
    offline_at = NOW  # when the host heard of it
    assert sorted(death.decoded.connectivity, key=lambda c: c[0].spb_device) == [
        (NODE_MACHINE, False, offline_at), (device_machine("press"), False, offline_at),
        (device_machine("pump"), False, offline_at)]
    assert {(e.machine.spb_device, e.kind) for e in death.decoded.events} == {
        ("", "offline"), ("press", "offline"), ("pump", "offline")}
    assert all(orjson.loads(e.payload)["bdSeq"] == 3 for e in death.decoded.events)
    assert not death.decoded.samples
    # The node's state is gone: its next DATA needs a birth first.
    after = send(host, "DDATA", payload(
        metric(alias=1, datatype=DOUBLE, double_value=2.0), timestamp=T0 + 6000, seq=3),
        device="press")
    assert after.rejected is not None
    assert "no birth" in after.rejected


def test_a_will_without_timestamp_goes_offline_at_our_time(host: SparkplugHost) -> None:
    birth(host, metric("Speed", alias=1, datatype=DOUBLE, double_value=1.0))
    death = accepted(send(host, "NDEATH", payload(bd_seq(3), timestamp=None)))
    assert death.decoded.connectivity == [(device_machine("press"), False, NOW)]


def test_a_will_older_than_the_births_still_goes_offline_after_them(
        host: SparkplugHost) -> None:
    # An edge node builds its will (NDEATH) before it connects: its timestamp is older than the
    # births of that connection. Offline must come after online, or the database keeps online.
    birth(host, metric("Speed", alias=1, datatype=DOUBLE, double_value=1.0))  # born at T0
    death = accepted(send(host, "NDEATH", payload(bd_seq(3), timestamp=T0 - 30_000)))
    assert death.decoded.connectivity == [(device_machine("press"), False, NOW)]
    assert [(e.kind, e.time) for e in death.decoded.events] == [("offline", NOW)]


def test_death_is_not_before_the_last_birth_when_the_edge_clock_runs_ahead(
        host: SparkplugHost) -> None:
    ahead = 1_740_830_400_000 + 120_000  # the edge node's clock is 2 minutes ahead of ours
    accepted(send(host, "NBIRTH", payload(bd_seq(3), timestamp=ahead, seq=0)))
    accepted(send(host, "DBIRTH", payload(
        metric("Speed", alias=1, datatype=DOUBLE, double_value=1.0), timestamp=ahead, seq=1),
        device="press"))
    death = accepted(send(host, "NDEATH", payload(bd_seq(3), timestamp=ahead - 60_000)))
    assert death.decoded.connectivity == [
        (device_machine("press"), False, NOW + timedelta(minutes=2))]


def test_ndeath_with_a_stale_bdseq_is_ignored(host: SparkplugHost) -> None:
    # The will of the previous connection (bdSeq 2) arrives after the rebirth (bdSeq 3).
    birth(host, metric("Speed", alias=1, datatype=DOUBLE, double_value=1.0), bd=3)
    stale = accepted(send(host, "NDEATH", payload(bd_seq(2), timestamp=T0 + 1000)))
    assert not stale.decoded.connectivity
    assert not stale.decoded.events
    # The birth still holds: aliases resolve and seq goes on without a gap.
    data = accepted(send(host, "DDATA", payload(
        metric(alias=1, datatype=DOUBLE, double_value=2.0), timestamp=T0 + 2000, seq=2),
        device="press"))
    assert [s.values for s in data.decoded.samples] == [{"Speed": 2.0}]
    assert not data.decoded.gaps


def test_ndeath_of_an_unknown_node_is_ignored(host: SparkplugHost) -> None:
    outcome = accepted(send(host, "NDEATH", payload(bd_seq(0), timestamp=T0)))
    assert outcome.decoded.connectivity == []
    assert not outcome.commands


def test_ddeath_takes_the_device_offline_and_forgets_its_aliases(host: SparkplugHost) -> None:
    birth(host, metric("Speed", alias=1, datatype=DOUBLE, double_value=1.0))
    death = accepted(send(host, "DDEATH", payload(timestamp=T0 + 3000, seq=2), device="press"))
    assert death.decoded.connectivity == [
        (device_machine("press"), False, T0_TIME + timedelta(seconds=3))]
    assert [e.kind for e in death.decoded.events] == ["offline"]
    assert not death.decoded.samples
    after = send(host, "DDATA", payload(
        metric(alias=1, datatype=DOUBLE, double_value=2.0), timestamp=T0 + 4000, seq=3),
        device="press")
    assert after.rejected is not None
    assert "without a DBIRTH" in after.rejected
    assert rebirth_requested(after)


# -- not machine data ----------------------------------------------------------------------


@pytest.mark.parametrize("topic", ["spBv1.0/STATE/scada-1", "spBv1.0/plant1/NCMD/edge-7",
                                   "spBv1.0/plant1/DCMD/edge-7/press"])
@pytest.mark.parametrize("raw", [b'{"online": true, "timestamp": 1}', b"\xff\xff",
                                 payload(metric("Node Control/Rebirth", datatype=BOOLEAN,
                                                boolean_value=True), timestamp=T0)])
def test_state_and_commands_are_not_machine_data(host: SparkplugHost, topic: str,
                                                 raw: bytes) -> None:
    route = topics.parse(topic)
    assert isinstance(route, topics.SparkplugTopic)
    outcome = host.handle(route, raw, now=NOW)
    assert outcome == Outcome()


def test_state_payload_is_sparkplug_3_json() -> None:
    body = orjson.loads(SparkplugHost.state_payload(online=True, now=NOW))
    assert body == {"online": True, "timestamp": 1_740_830_400_000}
    assert orjson.loads(SparkplugHost.state_payload(online=False, now=NOW))["online"] is False


# -- hostile content -----------------------------------------------------------------------


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 1e300, 0.5])
def test_a_bdseq_that_is_no_integer_names_no_birth(host: SparkplugHost, value: float) -> None:
    outcome = accepted(send(host, "NBIRTH", payload(
        metric("bdSeq", datatype=DOUBLE, double_value=value),
        metric("Speed", datatype=DOUBLE, double_value=1.0), timestamp=T0, seq=0)))
    (event,) = outcome.decoded.events
    assert orjson.loads(event.payload)["bdSeq"] is None
    # Without a known bdSeq, any NDEATH of the node ends the birth.
    death = accepted(send(host, "NDEATH", payload(bd_seq(9), timestamp=T0 + 1000)))
    assert death.decoded.connectivity == [
        (NODE_MACHINE, False, NOW)]


@pytest.mark.parametrize("seq", [256, 2**32, 2**64 - 1])
def test_seq_past_255_is_rejected(host: SparkplugHost, seq: int) -> None:
    birth(host, metric("Speed", alias=1, datatype=DOUBLE, double_value=1.0))
    outcome = send(host, "DDATA", payload(
        metric(alias=1, datatype=DOUBLE, double_value=2.0), timestamp=T0 + 1000, seq=seq),
        device="press")
    assert outcome.rejected is not None
    assert f"seq {seq}" in outcome.rejected
    assert "0..255" in outcome.rejected
    assert not outcome.decoded.gaps


@pytest.mark.parametrize("field", ["name", "string_value"])
def test_text_that_is_not_utf8_is_rejected(host: SparkplugHost, field: str) -> None:
    fields: dict[str, Any] = {"name": "Speed", "datatype": STRING, "string_value": "ok"}
    fields[field] = "é"
    raw = payload(bd_seq(1), fields, timestamp=T0, seq=0)
    raw = raw.replace("é".encode(), b"\xc3\x28")  # a lead byte without its continuation
    outcome = send(host, "NBIRTH", raw)
    assert outcome.rejected is not None
    assert "not UTF-8" in outcome.rejected


# -- a message on its own (dead-letter replay) ---------------------------------------------


def standalone(host: SparkplugHost, kind: str, raw: bytes, *, device: str | None = None) -> Any:
    topic = f"spBv1.0/{GROUP}/{kind}/{NODE}" + (f"/{device}" if device is not None else "")
    route = topics.parse(topic)
    assert isinstance(route, topics.SparkplugTopic)
    return host.decode_standalone(route, raw, now=NOW)


def test_a_birth_on_its_own_gives_its_samples_and_serial_and_nothing_of_a_session(
        host: SparkplugHost) -> None:
    decoded = standalone(host, "DBIRTH", payload(
        metric("Properties/Serial Number", datatype=STRING, string_value="SN-4711"),
        metric("Speed", alias=1, datatype=DOUBLE, double_value=10.0),
        metric("State", alias=2, datatype=STRING, string_value="running"),
        timestamp=T0, seq=9), device="press")
    machine = MachineRef("acme", "SN-4711", "sparkplug", GROUP, NODE, "press")
    assert decoded.samples == [Samples(machine, T0_TIME, {"Speed": 10.0}, "running")]
    assert (decoded.events, decoded.connectivity, decoded.gaps) == ([], [], [])
    # The host learnt nothing: DATA of that device still has no birth here.
    outcome = send(host, "DDATA", payload(metric(alias=1, datatype=DOUBLE, double_value=1.0),
                                          timestamp=T0, seq=10), device="press")
    assert outcome.rejected is not None and "no birth certificate" in outcome.rejected


def test_data_on_its_own_takes_named_metrics_and_refuses_aliases(host: SparkplugHost) -> None:
    named = standalone(host, "DDATA", payload(
        metric("Speed", datatype=DOUBLE, double_value=11.0), timestamp=T0, seq=3),
        device="press")
    assert named.samples == [Samples(device_machine("press"), T0_TIME, {"Speed": 11.0})]
    with pytest.raises(Rejected, match=r"^NDATA: metric alias 4 cannot be replayed"):
        standalone(host, "NDATA", payload(
            metric("Speed", datatype=DOUBLE, double_value=1.0),
            metric(alias=4, datatype=DOUBLE, double_value=2.0), timestamp=T0, seq=3))


@pytest.mark.parametrize("kind", ["NDEATH", "DDEATH"])
def test_a_death_on_its_own_is_refused(host: SparkplugHost, kind: str) -> None:
    with pytest.raises(Rejected, match=f"^{kind} is not replayed: .*bdSeq"):
        standalone(host, kind, payload(bd_seq(3), timestamp=T0),
                   device="press" if kind == "DDEATH" else None)


def test_on_its_own_a_bad_payload_and_state_and_commands(host: SparkplugHost) -> None:
    with pytest.raises(Rejected, match=r"^NBIRTH payload is not a valid Sparkplug B protobuf"):
        standalone(host, "NBIRTH", b"\x00 not protobuf")
    assert standalone(host, "NCMD", b"") == Decoded()
    with pytest.raises(Rejected, match=r"^DBIRTH: .*in the future"):
        standalone(host, "DBIRTH", payload(
            metric("Speed", alias=1, datatype=DOUBLE, double_value=1.0),
            timestamp=T0 + 7_200_000, seq=0), device="press")
