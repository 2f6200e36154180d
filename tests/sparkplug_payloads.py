"""Sparkplug B payloads for tests, encoded with ``ingest.sparkplug_schema.Payload``.

Values are given as the protobuf field they travel in (``long_value=...``), so a test states the
exact wire value; ``signed`` gives the unsigned field value of a negative integer.
"""

from __future__ import annotations

from typing import Any

from ingest import sparkplug_schema as schema


def metric(name: str | None = None, *, alias: int | None = None, datatype: int,
           timestamp: int | None = None, is_null: bool = False, **value: Any) -> dict[str, Any]:
    """One metric: ``value`` is a single ``<kind>_value=...`` keyword (none for a null)."""
    assert len(value) <= 1, value
    fields: dict[str, Any] = {"datatype": datatype, **value}
    if name is not None:
        fields["name"] = name
    if alias is not None:
        fields["alias"] = alias
    if timestamp is not None:
        fields["timestamp"] = timestamp
    if is_null:
        fields["is_null"] = True
    return fields


def bd_seq(number: int) -> dict[str, Any]:
    """The ``bdSeq`` metric of NBIRTH and NDEATH."""
    return metric("bdSeq", datatype=schema.INT64, long_value=number)


def payload(*metrics: dict[str, Any], timestamp: int | None, seq: int | None = None) -> bytes:
    """An encoded ``Payload``."""
    message = schema.Payload()
    if timestamp is not None:
        message.timestamp = timestamp
    if seq is not None:
        message.seq = seq
    for fields in metrics:
        message.metrics.add(**fields)
    return bytes(message.SerializeToString())


def signed(value: int, bits: int) -> int:
    """Two's complement of ``value`` in ``bits`` bits, as the unsigned field carries it."""
    assert -(1 << (bits - 1)) <= value < 1 << (bits - 1)
    return value % (1 << bits)


def decode(raw: bytes) -> Any:
    """A payload as our schema reads it."""
    return schema.Payload.FromString(raw)
