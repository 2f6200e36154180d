"""Sparkplug B Host Application: births bind aliases, seq gaps are detected and healed.

Eclipse Sparkplug 3.0: edge nodes publish at QoS 0, so loss is detected, not prevented. Every
payload from one edge node carries ``seq`` 0..255, counting across node and device messages; a
gap, or DATA from a node we hold no birth for, is recorded and answered by a rebirth request
(``NCMD`` with ``Node Control/Rebirth`` = true, debounced). DATA of a device without a DBIRTH, or
with an alias no birth bound, is rejected and answered by a rebirth request too. A birth is
applied whole or not at all: a rejected one leaves the host's state as it was. An NDEATH counts
only when its ``bdSeq`` matches the current NBIRTH's (a will can overtake a rebirth). A DEATH
marks the node's or device's machines offline; values are not carried forward.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from google.protobuf.message import DecodeError

from ingest import sparkplug_schema as schema
from ingest.json_contract import check_metric_name, parse_time
from ingest.models import MACHINE_STATES, Decoded, Event, Gap, MachineRef, Rejected, Samples
from ingest.topics import SparkplugTopic

logger = logging.getLogger(__name__)

REBIRTH_METRIC = "Node Control/Rebirth"
_SERIAL_METRICS = frozenset(
    {"properties/serial number", "properties/serial_number", "serial_number"}
)
_SKIPPED_PREFIXES = ("node control/", "properties/", "device control/")
MAX_SERIAL_CHARS = 64  # as the JSON contract's <serial>; a longer one is ignored (logged)
NOT_A_HOST = "Sparkplug B message, but this ingester is not a Sparkplug host"


@dataclass(frozen=True, slots=True)
class Command:
    """A message the host publishes (rebirth requests)."""

    topic: str
    payload: bytes


@dataclass(slots=True)
class Outcome:
    """What one Sparkplug message produced."""

    decoded: Decoded = field(default_factory=Decoded)
    commands: list[Command] = field(default_factory=list)
    rejected: str | None = None


@dataclass(slots=True)
class _Node:
    bd_seq: int | None
    seq: int
    has_own_data: bool = False
    born_at: datetime | None = None  # the latest birth time of the node or its devices
    # device ("" for the node itself) -> alias -> metric name
    aliases: dict[str, dict[int, str]] = field(default_factory=lambda: defaultdict(dict))
    serials: dict[str, str] = field(default_factory=dict)


class SparkplugHost:
    """Host-side state of every edge node; one per ingester (not shared across instances)."""

    def __init__(self, *, tenant: str, rebirth_debounce: timedelta,
                 max_skew: timedelta) -> None:
        self._tenant = tenant
        self._debounce = rebirth_debounce
        self._max_skew = max_skew
        self._nodes: dict[tuple[str, str], _Node] = {}
        self._last_rebirth: dict[tuple[str, str], datetime] = {}

    @staticmethod
    def state_payload(*, online: bool, now: datetime) -> bytes:
        """The retained ``spBv1.0/STATE/<host id>`` payload (Sparkplug 3.0: JSON)."""
        return orjson.dumps({"online": online, "timestamp": int(now.timestamp() * 1000)})

    def handle(self, topic: SparkplugTopic, payload: bytes, *, now: datetime) -> Outcome:
        """Process one message of the Sparkplug namespace."""
        outcome = Outcome()
        kind = topic.message_type
        if kind in ("STATE", "NCMD", "DCMD"):
            return outcome  # other hosts' state and commands are not machine data
        try:
            message = schema.Payload.FromString(payload)
        except DecodeError as exc:
            outcome.rejected = f"{kind} payload is not a valid Sparkplug B protobuf: {exc}"
            return outcome
        key = (topic.group, topic.edge_node)
        try:
            _check_text(message)
            if kind == "NBIRTH":
                self._nbirth(key, message, outcome, now)
            elif kind == "NDEATH":
                self._ndeath(key, message, outcome, now)
            else:
                self._device_or_data(topic, key, message, outcome, now)
        except Rejected as exc:
            outcome.rejected = f"{kind}: {exc.reason}"
        return outcome

    def decode_standalone(self, topic: SparkplugTopic, payload: bytes, *,
                          now: datetime) -> Decoded:
        """What one message says on its own, without the session it came in (a replay).

        A host's state (the alias bindings of each node's births, its seq and bdSeq, which
        devices are born) is the order of messages as they came; a message taken out of that
        order can only be read for what it carries itself. So: metrics with their names
        (births always have them; DATA only if the node sends names) become samples, a birth's
        serial number is taken from it; an alias-only metric is rejected (its binding was in a
        birth this method does not have), and so are deaths (whether one counts depends on the
        birth then in force). No seq check, no connectivity, no online/offline event: those
        were the session's, recorded when the message came. Nothing here changes the host.
        ``now`` is when the message was received (the bounds of its times).
        """
        kind = topic.message_type
        if kind in ("STATE", "NCMD", "DCMD"):
            return Decoded()
        if kind in ("NDEATH", "DDEATH"):
            raise Rejected(f"{kind} is not replayed: whether a death counts depends on the birth"
                           " in force when it came (bdSeq), which a replay does not know")
        try:
            message = schema.Payload.FromString(payload)
        except DecodeError as exc:
            raise Rejected(f"{kind} payload is not a valid Sparkplug B protobuf: {exc}") from None
        try:
            return Decoded(samples=self._standalone_samples(topic, message, now))
        except Rejected as exc:
            raise Rejected(f"{kind}: {exc.reason}") from None

    def _standalone_samples(self, topic: SparkplugTopic, message: Any,
                            now: datetime) -> list[Samples]:
        key, device = (topic.group, topic.edge_node), topic.device or ""
        _check_text(message)
        birth = topic.message_type.endswith("BIRTH")
        aliases, serial = self._bind(key, device, message) if birth else ({}, None)
        unbound = _unbound_alias(message, aliases)
        if unbound is not None:
            raise Rejected(f"metric alias {unbound} cannot be replayed: alias bindings are the"
                           " edge node's session (its births), which is not stored; only metrics"
                           " sent with their names can be")
        machine = MachineRef(self._tenant, serial or _default_serial(key, device), "sparkplug",
                             key[0], key[1], device)
        return self._samples(_where(key, device), aliases, machine, message, now)

    # -- message types -------------------------------------------------------------------

    def _nbirth(self, key: tuple[str, str], message: Any, outcome: Outcome,
                now: datetime) -> None:
        # A birth is applied whole or not at all: the new state is built and its samples are
        # decoded first; only then (nothing can reject any more) does it replace the old state.
        bd_seq = _bd_seq(message)
        aliases, serial = self._bind(key, "", message)
        node = _Node(bd_seq=bd_seq, seq=int(message.seq) % 256)
        node.aliases[""] = aliases
        if serial is not None:
            node.serials[""] = serial
        machine = self._machine(key, node, "")
        samples = self._samples(_where(key, ""), aliases, machine, message, now)
        if samples:
            node.has_own_data = True
            node.born_at = self._time(message, now)
        self._nodes[key] = node  # commit
        outcome.decoded.samples.extend(samples)
        if node.born_at is not None:
            self._connect(outcome, machine, online=True, time=node.born_at, bd_seq=bd_seq)

    def _ndeath(self, key: tuple[str, str], message: Any, outcome: Outcome,
                now: datetime) -> None:
        node = self._nodes.get(key)
        if node is None:
            return
        bd_seq = _bd_seq(message)
        if node.bd_seq is not None and bd_seq is not None and bd_seq != node.bd_seq:
            logger.info("ignoring NDEATH of %s/%s with bdSeq %s (current birth has %s)",
                        key[0], key[1], bd_seq, node.bd_seq)
            return
        # Not the payload's timestamp: a will is built before the CONNECT, so it is older than
        # the births it ends, and the older word would not take the machines offline. The node
        # died when we heard of it (and not before its last birth, whatever the clocks say).
        time = max(now, node.born_at) if node.born_at else now
        for device in list(node.aliases):
            if device or node.has_own_data:
                self._connect(outcome, self._machine(key, node, device), online=False,
                              time=time, bd_seq=node.bd_seq)
        del self._nodes[key]

    def _device_or_data(self, topic: SparkplugTopic, key: tuple[str, str], message: Any,
                        outcome: Outcome, now: datetime) -> None:
        node = self._nodes.get(key)
        if not message.HasField("seq"):
            raise Rejected("payload has no seq; every Sparkplug message but NDEATH needs one")
        seq = int(message.seq)
        if seq > 255:
            raise Rejected(f"seq {seq} is out of range: Sparkplug seq counts 0..255")
        if node is None:
            self._request_rebirth(key, outcome, now, Gap(
                key[0], key[1], "no_birth", None, seq, None, rebirth_requested=False))
            raise Rejected(f"edge node {key[0]}/{key[1]} has no birth certificate here;"
                           " a rebirth was requested and its data will follow")
        self._check_seq(key, node, seq, outcome, now)
        device = topic.device or ""
        kind = topic.message_type
        if kind == "DBIRTH":
            # As for NBIRTH: build, decode, then commit (seq above counts the message anyway:
            # it arrived, so it is no gap, whether or not it can be stored).
            aliases, serial = self._bind(key, device, message)
            machine = self._machine(key, node, device, serial=serial or "")
            samples = self._samples(_where(key, device), aliases, machine, message,
                                   now)
            born_at = self._time(message, now)
            node.aliases[device] = aliases  # commit
            if serial is None:
                node.serials.pop(device, None)
            else:
                node.serials[device] = serial
            node.born_at = max(node.born_at, born_at) if node.born_at else born_at
            outcome.decoded.samples.extend(samples)
            self._connect(outcome, machine, online=True, time=born_at, bd_seq=node.bd_seq)
        elif kind == "DDEATH":
            self._connect(outcome, self._machine(key, node, device), online=False,
                          time=self._time(message, now, fallback=True), bd_seq=node.bd_seq)
            node.aliases.pop(device, None)
        else:  # NDATA, DDATA
            if device and device not in node.aliases:
                self._request_rebirth(key, outcome, now, None)
                raise Rejected(f"device {device} of {key[0]}/{key[1]} sent DDATA without a"
                               " DBIRTH; a rebirth was requested")
            aliases = node.aliases.get(device, {})
            unbound = _unbound_alias(message, aliases)
            if unbound is not None:
                # The edge node's aliases are not the ones we hold: its birth was lost, or it
                # was rejected. A new birth tells us what the aliases mean.
                self._request_rebirth(key, outcome, now, None)
                raise Rejected(f"metric alias {unbound} is not bound by a birth certificate of"
                               f" {_where(key, device)}; a rebirth was requested")
            outcome.decoded.samples.extend(self._samples(
                _where(key, device), aliases, self._machine(key, node, device), message, now))

    # -- helpers -------------------------------------------------------------------------

    def _check_seq(self, key: tuple[str, str], node: _Node, seq: int, outcome: Outcome,
                   now: datetime) -> None:
        expected = (node.seq + 1) % 256
        node.seq = seq % 256
        if seq != expected:
            missing = (seq - expected) % 256
            self._request_rebirth(key, outcome, now, Gap(
                key[0], key[1], "seq_gap", expected, seq, missing, rebirth_requested=False))

    def _request_rebirth(self, key: tuple[str, str], outcome: Outcome, now: datetime,
                         gap: Gap | None) -> None:
        last = self._last_rebirth.get(key)
        requested = last is None or now - last >= self._debounce
        if requested:
            self._last_rebirth[key] = now
            outcome.commands.append(Command(
                f"spBv1.0/{key[0]}/NCMD/{key[1]}", rebirth_payload(now)))
        if gap is not None:
            outcome.decoded.gaps.append(Gap(
                gap.spb_group, gap.spb_edge_node, gap.cause, gap.expected_seq,
                gap.received_seq, gap.missing, rebirth_requested=requested))

    def _bind(self, key: tuple[str, str], device: str,
              message: Any) -> tuple[dict[int, str], str | None]:
        """The aliases and the serial a birth declares (nothing is stored here)."""
        aliases: dict[int, str] = {}
        serial: str | None = None
        for metric in message.metrics:
            if metric.HasField("alias") and metric.name:
                aliases[int(metric.alias)] = metric.name
            if metric.name.lower() in _SERIAL_METRICS and metric.WhichOneof("value") == (
                    "string_value") and metric.string_value:
                value = str(metric.string_value)
                if _valid_serial(value):
                    serial = value
                else:
                    # Not a reason to lose the device's data: it keeps its namespace serial.
                    logger.warning(
                        "ignoring %s %r (%d characters) of %s: a serial is 1-%d printable"
                        " characters; the machine keeps the serial %r", metric.name,
                        value[:80], len(value), _where(key, device), MAX_SERIAL_CHARS,
                        _default_serial(key, device))
        return aliases, serial

    def _machine(self, key: tuple[str, str], node: _Node, device: str, *,
                 serial: str | None = None) -> MachineRef:
        """The machine of ``device``; ``serial`` ("" for none) overrides the node's record."""
        if serial is None:
            serial = node.serials.get(device, "")
        return MachineRef(self._tenant, serial or _default_serial(key, device), "sparkplug",
                          key[0], key[1], device)

    def _connect(self, outcome: Outcome, machine: MachineRef, *, online: bool,
                 time: datetime, bd_seq: int | None) -> None:
        kind = "online" if online else "offline"
        outcome.decoded.connectivity.append((machine, online, time))
        outcome.decoded.events.append(Event(
            machine, time, kind, None, f"{kind}:{bd_seq}:{int(time.timestamp() * 1000)}",
            orjson.dumps({"type": kind, "source": "sparkplug", "bdSeq": bd_seq})))

    def _time(self, message: Any, now: datetime, *, fallback: bool = False) -> datetime:
        if message.HasField("timestamp"):
            return parse_time(int(message.timestamp), now=now, max_skew=self._max_skew)
        if fallback:
            return now  # a will message is built long before it is sent: its time is ours
        raise Rejected("payload has no timestamp")

    def _samples(self, where: str, aliases: dict[int, str], machine: MachineRef, message: Any,
                 now: datetime) -> list[Samples]:
        by_time: dict[datetime, dict[str, float]] = defaultdict(dict)
        states: dict[datetime, str] = {}
        default_time: datetime | None = None
        for metric in message.metrics:
            name = metric.name or (
                aliases.get(int(metric.alias)) if metric.HasField("alias") else None)
            if not name:
                raise Rejected(f"metric alias {metric.alias} is not bound by a birth"
                               f" certificate of {where}")
            if metric.is_null or name.lower().startswith(_SKIPPED_PREFIXES) or name == "bdSeq":
                continue
            if metric.HasField("timestamp"):
                time = parse_time(int(metric.timestamp), now=now, max_skew=self._max_skew)
            else:
                default_time = default_time or self._time(message, now)
                time = default_time
            canonical = _canonical(name)
            value = _value(metric)
            if canonical == "state":
                if isinstance(value, str) and value.lower() in MACHINE_STATES:
                    states[time] = value.lower()
                    continue
                raise Rejected(f"metric {name!r} must be one of {sorted(MACHINE_STATES)},"
                               f" got {value!r}")
            if value is None or isinstance(value, str):
                continue  # text, dates, bytes, data sets: not numeric samples
            if not math.isfinite(value):
                raise Rejected(f"metric {name!r} is not a finite number ({value})")
            check_metric_name(canonical)
            by_time[time][canonical] = value
        return [
            Samples(machine, time, by_time.get(time, {}), states.get(time))  # type: ignore[arg-type]
            for time in sorted(set(by_time) | set(states))
        ]


def _where(key: tuple[str, str], device: str) -> str:
    return f"{key[0]}/{key[1]}" + (f"/{device}" if device else "")


def _default_serial(key: tuple[str, str], device: str) -> str:
    """The serial of a machine that declares none: its place in the namespace."""
    return _where(key, device)


def _valid_serial(value: str) -> bool:
    """A serial is a key of ``machines`` and is shown to people: short and printable."""
    return len(value) <= MAX_SERIAL_CHARS and value.isprintable() and not value.isspace()


def _unbound_alias(message: Any, aliases: dict[int, str]) -> int | None:
    """The first alias of a nameless metric that ``aliases`` does not bind, if any."""
    for metric in message.metrics:
        if not metric.name and metric.HasField("alias") and int(metric.alias) not in aliases:
            return int(metric.alias)
    return None


def _canonical(name: str) -> str:
    """Map the platform's first-class metrics to their names; keep others as published."""
    leaf = name.rsplit("/", 1)[-1].strip().lower().replace(" ", "_")
    if leaf in ("operating_hours", "state"):
        return leaf
    return name


def _value(metric: Any) -> float | str | None:
    which = metric.WhichOneof("value")
    datatype = int(metric.datatype)
    if which in ("int_value", "long_value"):
        raw = int(getattr(metric, which))
        bits = schema.SIGNED_BITS.get(datatype)
        if bits:
            # Encoders differ: Int8 -5 comes as 251, or sign-extended to 32 bits (Tahu's Java
            # encoder) as 4294967291. The low ``bits`` bits are the value either way.
            raw &= (1 << bits) - 1
            if raw >= 1 << (bits - 1):
                raw -= 1 << bits
        return None if datatype == schema.DATETIME else float(raw)
    if which in ("float_value", "double_value"):
        return float(getattr(metric, which))
    if which == "boolean_value":
        return 1.0 if metric.boolean_value else 0.0
    if which == "string_value":
        return str(metric.string_value)
    return None


def _check_text(message: Any) -> None:
    # proto2 strings are not checked on parse: a name that is not UTF-8 comes back as bytes.
    for metric in message.metrics:
        if isinstance(metric.name, bytes) or (
                metric.WhichOneof("value") == "string_value"
                and isinstance(metric.string_value, bytes)):
            raise Rejected(f"a metric name or text value is not UTF-8: {metric.name!r:.80}")


def _bd_seq(message: Any) -> int | None:
    for metric in message.metrics:
        if metric.name == "bdSeq":
            value = _value(metric)
            # NaN, infinity or a number past int64 names no birth (and cannot go into JSON).
            if isinstance(value, float) and value.is_integer() and abs(value) < 2**63:
                return int(value)
            return None
    return None


def rebirth_payload(now: datetime) -> bytes:
    """NCMD payload asking an edge node to publish its births again."""
    payload = schema.Payload(timestamp=int(now.astimezone(UTC).timestamp() * 1000))
    metric = payload.metrics.add()
    metric.name = REBIRTH_METRIC
    metric.datatype = schema.BOOLEAN
    metric.boolean_value = True
    return bytes(payload.SerializeToString())
